"""``perennial.experiment()``: a run from Python that is a run like the CLI's.

It takes names (``"split-mnist"``, ``"replay"``, ``"mlp"``, ``"mymod:make_cnn"``) or your own
objects (a :class:`~perennial.streams.Stream`, a :class:`~perennial.strategies.Strategy`, any
``nn.Module``), builds the config through the same layers as ``perennial run`` (library
defaults < benchmark defaults < ``config`` < ``overrides``), so a named benchmark trains with
the CLI's defaults, records the run in the store (``perennial runs/show/report/resume`` see
it) and returns the same summary dict as ``perennial run --json``.

Objects that are not registered names are recorded as ``python:NAME``: their run can be
shown and reported from the CLI, but only resumed from Python with the same objects
(``experiment(..., run_id=RUN_ID, resume=True)``); ``perennial resume`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from perennial.registry import PYTHON_PREFIX


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 2}`` -> ``{"train": {"epochs": 2}}`` (nested tables pass through)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = dict(value) if isinstance(value, Mapping) else value
    return out


def _strategy_spec(strategy: Any) -> tuple[str, dict[str, Any]]:
    """A strategy object as (spec, params) that ``make_strategy`` rebuilds: registered classes
    by their name, importable ones as ``module:Class``, others as ``python:Class`` (this process)."""
    from perennial.strategies import STRATEGIES, Strategy

    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a name or a perennial Strategy, got {type(strategy).__name__}")
    names, params = [], {}
    parts = list(strategy.parts())
    for part in parts:
        cls = type(part)
        if part.name and part.name in STRATEGIES and STRATEGIES.get(part.name) is cls:
            name = part.name
        elif cls.__module__ not in ("__main__", "builtins") and "<locals>" not in cls.__qualname__:
            name = f"{cls.__module__}:{cls.__qualname__}"
        else:
            name = f"{PYTHON_PREFIX}{cls.__qualname__}"
            STRATEGIES.put(name, cls)
        names.append(name)
        dumped = part.model_dump(mode="json", exclude_defaults=True)
        params.update({f"{name}.{k}" if len(parts) > 1 else k: v for k, v in dumped.items()})
    return "+".join(names), params


def experiment(
    benchmark: Any = None,
    strategy: Any = None,
    model: Any = None,
    *,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    config: str | Path | Mapping[str, Any] | None = None,
    seed: int | None = None,
    scenario: str | None = None,
    store: Any = "perennial-runs",
    run_id: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Train one run like ``perennial run`` and return its ``--json`` summary.

    ``benchmark``, ``strategy``, ``model``: a registered name, a ``package.module:Name``
    plug-in, or your object (``Stream``, ``Strategy``, ``nn.Module``); None: the CLI's
    default. ``overrides``: the ``--set`` keys, as ``{"train.epochs": 2}`` or
    ``["train.epochs=2"]``. ``store``: a path or a ``RunStore`` (None: train without recording).
    ``resume=True`` continues ``run_id`` from its checkpoint (give the same objects again).
    """
    from perennial import api
    from perennial.config import build_config
    from perennial.models import MODELS
    from perennial.store import RunStore
    from perennial.streams import BENCHMARKS, Stream
    from perennial.streams.benchmarks import Benchmark

    if isinstance(store, (str, Path)):
        store = RunStore(Path(store))
    bench_name = benchmark
    if isinstance(benchmark, Stream):
        stream = benchmark
        bench_name = f"{PYTHON_PREFIX}{stream.name}"
        BENCHMARKS.put(
            bench_name,
            Benchmark(
                bench_name,
                f"your stream {stream.name!r}",
                (stream.scenario,),
                stream.scenario,
                lambda **_: stream,
                kind=stream.kind,
            ),
        )
    elif benchmark is not None and not isinstance(benchmark, str):
        raise TypeError(f"benchmark must be a name or a perennial Stream, got {type(benchmark).__name__}")
    model_name = model
    if isinstance(model, nn.Module):
        module = model
        model_name = f"{PYTHON_PREFIX}{type(model).__qualname__}"
        MODELS.put(model_name, _object_spec(model_name, module))
    elif model is not None and not isinstance(model, str):
        raise TypeError(
            f"model must be a name, a 'package.module:factory' or an nn.Module instance, got {type(model).__name__}"
        )
    strategy_name, strategy_params = strategy, {}
    if strategy is not None and not isinstance(strategy, str):
        strategy_name, strategy_params = _strategy_spec(strategy)
    from perennial.config import deep_merge, parse_overrides
    from perennial.errors import ConfigError

    if isinstance(overrides, Mapping):
        over = _nest(overrides)
    else:
        over, problems = parse_overrides(list(overrides))
        if problems:
            raise ConfigError(problems)
    if strategy_params:
        over = deep_merge(over, {"strategy": strategy_params})
    if resume:
        if store is None or run_id is None:
            raise ValueError("resume=True needs the store and the run_id of the run to continue")
        return api.resume(store, run_id, progress=progress).summary()
    cfg = build_config(
        dict(config) if isinstance(config, Mapping) else config,
        over,
        benchmark=bench_name,
        strategy=strategy_name,
        model=model_name,
        seed=seed,
        scenario=scenario,
    )
    rec = api.run(cfg, store=store, run_id=run_id, progress=progress, overwrite=overwrite)
    return rec.summary()


def _object_spec(name: str, module: nn.Module) -> Any:
    """A model spec whose builder hands over ``module`` itself (trained in place)."""
    from pydantic import BaseModel, ConfigDict

    from perennial.models import ModelSpec
    from perennial.models.user import as_model

    class NoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def build(input_shape: Sequence[int], n_classes: int, *, task_classes: Any = None) -> nn.Module:
        return as_model(module, n_classes, task_classes)

    return ModelSpec(name, build, NoParams, f"your module {type(module).__qualname__}")
