"""``perennial tune``: hyperparameter search with Ray Tune that never looks at the reported stream.

Tuning on the same test stream that is then reported is leakage: the chosen setting has seen
the test data of every experience, and in continual learning the hyperparameters that do well
on the whole stream are exactly what a learner cannot know in advance. Following Chaudhry et
al. (2019, "Efficient Lifelong Learning with A-GEM", the "learning to learn protocol"), the
search runs under one of two protocols:

- ``first-k`` (default, k = 2): trials train and score on the first ``k`` experiences only;
- ``validation``: trials train on ``1 - val_fraction`` of every experience's training data and
  score on the held-out rest (a validation stream); test data is never used.

Then the chosen setting is run on the *full* stream with *fresh* seeds (not the tuning seed),
and those runs, stored like any other, are what the report shows. The report states the
protocol, the search space, every trial and the seeds.

Search spaces: ``--space KEY=SPEC`` with SPEC one of ``loguniform:LO:HI``, ``uniform:LO:HI``,
``int:LO:HI`` (inclusive) or ``choice:A,B,C``; KEY is any config key (``train.lr``,
``strategy.buffer_size``, ``model.hidden``...). The searcher is Optuna's TPE (seeded) or random
search; trials run as Ray tasks, ``workers`` at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from perennial import api
from perennial.config import RunConfig, build_config
from perennial.errors import ConfigError, DistributedError
from perennial.streams import Stream
from perennial.streams.core import Experience

PROTOCOLS = ("first-k", "validation")
KINDS = ("loguniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    values: tuple[Any, ...]  # (lo, hi) or the choices

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(map(str, self.values))}}}"
        return f"{self.key} ~ {self.kind}[{self.values[0]}, {self.values[1]}]"


def _number(text: str) -> int | float:
    v = float(text)
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def parse_space(items: list[str]) -> list[Dimension]:
    """``KEY=loguniform:LO:HI`` etc. -> dimensions; every problem reported at once."""
    dims, problems = [], []
    for item in items:
        key, eq, spec = item.partition("=")
        kind, _, rest = spec.partition(":")
        key, kind = key.strip(), kind.strip()
        try:
            if not eq or not key or kind not in KINDS:
                raise ValueError
            if kind == "choice":
                vals = tuple(_choice(v.strip()) for v in rest.split(",") if v.strip())
                if not vals:
                    raise ValueError
            else:
                lo_s, _, hi_s = rest.partition(":")
                lo, hi = _number(lo_s), _number(hi_s)
                if not lo < hi or (kind == "loguniform" and lo <= 0):
                    raise ValueError
                vals = (int(lo), int(hi)) if kind == "int" else (float(lo), float(hi))
            dims.append(Dimension(key, kind, vals))
        except ValueError:
            problems.append(
                (
                    "--space",
                    f"{item!r} is not KEY=loguniform:LO:HI, uniform:LO:HI, int:LO:HI or choice:A,B,... "
                    "(e.g. train.lr=loguniform:1e-4:1e-2, strategy.buffer_size=choice:100,200,500)",
                )
            )
    if not items:
        problems.append(("--space", "give at least one dimension, e.g. --space train.lr=loguniform:1e-4:1e-2"))
    keys = [d.key for d in dims]
    problems += [("--space", f"{k!r} is given twice") for k in sorted({k for k in keys if keys.count(k) > 1})]
    if problems:
        raise ConfigError(problems)
    return dims


def _choice(text: str) -> Any:
    try:
        return _number(text)
    except ValueError:
        return text


def overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in params.items()]


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> RunConfig:
    return build_config(base, overrides(params))


def check_space(base: dict[str, Any], dims: list[Dimension]) -> None:
    """Every dimension names a real config key with valid values at its ends (before any trial)."""
    problems = []
    for d in dims:
        for v in d.values if d.kind == "choice" else d.values[:2]:
            try:
                trial_config(base, {d.key: v})
            except ConfigError as e:
                problems += [(f"--space {d.key}={v}", f"{f}: {m}") for f, m in e.problems]
    if problems:
        raise ConfigError(problems)


def tuning_stream(stream: Stream, protocol: str, k: int, val_fraction: float, seed: int) -> Stream:
    """The stream trials see: the first ``k`` experiences, or every experience with a held-out
    validation split (from its training data) in place of its test split."""
    if protocol == "first-k":
        return replace(stream, experiences=stream.experiences[:k])
    exps: list[Experience] = []
    for e in stream.experiences:
        n = len(e.train)
        g = torch.Generator().manual_seed(seed * 1009 + e.index)
        perm = torch.randperm(n, generator=g)
        n_val = max(1, round(n * val_fraction))
        exps.append(replace(e, train=e.train.subset(perm[n_val:]), test=e.train.subset(perm[:n_val])))
    return replace(stream, experiences=tuple(exps))


def score_trial(
    base: dict[str, Any], params: dict[str, Any], protocol: str, k: int, val_fraction: float
) -> dict[str, float]:
    """Train one trial under the protocol; its metrics (never touches the test data of the
    reported stream under ``validation``; only the first ``k`` experiences under ``first-k``)."""
    cfg = trial_config(base, params)
    stream, strategy, model = api.build(cfg)
    stream = tuning_stream(stream, protocol, k, val_fraction, cfg.seed)
    result = api._fit(cfg, model, stream, strategy, [], None)
    m = api._metrics(result, stream.kind)
    return {key: float(v) for key, v in m.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _tune_trainable(
    params: dict[str, Any], *, base: dict[str, Any], protocol: str, k: int, val: float, threads: int
) -> None:
    """One Ray Tune trial: ``params`` are the sampled values of the search space only."""
    from ray import tune

    torch.set_num_threads(max(1, threads))
    tune.report(score_trial(base, dict(params), protocol, k, val))


@dataclass
class TuneResult:
    protocol: str
    protocol_text: str
    space: list[str]
    metric: str
    mode: str
    trials: list[dict[str, Any]]
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    final: Any = None  # api.CompareResult of the final runs
    final_seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "protocol_text": self.protocol_text,
            "space": self.space,
            "metric": self.metric,
            "mode": self.mode,
            "trials": self.trials,
            "best_params": self.best_params,
            "best_config": self.best_config,
            "final_seeds": self.final_seeds,
            "final": None if self.final is None else self.final.to_dict(),
        }


def describe_protocol(protocol: str, k: int, val_fraction: float, n_exp: int, seeds: list[int], tune_seed: int) -> str:
    where = (
        f"trials trained and scored on the first {k} of {n_exp} experiences only (Chaudhry et al. 2019)"
        if protocol == "first-k"
        else f"trials trained on {1 - val_fraction:.0%} of each experience's training data and scored on the "
        f"held-out {val_fraction:.0%} (a validation stream; test data unused)"
    )
    return (
        f"protocol {protocol}: {where}, seed {tune_seed}; the chosen setting was then run on the full stream "
        f"of {n_exp} experiences with fresh seeds {seeds}; those runs are the reported result"
    )


def tune(
    base: RunConfig,
    dims: list[Dimension],
    *,
    trials: int = 16,
    workers: int = 2,
    protocol: str = "first-k",
    k: int = 2,
    val_fraction: float = 0.1,
    metric: str = "acc",
    mode: str = "max",
    searcher: str = "optuna",
    final_seeds: int = 3,
    cpus_per_run: float = 1.0,
    address: str | None = None,
    storage: Path,
    store: Any = None,
    on_final: Any = None,
) -> TuneResult:
    """Search ``dims`` under ``protocol``, then run the best setting on the full stream with
    ``final_seeds`` fresh seeds (into ``store``)."""
    problems = []
    if protocol not in PROTOCOLS:
        problems.append(("--protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}"))
    if trials < 1:
        problems.append(("--trials", f"must be at least 1, got {trials}"))
    if mode not in ("max", "min"):
        problems.append(("--mode", f"{mode!r} is not max or min"))
    if searcher not in ("optuna", "random"):
        problems.append(("--searcher", f"{searcher!r} is not optuna or random"))
    if not 0 < val_fraction < 1:
        problems.append(("--val-fraction", f"must be in (0, 1), got {val_fraction}"))
    base_dict = base.to_dict()
    stream = api.build_stream(base)
    n_exp = len(stream)
    if protocol == "first-k" and not 1 <= k < n_exp:
        problems.append(("--k", f"must be in 1..{n_exp - 1} (the stream has {n_exp} experiences), got {k}"))
    if problems:
        raise ConfigError(problems)
    check_space(base_dict, dims)
    from perennial.scale.ray_runs import RayPool

    pool = RayPool(workers, address=address, cpus_per_run=cpus_per_run)  # starts (or joins) Ray
    try:
        from ray import tune as rt

        space: dict[str, Any] = {}
        for d in dims:
            lo_hi = d.values
            space[d.key] = {
                "loguniform": lambda v=lo_hi: rt.loguniform(v[0], v[1]),
                "uniform": lambda v=lo_hi: rt.uniform(v[0], v[1]),
                "int": lambda v=lo_hi: rt.randint(v[0], v[1] + 1),
                "choice": lambda v=lo_hi: rt.choice(list(v)),
            }[d.kind]()
        search_alg = None
        if searcher == "optuna":
            try:
                from ray.tune.search.optuna import OptunaSearch
            except ImportError:
                raise DistributedError("--searcher optuna needs optuna; pip install 'perennial[tune]'") from None
            search_alg = OptunaSearch(metric=metric, mode=mode, seed=base.seed)
        fixed = {
            "base": base_dict,
            "protocol": protocol,
            "k": k,
            "val": val_fraction,
            "threads": max(1, int(cpus_per_run)),
        }
        trainable = rt.with_resources(rt.with_parameters(_tune_trainable, **fixed), {"cpu": cpus_per_run})
        tuner = rt.Tuner(
            trainable,
            param_space=space,
            tune_config=rt.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=trials,
                search_alg=search_alg,
                max_concurrent_trials=workers,
                trial_dirname_creator=lambda t: f"trial-{t.trial_id}",
            ),
            run_config=rt.RunConfig(storage_path=str(Path(storage).resolve()), name="tune", verbose=0),
        )
        grid = tuner.fit()
        rows = []
        for r in grid:
            if r.error is not None or not r.metrics or metric not in r.metrics:
                rows.append({"params": _params(r.config, dims), "error": str(r.error or f"no {metric!r} reported")})
                continue
            rows.append({"params": _params(r.config, dims), metric: r.metrics[metric]})
        scored = [t for t in rows if metric in t]
        if not scored:
            raise DistributedError(f"no trial finished; first error: {rows[0].get('error') if rows else 'none'}")
        best = (max if mode == "max" else min)(scored, key=lambda t: t[metric])
        best_cfg = trial_config(base_dict, best["params"])
        seeds = [base.seed + 1 + i for i in range(final_seeds)]  # fresh: never the tuning seed
        label = f"{base.strategy.name} (tuned)"
        final = api.compare(
            lambda _name, s: best_cfg.model_copy(update={"seed": s}),
            [label],
            seeds,
            store=store,
            on_result=on_final,
            pool=pool,
        )
        return TuneResult(
            protocol=protocol,
            protocol_text=describe_protocol(protocol, k, val_fraction, n_exp, seeds, base.seed),
            space=[d.describe() for d in dims],
            metric=metric,
            mode=mode,
            trials=rows,
            best_params=best["params"],
            best_config=best_cfg.to_dict(),
            final=final,
            final_seeds=seeds,
        )
    finally:
        pool.close()


def _params(config: dict[str, Any], dims: list[Dimension]) -> dict[str, Any]:
    out = {}
    for d in dims:
        v = config.get(d.key)
        out[d.key] = int(v) if d.kind == "int" and v is not None else v
    return out
