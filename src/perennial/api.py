"""The experiment API: build everything from a config, train, record, summarise.

``run(config)`` is what ``perennial run`` does; ``compare(...)`` is ``perennial compare``.
"""

from __future__ import annotations

import math
import platform
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perennial.config import RunConfig
from perennial.evaluation import summarize
from perennial.models import build_model
from perennial.store import RunRecord, RunStore
from perennial.strategies import Context, make_strategy
from perennial.streams import Stream, build_benchmark
from perennial.train import Callback, Progress, fit


def versions() -> dict[str, str]:
    import pydantic

    from perennial import __version__

    return {
        "perennial": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pydantic": pydantic.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def new_run_id(cfg: RunConfig) -> str:
    return f"{cfg.benchmark.name}-{cfg.strategy.name}-s{cfg.seed}-{secrets.token_hex(3)}"


def build_stream(cfg: RunConfig) -> Stream:
    b = cfg.benchmark
    return build_benchmark(
        b.name,
        b.scenario,
        classes_per_exp=b.classes_per_exp,
        class_order_seed=b.class_order_seed,
        n_experiences=b.n_experiences,
        first_classes=b.first_classes,
    )


class StoreRecorder(Callback):
    """Writes every measurement to the store the moment it exists."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def on_fit_start(self, ctx: Context, random_init_acc: list[float], random_init_loss: list[float]) -> None:
        self.store.record_row(self.run_id, -1, random_init_acc, random_init_loss)

    def on_experience_end(self, ctx: Context, acc: list[float], loss: list[float]) -> None:
        self.store.record_row(self.run_id, ctx.exp_index, acc, loss)


def run(
    cfg: RunConfig,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunRecord:
    """Train one run described by ``cfg``; record it in ``store``; return its record."""
    stream = build_stream(cfg)
    strategy = make_strategy(cfg.strategy.name, cfg.strategy.params())
    strategy.check_scenario(stream.scenario)
    torch.manual_seed(cfg.seed)  # model initialisation depends on the seed only
    model = build_model(
        cfg.model.name,
        stream.input_shape,
        stream.n_classes,
        task_classes=stream.task_classes if stream.scenario == "task" else None,
        **cfg.model.params(),
    )
    run_id = run_id or new_run_id(cfg)
    config = cfg.to_dict()
    config["benchmark"]["scenario"] = stream.scenario
    vers = versions()
    cbs = list(callbacks)
    if store is not None:
        store.create_run(
            run_id,
            benchmark=cfg.benchmark.name,
            scenario=stream.scenario,
            strategy=cfg.strategy.name,
            seed=cfg.seed,
            n_experiences=len(stream),
            config=config,
            versions=vers,
            overwrite=overwrite,
        )
        cbs.insert(0, StoreRecorder(store, run_id))
    try:
        result = fit(
            model,
            stream,
            strategy,
            cfg.train,
            seed=cfg.seed,
            callbacks=cbs,
            progress=progress,
            timescales=cfg.timescales,
        )
    except KeyboardInterrupt:
        if store is not None:
            store.mark(run_id, "interrupted", "interrupted by the user (Ctrl-C)")
        raise
    except BaseException as e:
        if store is not None:
            store.mark(run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    metrics = summarize(result.accuracy_matrix, result.random_init_acc)
    metrics["steps"] = result.steps
    metrics["train_seconds"] = result.train_seconds
    metrics["eval_seconds"] = result.eval_seconds
    if store is not None:
        store.finish_run(run_id, metrics, result.seconds)
        return store.get(run_id)
    return RunRecord(
        run_id=run_id,
        status="finished",
        benchmark=cfg.benchmark.name,
        scenario=stream.scenario,
        strategy=cfg.strategy.name,
        seed=cfg.seed,
        n_experiences=len(stream),
        created=time.time(),
        updated=time.time(),
        config=config,
        versions=vers,
        metrics=metrics,
        seconds=result.seconds,
        error=None,
        accuracy_matrix=result.accuracy_matrix,
        loss_matrix=[list(r) for r in result.loss_matrix],
        random_init_acc=result.random_init_acc,
    )


#: metrics aggregated by ``compare`` (mean and standard error over seeds)
COMPARE_METRICS = ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc")


def mean_sem(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (sample std / sqrt(n)); None-safe."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None, None
    m = float(np.mean(xs))
    if len(xs) < 2:
        return m, None
    return m, float(np.std(xs, ddof=1) / math.sqrt(len(xs)))


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]
    runs: list[RunRecord]

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.rows, "run_ids": [r.run_id for r in self.runs]}


def aggregate(runs: Sequence[RunRecord], order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((r.strategy, r.benchmark, r.scenario), []).append(r)
    rows = []
    keys = list(groups)
    if order:
        keys.sort(key=lambda k: order.index(k[0]) if k[0] in order else len(order))
    for key in keys:
        rs = groups[key]
        row: dict[str, Any] = {"strategy": key[0], "benchmark": key[1], "scenario": key[2], "n": len(rs)}
        for m in COMPARE_METRICS:
            mean, sem = mean_sem([(r.metrics or {}).get(m) for r in rs])
            row[f"{m}_mean"], row[f"{m}_sem"] = mean, sem
        row["seconds_mean"] = mean_sem([r.seconds for r in rs])[0]
        row["seeds"] = [r.seed for r in rs]
        row["run_ids"] = [r.run_id for r in rs]
        rows.append(row)
    return rows


def compare(
    base: Callable[[str, int], RunConfig],
    strategies: Sequence[str],
    seeds: Sequence[int],
    *,
    store: RunStore | None = None,
    progress: Progress | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> CompareResult:
    """Run every strategy with every seed (``base(strategy, seed)`` gives each config)."""
    runs = []
    for name in strategies:
        for seed in seeds:
            rec = run(base(name, seed), store=store, progress=progress)
            runs.append(rec)
            if on_run:
                on_run(rec)
    return CompareResult(aggregate(runs, order=list(strategies)), runs)
