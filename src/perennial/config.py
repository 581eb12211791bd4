"""Run configuration: pydantic models, layered defaults, ``--set`` overrides, one error for all problems.

A config is assembled in layers, each overriding the one before::

    library defaults  <  benchmark defaults  <  protocol  <  config file (TOML/JSON)  <  --set key=value  <  CLI flags

(a protocol is a published setting, ``--protocol NAME``, see :mod:`perennial.protocols`)

and validated as a whole: unknown keys, bad values, unknown names (with suggestions) and
invalid strategy/model parameters are all reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perennial.errors import ConfigError
from perennial.models import MODELS
from perennial.strategies import make_strategy
from perennial.strategies.registry import pydantic_problems
from perennial.streams import BENCHMARKS
from perennial.train import ContinualEvalSettings, Timescales, TrainSettings
from perennial.train.settings import Phase
from perennial.validation import class_count_problems, merge_problems, numeric_problems, training_problems

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class BenchmarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="split-mnist", description="a registered benchmark (perennial list benchmarks)")
    scenario: str | None = Field(default=None, description="class, task or domain (default: the benchmark's)")
    classes_per_exp: int | list[int] | None = Field(
        default=None, description="classes per experience, or a list of sizes (e.g. [5,1,1,1,1,1])"
    )
    first_classes: int | None = Field(
        default=None,
        ge=1,
        description="a bigger first experience with this many classes; the rest come classes_per_exp (default 1) at a time",
    )
    class_order_seed: int | None = Field(default=None, ge=0, description="shuffle the class order with this seed")
    class_order: list[int] | list[str] | str | None = Field(
        default=None,
        description="the class order, a permutation of the classes, e.g. [3,8,1,7,0,6,2,5,4,9] (instead of "
        "class_order_seed); images: also class names, or a file with one class name per line",
    )
    n_experiences: int | None = Field(default=None, ge=1)
    path: str | None = Field(
        default=None,
        description="data folder (npz-dir: one .npz file per experience; text-domains: one sub-folder per domain)",
    )
    # image benchmarks (image-folder and the named protocols) only:
    test_fraction: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="images: test share of each class without train/ and test/ (0.2)"
    )
    image_size: int | None = Field(default=None, ge=1, description="images: resize every image to NxN when decoding")
    storage: str | None = Field(
        default=None, description="images: auto (default), memory (uint8 tensor) or disk (read per batch)"
    )
    cache_dir: str | None = Field(default=None, description="images: decoded cache folder (default CACHE/images)")
    # Hugging Face datasets (benchmark hf) only:
    dataset: str | None = Field(default=None, description="hf: a save_to_disk folder, Parquet file(s) or a hub id")
    input_column: str | None = Field(default=None, description="hf: column of inputs (default image/img/x/features)")
    label_column: str | None = Field(default=None, description="hf: column of integer labels (default label)")
    domain_column: str | None = Field(
        default=None, description="hf: one experience per value of this column (domain-incremental)"
    )
    # text benchmarks (text-domains) only:
    domains: list[str] | None = Field(
        default=None, description="text: domains in training order (default prose, python, c; or every sub-folder)"
    )
    context: int | None = Field(default=None, ge=2, description="text: tokens per training window (default 64)")
    max_bytes: int | None = Field(default=None, ge=1, description="text: training text per domain (default 400000)")
    val_bytes: int | None = Field(default=None, ge=1, description="text: validation text per domain (default 16384)")
    tokenizer: str | None = Field(default=None, description="text: 'byte' (default) or 'tokenizers:PATH.json'")
    # stream shapes for online learning (docs/online.md):
    blur: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="blurry boundaries: share of each experience's training samples moved to its neighbours",
    )
    drift_window: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="gradual drift: share of each experience mixed with its neighbour, linearly, around each boundary",
    )


class ModelConfig(BaseModel):
    """``name`` plus the model's own parameters (e.g. ``hidden`` for mlp)."""

    model_config = ConfigDict(extra="allow")
    name: str = "mlp"
    init: str | None = Field(
        default=None,
        description="start from these weights (a model file a run saved: STORE/models/RUN_ID.pt) instead of a random init",
    )

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StrategyConfig(BaseModel):
    """``name`` (``"replay"`` or ``"replay+ewc"``) plus the strategy's parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = "naive"

    def params(self) -> dict[str, Any]:
        return flatten(dict(self.model_extra or {}))


class CheckpointConfig(BaseModel):
    """When to save checkpoints (runs in a store only). They never change results."""

    model_config = ConfigDict(extra="forbid")
    every: int | None = Field(
        default=None, ge=1, description="save every N optimizer steps (None: only at experience boundaries)"
    )
    keep: int = Field(default=3, ge=1, description="keep the newest K checkpoints of a run")
    keep_after_finish: bool = Field(
        default=False, description="keep checkpoints once the run finished (default: delete them)"
    )


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch intra-op CPU threads (None: torch's default, one per core); a machine setting, "
        "not part of the results' fingerprint",
    )
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    eval: ContinualEvalSettings = Field(default_factory=ContinualEvalSettings)
    timescales: Timescales = Field(default_factory=Timescales)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines the results (checkpoint settings excluded)."""
        import hashlib

        d = self.to_dict()
        d.pop("checkpoint", None)
        d.pop("threads", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


TOP_KEYS = tuple(RunConfig.model_fields)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, lists, true/false/null), else a string."""
    low = text.strip()
    if low in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[low]
    try:
        return json.loads(low)
    except (json.JSONDecodeError, RecursionError):
        return text


def parse_overrides(items: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``["train.lr=0.01", "strategy.buffer_size=200"]`` -> nested dict, plus problems."""
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not p for p in key.split(".")):
            problems.append(("--set", f"{item!r} is not KEY=VALUE (e.g. strategy.buffer_size=500)"))
            continue
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                problems.append(("--set", f"{key!r} conflicts with an earlier --set of {p!r}"))
                break
            node = nxt
        else:
            from perennial.files import MAX_CONFIG_DEPTH, nesting_depth

            node[parts[-1]] = parsed = parse_value(value)
            if nesting_depth(parsed) > MAX_CONFIG_DEPTH:
                problems.append(("--set", f"the value of {key!r} is nested deeper than {MAX_CONFIG_DEPTH} levels"))
                node[parts[-1]] = None
    return out, problems


def load_config_file(path: str | Path) -> dict[str, Any]:
    from perennial.files import config_text

    p = Path(path)
    text = config_text(p)  # a regular UTF-8 text file of sane size, never a FIFO or device
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except RecursionError:
        raise ConfigError([("--config", f"{p} is nested too deeply to be a config")]) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError([("--config", f"{p} is not valid {kind}: {e}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("--config", f"{p} must hold a table/object at the top level")])
    from perennial.files import MAX_CONFIG_DEPTH, nesting_depth

    if nesting_depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError([("--config", f"{p} is nested deeper than {MAX_CONFIG_DEPTH} levels; a run config has 4")])
    return data


def build_config(
    file: str | Path | dict[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    **flags: Any,
) -> RunConfig:
    """Assemble and validate a run config from its layers (see module docstring).

    ``flags`` are the CLI's direct options: ``benchmark``, ``scenario``, ``strategy``,
    ``seed``, ``checkpoint_every``, ``eval_every``, ``eval_budget``, ``model``, ``text_dir``,
    ``protocol`` (None = not given).
    """
    problems: list[tuple[str, str]] = []
    layer_file = (load_config_file(file) if isinstance(file, (str, Path)) else dict(file)) if file else {}
    if isinstance(overrides, Mapping):
        layer_set: dict[str, Any] = dict(overrides)
    else:
        layer_set, bad = parse_overrides(overrides)
        problems += bad
    layer_flags: dict[str, Any] = {}
    if flags.get("benchmark") is not None:
        layer_flags.setdefault("benchmark", {})["name"] = flags["benchmark"]
    if flags.get("text_dir") is not None:  # --text-dir DIR: your own text domains, one sub-folder each
        layer_flags.setdefault("benchmark", {}).setdefault("name", "text-domains")
        layer_flags["benchmark"]["path"] = str(flags["text_dir"])
    if flags.get("model") is not None:
        layer_flags.setdefault("model", {})["name"] = flags["model"]
    if flags.get("scenario") is not None:
        layer_flags.setdefault("benchmark", {})["scenario"] = flags["scenario"]
    if flags.get("strategy") is not None:
        layer_flags.setdefault("strategy", {})["name"] = flags["strategy"]
    if flags.get("seed") is not None:
        layer_flags["seed"] = flags["seed"]
    if flags.get("threads") is not None:
        layer_flags["threads"] = flags["threads"]
    if flags.get("checkpoint_every") is not None:
        layer_flags.setdefault("checkpoint", {})["every"] = flags["checkpoint_every"]
    if flags.get("eval_every") is not None:
        layer_flags.setdefault("eval", {})["every"] = flags["eval_every"]
    if flags.get("eval_budget") is not None:
        layer_flags.setdefault("eval", {})["budget"] = flags["eval_budget"]

    for layer in (layer_file, layer_set):
        for k, v in layer.items():
            if k not in TOP_KEYS:
                import difflib

                close = _sections_with_key(k) or difflib.get_close_matches(k, TOP_KEYS, n=1)
                hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
                problems.append((k, f"unknown key; {hint}allowed: {', '.join(TOP_KEYS)}"))
            elif k in SECTIONS and not isinstance(v, Mapping):
                if k in ("benchmark", "strategy") and isinstance(v, str):
                    layer[k] = {"name": v}  # "strategy = 'replay'" shorthand
                else:
                    problems.append((k, f"must be a table of settings, got {v!r}"))
    layer_file = {k: v for k, v in layer_file.items() if k in TOP_KEYS}
    layer_set = {k: v for k, v in layer_set.items() if k in TOP_KEYS}

    merged: dict[str, Any] = {}
    for layer in (layer_file, layer_set, layer_flags):
        merged = deep_merge(merged, layer)
    if flags.get("protocol") is not None:
        merged, bad = _with_protocol(flags["protocol"], merged)
        problems += bad
    bench_name = (
        merged.get("benchmark", {}).get("name", BenchmarkConfig().name)
        if isinstance(merged.get("benchmark"), Mapping)
        else None
    )
    if isinstance(bench_name, str) and bench_name in BENCHMARKS:
        base = copy.deepcopy(BENCHMARKS.get(bench_name).defaults)
        # a model chosen by name elsewhere does not inherit the benchmark's model parameters
        chosen_model = merged.get("model", {}).get("name") if isinstance(merged.get("model"), Mapping) else None
        if chosen_model and chosen_model != base.get("model", {}).get("name"):
            base.pop("model", None)
        merged = deep_merge(base, merged)

    # Validate section by section so that every problem is reported, not just the first section's.
    sections: dict[str, BaseModel] = {}
    for key, cls in SECTIONS.items():
        raw = merged.get(key, {})
        numeric = numeric_problems(cls, raw, key)  # booleans as numbers, inf, integers too big (every field)
        try:
            validated = cls.model_validate(raw)
        except ValidationError as e:
            problems += merge_problems(numeric, pydantic_problems(e, key, cls))
        else:
            problems += numeric
            if not numeric:
                sections[key] = validated
    top_raw = {k: merged[k] for k in TOP_KEYS if k not in SECTIONS and k in merged}  # seed, threads
    numeric = numeric_problems(RunConfig, top_raw)
    try:
        top = RunConfig.model_validate(top_raw)
        seed, threads = top.seed, top.threads
    except ValidationError as e:
        problems += merge_problems(numeric, pydantic_problems(e, ""))
        seed, threads = 0, None
    else:
        problems += numeric
    problems += semantic_problems(sections, merged, {f for f, _ in problems})
    user_train = deep_merge(layer_file, layer_set).get("train")
    problems += training_problems(sections.get("train"), sections.get("timescales"), user_train)
    if problems:
        raise ConfigError(problems)
    cfg = resolved(RunConfig(seed=seed, threads=threads, **sections))  # type: ignore[arg-type]
    check_memory(cfg)
    return cfg


def check_memory(cfg: RunConfig, input_numel: int | None = None, n_out: int | None = None) -> None:
    """Refuse a run whose model, buffer, batches or data cannot fit in this machine's memory
    (an estimate from the config, made before anything is allocated; see perennial.resources).

    Without ``input_numel``/``n_out`` the benchmark's registry entry gives them (when known)."""
    from perennial.resources import check_fits, memory_items

    bench = BENCHMARKS.get(cfg.benchmark.name) if cfg.benchmark.name in BENCHMARKS else None
    n_exp = cfg.benchmark.n_experiences or 5
    data = bench.experience_bytes * n_exp if bench is not None and input_numel is None else 0
    numel = input_numel or (bench.input_numel if bench is not None else None)
    check_fits(
        memory_items(cfg, input_numel=numel, n_out=n_out or (bench and bench.n_classes) or 10, dataset_bytes=data)
    )


def _sections_with_key(key: str) -> list[str]:
    """``buffer_size`` -> ``["strategy.buffer_size"]``: where a key given at the top level belongs."""
    from perennial.strategies import STRATEGIES

    out = [f"{sec}.{key}" for sec, cls in SECTIONS.items() if key in cls.model_fields and key != "name"]
    if any(key in cls.model_fields for _, cls in STRATEGIES.items()):
        out.append(f"strategy.{key}")
    if any(key in spec.params.model_fields for _, spec in MODELS.items()):
        out.append(f"model.{key}")
    return list(dict.fromkeys(out))


def _with_protocol(name: str, merged: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``merged`` on top of protocol ``name``'s layer (it sits above the benchmark defaults)."""
    from perennial.protocols import PROTOCOLS

    try:
        proto = PROTOCOLS.get(name, field="--protocol")
    except ConfigError as e:
        return merged, list(e.problems)
    strategy = merged.get("strategy", {}) if isinstance(merged.get("strategy"), Mapping) else {}
    spec = strategy.get("name", StrategyConfig().name)
    return deep_merge(proto.layer(spec if isinstance(spec, str) else None), merged), []


def resolved(cfg: RunConfig) -> RunConfig:
    """``cfg`` with defaults that depend on other fields filled in (the benchmark's scenario)."""
    if (
        cfg.benchmark.scenario is None
        and cfg.benchmark.name in BENCHMARKS
        and BENCHMARKS.get(cfg.benchmark.name).default_scenario
    ):
        bench = cfg.benchmark.model_copy(update={"scenario": BENCHMARKS.get(cfg.benchmark.name).default_scenario})
        return cfg.model_copy(update={"benchmark": bench})
    return cfg


SECTIONS: dict[str, type[BaseModel]] = {
    "benchmark": BenchmarkConfig,
    "model": ModelConfig,
    "strategy": StrategyConfig,
    "train": TrainSettings,
    "checkpoint": CheckpointConfig,
    "eval": ContinualEvalSettings,
    "timescales": Timescales,
}


def semantic_problems(
    sections: Mapping[str, BaseModel], raw: Mapping[str, Any], already: set[str]
) -> list[tuple[str, str]]:
    """Checks across fields and against the registries (names, parameters, scenarios).

    Sections that failed validation are missing from ``sections`` and skipped; ``already``
    holds fields with a problem reported, so none is reported twice.
    """
    from perennial.strategies import STRATEGIES

    problems: list[tuple[str, str]] = []
    b = sections.get("benchmark")
    scenario: str | None = None
    kind: str | None = None  # the benchmark's stream kind: "classification" or "lm"
    if isinstance(b, BenchmarkConfig):
        if b.name not in BENCHMARKS:
            try:
                BENCHMARKS.get(b.name, field="benchmark.name")
            except ConfigError as e:
                problems += e.problems
        else:
            bench = BENCHMARKS.get(b.name)
            scenario = b.scenario or bench.default_scenario or None
            kind = bench.kind
            if b.first_classes is not None and isinstance(b.classes_per_exp, list):
                problems.append(
                    (
                        "benchmark.first_classes",
                        f"give either a list of sizes (classes_per_exp={b.classes_per_exp}) or first_classes, not both",
                    )
                )
            if b.scenario is not None and b.scenario not in bench.scenarios:
                problems.append(
                    ("benchmark.scenario", f"{b.name} supports {', '.join(bench.scenarios)}; got {b.scenario!r}")
                )
                scenario = None
    m = sections.get("model")
    if isinstance(m, ModelConfig):
        if m.name not in MODELS:
            try:
                MODELS.get(m.name, field="model.name")
            except ConfigError as e:
                problems += e.problems
        else:
            numeric = numeric_problems(MODELS.get(m.name).params, m.params(), "model")
            try:
                MODELS.get(m.name).params(**m.params())
            except ValidationError as e:
                problems += merge_problems(numeric, pydantic_problems(e, "model", MODELS.get(m.name).params))
            else:
                problems += numeric
            mkind = MODELS.get(m.name).kind
            if kind is not None and mkind != kind:
                fits = ", ".join(n for n, spec in MODELS.items() if spec.kind == kind)
                problems.append(
                    (
                        "model.name",
                        f"{m.name} is a {_KIND_WORDS[mkind]} model but {b.name if b else '?'} is a "
                        f"{_KIND_WORDS[kind]} benchmark; use {fits}",
                    )
                )
        if m.init is not None:
            from perennial.files import file_kind_problem

            init_problem = file_kind_problem(m.init)  # stat only: a FIFO or device is never opened
            if init_problem:
                problems.append(("model.init", f"weights file: {init_problem} (runs save STORE/models/RUN_ID.pt)"))
    st = sections.get("strategy")
    if isinstance(st, StrategyConfig):
        try:
            strategy = make_strategy(st.name, st.params())
        except ConfigError as e:
            problems += e.problems
        else:
            if scenario is not None:
                unsupported = [p.name for p in strategy.parts() if scenario not in p.scenarios]
                if unsupported:
                    supports = "; ".join(
                        f"{p.name} supports {', '.join(sorted(p.scenarios))}"
                        for p in strategy.parts()
                        if scenario not in p.scenarios
                    )
                    problems.append(
                        (
                            "strategy.name",
                            f"{', '.join(unsupported)} does not support the {scenario} scenario ({supports}); "
                            "choose a supported one with --scenario",
                        )
                    )
            if kind is not None:
                unfit = [p.name for p in strategy.parts() if kind not in p.kinds]
                if unfit:
                    fits = ", ".join(n for n, c in STRATEGIES.items() if kind in c.kinds)
                    problems.append(
                        (
                            "strategy.name",
                            f"{', '.join(unfit)} does not support {_KIND_WORDS[kind]} benchmarks; use {fits}",
                        )
                    )
            problems += _phase_problems(sections.get("train"), strategy)
    if isinstance(b, BenchmarkConfig) and b.name in BENCHMARKS and BENCHMARKS.get(b.name).kind == "classification":
        problems += class_count_problems(b, BENCHMARKS.get(b.name).n_classes, b.name)
    lr = raw.get("train", {}).get("lr", 1.0) if isinstance(raw.get("train"), Mapping) else 1.0
    if "train.lr" not in already and isinstance(lr, (int, float)) and lr <= 0:
        problems.append(("train.lr", f"must be > 0 for a run, got {lr} (a zero learning rate trains nothing)"))
    return problems


_KIND_WORDS = {"classification": "classification", "lm": "language-modelling"}


def _phase_problems(train: BaseModel | None, strategy: Any) -> list[tuple[str, str]]:
    """A phase's replay_ratio needs a strategy that reads it: replay in ratio mode."""
    if not isinstance(train, TrainSettings):
        return []
    mixing = any(getattr(p, "ratio", None) is not None for p in strategy.parts())
    return [
        (
            f"train.phases.{i}.replay_ratio",
            "needs strategy replay in ratio mode; add --strategy replay --set strategy.ratio=0 (the default share)",
        )
        for i, p in enumerate(train.phases)
        if p.replay_ratio is not None and not mixing
    ]


def _type_name(ann: Any) -> str:
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin is dict:
        return f"dict[{', '.join(_type_name(a) for a in args)}]"
    if args:
        inner = [_type_name(a) for a in args]
        if origin in (list, tuple):
            return f"list[{', '.join(inner)}]"
        return " \\| ".join(inner)
    return "None" if ann is type(None) else getattr(ann, "__name__", str(ann))


def _limits(metadata: list[Any]) -> str:
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{sym} {getattr(m, k)}" for m in metadata for k, sym in ops.items() if getattr(m, k, None) is not None]
    return ", ".join(parts)


def _field_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, f in model.model_fields.items():
        if name == "name" and prefix in ("model", "strategy"):
            continue
        default = f.get_default(call_default_factory=True)
        limits = _limits(f.metadata)
        desc = "; ".join(x for x in (f.description or "", limits) if x)
        rows.append(f"| `{prefix}.{name}` | {_type_name(f.annotation)} | `{default!r}` | {desc} |")
    return rows


def reference_markdown() -> str:
    """Tables of every config key, generated from the models (kept in docs/configuration.md)."""
    from perennial.strategies import STRATEGIES

    head = ["| key | type | default | meaning |", "|---|---|---|---|"]
    out = [
        "### Top level",
        "",
        *head,
        "| `seed` | `int` | `0` | seed of model init, data order, buffers (>= 0) |",
        *[r.replace("`.threads`", "`threads`") for r in _field_rows(RunConfig, "") if "`.threads`" in r],
        "",
    ]
    out += ["### `benchmark`", "", *head, *_field_rows(BenchmarkConfig, "benchmark"), ""]
    out += ["### `train`", "", *head, *_field_rows(TrainSettings, "train"), ""]
    out += [
        "### `train.phases[i]` (one table per experience; unset fields inherit `train`)",
        "",
        *head,
        *_field_rows(Phase, "train.phases[i]"),
        "",
    ]
    out += ["### `checkpoint`", "", *head, *_field_rows(CheckpointConfig, "checkpoint"), ""]
    out += ["### `eval` (continual evaluation)", "", *head, *_field_rows(ContinualEvalSettings, "eval"), ""]
    out += ["### `timescales`", "", *head, *_field_rows(Timescales, "timescales"), ""]
    out += ["### `model` (by `model.name`)", ""]
    out += [*head, *[r for r in _field_rows(ModelConfig, "model")], ""]
    for name, spec in MODELS.items():
        out += [f"`{name}`: {spec.description}", "", *head, *_field_rows(spec.params, "model"), ""]
    out += ["### `strategy` (by `strategy.name`)", ""]
    for name, cls in STRATEGIES.items():
        rows = _field_rows(cls, "strategy")
        out += [f"`{name}`: {cls.summary}", ""]
        out += [*head, *rows, ""] if rows else ["(no parameters)", ""]
    return "\n".join(out).rstrip() + "\n"
