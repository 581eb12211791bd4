"""The adaptation API: ``perennial adapt`` (one run, a grid of methods x seeds, resume).

An adaptation run is stored like a training run (status, config, metrics, checkpoints) with
``scenario = "tta-<shape>"`` and ``strategy = <method>``; its summary ``metrics`` hold
``error`` (mean online error over the stream), ``source_error`` (the unadapted source model
on the same batches), ``error_per_domain``, ``error_per_round`` and the per-batch curves the
report plots. Every input problem (source without normalisation layers for a method that
adapts them, another input shape, unknown corruption, severity outside 1-5) is found before
the run is created, so nothing is stored for it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perennial.adaptation import Adapter, make_adapter
from perennial.adaptation.base import norm_layers
from perennial.api import aggregate, mean_sem, stop_on_signals, versions
from perennial.errors import CheckpointError, ConfigError, DataError, RunInterrupted
from perennial.models import Classifier, build_model
from perennial.store import CheckpointDir, RunRecord, RunStore
from perennial.streams.corruptions import TestStream, build_tta_stream
from perennial.train import Progress
from perennial.train.adapt import AdaptResult, adapt


class AdaptConfig(BaseModel):
    """Everything that determines an adaptation run's results."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(default=None, description="stored run id of the source model")
    weights: str | None = Field(default=None, description="or: a saved model file (<store>/models/<run>.pt)")
    benchmark: str = Field(default="mnist-c", description="mnist-c, digits-c or npz-dir (with path)")
    path: str | None = None
    shape: Literal["continual", "gradual", "repeated"] = "continual"
    corruptions: list[str] | None = None
    severity: int = 5
    rounds: int = 10
    order: Literal["iid", "class"] = "iid"
    samples_per_domain: int | None = None
    method: str = "tent"
    method_params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    batch_size: int = Field(default=64, ge=1)
    device: str = "cpu"
    checkpoint_every: int | None = Field(default=50, ge=1, description="batches between checkpoints")

    def fingerprint(self) -> str:
        d = self.model_dump()
        d.pop("checkpoint_every", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def load_source(cfg: AdaptConfig, store: RunStore | None) -> tuple[Classifier, dict[str, Any]]:
    """The source model (weights read, never written) and its saved description."""
    if (cfg.source is None) == (cfg.weights is None):
        raise ConfigError([("--source", "give either --source RUN_ID (a stored run) or --weights FILE")])
    if cfg.source is not None:
        if store is None:
            raise ConfigError([("--source", "a stored source run needs a store (--store)")])
        payload = store.load_model(cfg.source)
    else:
        try:
            payload = CheckpointDir.read(Path(str(cfg.weights)))
        except CheckpointError as e:
            raise DataError(f"--weights {cfg.weights}: {e}") from None
    missing = [k for k in ("model", "model_name", "model_params", "input_shape", "n_classes") if k not in payload]
    if missing or payload.get("kind", "classification") != "classification":
        raise DataError(
            "the source is not a saved classifier (missing: " + (", ".join(missing) or "kind=classification") + "); "
            "train one with: perennial run -b mnist-c -m cnn-bn"
        )
    model = build_model(payload["model_name"], payload["input_shape"], payload["n_classes"], **payload["model_params"])
    model.load_state_dict(payload["model"])
    return model, payload


def check_source(model: Classifier, payload: dict[str, Any], stream: TestStream, method: Adapter) -> None:
    """Refuse a source model that cannot serve this stream or method (before anything is stored)."""
    problems = []
    if tuple(payload["input_shape"]) != tuple(stream.input_shape):
        problems.append(
            (
                "--source",
                f"the source model takes inputs of shape {tuple(payload['input_shape'])}, the {stream.name} stream "
                f"has {tuple(stream.input_shape)}; train a source on the same data (perennial run -b {stream.name})",
            )
        )
    if int(payload["n_classes"]) < stream.n_classes:
        problems.append(
            ("--source", f"the source model has {payload['n_classes']} classes, the stream {stream.n_classes}")
        )
    if method.needs_norm and not norm_layers(model):
        problems.append(
            (
                "--method",
                f"{method.name} adapts batch-normalisation layers, but the source model ({payload['model_name']}) has "
                "none; use a source trained with -m cnn-bn or -m resnet, or a method that does not need them "
                "(source, lame, cotta, rmt)",
            )
        )
    if problems:
        raise ConfigError(problems, header="the source model does not fit this adaptation run")


def clean_samples(benchmark: str) -> torch.Tensor | None:
    """Unlabeled clean training images of a built-in benchmark (EATA's Fisher); None for user data."""
    from perennial.streams import datasets

    loaders = {"mnist-c": datasets.mnist5k, "digits-c": datasets.digits}
    if benchmark not in loaders:
        return None
    return torch.from_numpy(loaders[benchmark]()[0][:1000])


def prepare(cfg: AdaptConfig, store: RunStore | None) -> tuple[Classifier, TestStream, Adapter]:
    """Validate everything and build the model, stream and method (raises before any write)."""
    method = make_adapter(cfg.method, cfg.method_params)
    stream = build_tta_stream(
        cfg.benchmark,
        shape=cfg.shape,
        corruptions=cfg.corruptions,
        severity=cfg.severity,
        rounds=cfg.rounds,
        order=cfg.order,
        samples_per_domain=cfg.samples_per_domain,
        seed=cfg.seed,
        path=cfg.path,
    )
    model, payload = load_source(cfg, store)
    check_source(model, payload, stream, method)
    return model, stream, method


class _Checkpointer:
    def __init__(self, ckdir: CheckpointDir, every: int | None, meta: dict[str, Any]):
        self.ckdir, self.every, self.meta = ckdir, every, meta

    def save(self, payload: dict[str, Any], step: int) -> None:
        self.ckdir.save({**payload, "meta": self.meta}, step)


def new_adapt_id(cfg: AdaptConfig) -> str:
    return f"adapt-{cfg.benchmark}-{cfg.method}-s{cfg.seed}-{secrets.token_hex(3)}"


def adapt_run(
    cfg: AdaptConfig,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """One adaptation run; with a store it is recorded, checkpointed and resumable (``resume_adapt``)."""
    model, stream, method = prepare(cfg, store)
    run_id = run_id or new_adapt_id(cfg)
    if store is None:
        res = adapt(model, stream, method, **_loop_args(cfg), clean=clean_samples(cfg.benchmark), progress=progress)
        return _record(cfg, run_id, stream, res)
    store.create_run(
        run_id,
        benchmark=cfg.benchmark,
        scenario=f"tta-{cfg.shape}",
        strategy=cfg.method,
        seed=cfg.seed,
        n_experiences=len(stream),
        config={"adapt": cfg.model_dump()},
        versions=versions(),
    )
    store.record_experiences(run_id, [d.name for d in stream.domains], [[] for _ in stream.domains])
    return _adapt_in_store(cfg, store, run_id, model, stream, method, None, progress)


def resume_adapt(store: RunStore, run_id: str, *, progress: Progress | None = None) -> RunRecord:
    """Continue an interrupted (or killed) adaptation run from its newest valid checkpoint."""
    rec = store.get(run_id)
    if rec.status == "finished":
        raise CheckpointError(f"run {run_id!r} already finished; see: perennial show {run_id}")
    if "adapt" not in rec.config:
        raise CheckpointError(f"run {run_id!r} is a training run; continue it with: perennial resume {run_id}")
    try:
        cfg = AdaptConfig.model_validate(rec.config["adapt"])
    except ValidationError as e:
        raise CheckpointError(f"run {run_id!r} has a stored config this perennial cannot read: {e}") from None
    model, stream, method = prepare(cfg, store)
    ckdir = store.checkpoints(run_id)
    payload = None
    if ckdir.list():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload, _ = ckdir.load_latest()
        meta = payload.get("meta") or {}
        if meta.get("run_id") != run_id or meta.get("config") != cfg.fingerprint():
            raise CheckpointError(f"the newest checkpoint of {run_id!r} belongs to another run or configuration")
    store.mark(run_id, "running", None)
    return _adapt_in_store(cfg, store, run_id, model, stream, method, payload, progress)


def _loop_args(cfg: AdaptConfig) -> dict[str, Any]:
    return {"seed": cfg.seed, "batch_size": cfg.batch_size, "device": cfg.device}


def _adapt_in_store(
    cfg: AdaptConfig,
    store: RunStore,
    run_id: str,
    model: Classifier,
    stream: TestStream,
    method: Adapter,
    payload: dict[str, Any] | None,
    progress: Progress | None,
) -> RunRecord:
    ckdir = store.checkpoints(run_id)
    ck = _Checkpointer(ckdir, cfg.checkpoint_every, {"run_id": run_id, "config": cfg.fingerprint()})
    try:
        with stop_on_signals() as should_stop:
            res = adapt(
                model,
                stream,
                method,
                **_loop_args(cfg),
                clean=clean_samples(cfg.benchmark),
                progress=progress,
                checkpointer=ck,
                resume=payload,
                should_stop=should_stop,
            )
    except (RunInterrupted, KeyboardInterrupt):
        store.mark(run_id, "interrupted", f"interrupted; continue with: perennial adapt --resume {run_id}")
        raise
    except BaseException as e:
        store.mark(run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    store.finish_run(run_id, _metrics(res), res.seconds)
    ckdir.clear()
    return store.get(run_id)


def _metrics(res: AdaptResult) -> dict[str, Any]:
    return {
        **res.metrics,
        "curve": {
            "batch_error": res.batch_error,
            "source_batch_error": res.source_batch_error,
            "batch_domain": res.batch_domain,
            "batch_size": res.batch_size,
        },
    }


def _record(cfg: AdaptConfig, run_id: str, stream: TestStream, res: AdaptResult) -> RunRecord:
    import time

    now = time.time()
    return RunRecord(
        run_id=run_id,
        status="finished",
        benchmark=cfg.benchmark,
        scenario=f"tta-{cfg.shape}",
        strategy=cfg.method,
        seed=cfg.seed,
        n_experiences=len(stream),
        created=now,
        updated=now,
        config={"adapt": cfg.model_dump()},
        versions=versions(),
        metrics=_metrics(res),
        seconds=res.seconds,
        error=None,
        experience_names=[d.name for d in stream.domains],
    )


#: metrics aggregated over seeds by ``adapt_grid`` (errors as fractions)
ADAPT_METRICS = ("error", "source_error", "first_round_error", "last_round_error")


def adapt_grid(
    base: Callable[[str, int], AdaptConfig],
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    store: RunStore | None = None,
    progress: Progress | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> tuple[list[dict[str, Any]], list[RunRecord]]:
    """Every method with every seed; one row per method with mean and standard error over seeds."""
    runs: list[RunRecord] = []
    for m in methods:
        for s in seeds:
            rec = adapt_run(base(m, s), store=store, progress=progress)
            runs.append(rec)
            if on_run:
                on_run(rec)
    return grid_rows(runs, methods), runs


def grid_rows(runs: Sequence[RunRecord], order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    rows = aggregate(runs, order=order)
    by_id = {r.run_id: r for r in runs}
    for row in rows:
        rs = [by_id[i] for i in row["run_ids"]]
        for m in ADAPT_METRICS:
            vals = [_metric(r, m) for r in rs]
            row[f"{m}_mean"], row[f"{m}_sem"] = mean_sem(vals)
    return rows


def _metric(r: RunRecord, m: str) -> float | None:
    met = r.metrics or {}
    if m == "first_round_error":
        return (met.get("error_per_round") or [None])[0]
    if m == "last_round_error":
        return (met.get("error_per_round") or [None])[-1]
    return met.get(m)
