"""The experiment API: build everything from a config, train, record, summarise.

``run(config)`` is what ``perennial run`` does; ``compare(...)`` is ``perennial compare``.
"""

from __future__ import annotations

import contextlib
import math
import platform
import secrets
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from perennial.config import RunConfig, check_memory, resolved
from perennial.errors import CheckpointError, ConfigError, RunInterrupted
from perennial.evaluation import (
    CONTINUAL_METRICS,
    ONLINE_METRICS,
    EvalRecord,
    anytime_accuracy,
    lm_summary,
    summarize,
    summarize_log,
    summarize_online,
)
from perennial.models import MODELS, Classifier, build_model
from perennial.models import generate as sample_tokens
from perennial.resources import apply_threads
from perennial.store import CheckpointDir, RunRecord, RunStore
from perennial.strategies import Context, Strategy, make_strategy
from perennial.streams import Stream, build_benchmark
from perennial.streams.corruptions import TTA_BENCHMARKS
from perennial.streams.online import reshape_stream
from perennial.train import Callback, ContinualEvaluator, FitResult, Progress, eval_policy, fit
from perennial.train.online import check_online


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
    import re

    name = f"{cfg.benchmark.name}-{cfg.strategy.name}".replace(":", ".")  # plug-in names: mod:Name
    return f"{re.sub(r'[^A-Za-z0-9._+-]', '-', name)[:100]}-s{cfg.seed}-{secrets.token_hex(3)}"


def build_stream(cfg: RunConfig) -> Stream:
    b = cfg.benchmark
    options = b.model_dump(exclude={"name", "scenario", "blur", "drift_window"})  # None = not set; dropped
    if cfg.model.name.startswith("hf:") and b.tokenizer is None and "tokenizer" in _benchmark_options(b.name):
        from perennial.models.hf import tokenizer_spec

        options["tokenizer"] = tokenizer_spec(cfg.model.name[3:])  # the model's own tokenizer (or bytes)
    stream = build_benchmark(b.name, b.scenario, **options)
    if b.blur is not None or b.drift_window is not None:  # online stream shapes
        stream = reshape_stream(stream, blur=b.blur, drift_window=b.drift_window, seed=cfg.seed).validate()
    return stream


def _benchmark_options(name: str) -> set[str]:
    import inspect

    from perennial.streams import BENCHMARKS

    return set(inspect.signature(BENCHMARKS.get(name).build).parameters) if name in BENCHMARKS else set()


class StoreRecorder(Callback):
    """Writes every measurement to the store the moment it exists."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def on_fit_start(self, ctx: Context, random_init_acc: list[float], random_init_loss: list[float]) -> None:
        self.store.record_row(self.run_id, -1, random_init_acc, random_init_loss)

    def on_experience_end(self, ctx: Context, acc: list[float | None], loss: list[float | None]) -> None:
        self.store.record_row(self.run_id, ctx.exp_index, acc, loss)


class RunCheckpointer:
    """Saves fit's payloads into a run's checkpoint directory, stamped with the run's identity."""

    def __init__(self, ckdir: CheckpointDir, every: int | None, meta: dict[str, Any]):
        self.ckdir, self.every, self.meta = ckdir, every, meta

    def save(self, payload: dict[str, Any], step: int) -> None:
        self.ckdir.save({**payload, "meta": self.meta}, step)


def _identity(cfg: RunConfig, run_id: str) -> dict[str, Any]:
    from perennial import __version__

    return {"run_id": run_id, "config": cfg.fingerprint(), "perennial": __version__}


def check_identity(meta: Any, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint of another run, another config or an incompatible version."""
    if not isinstance(meta, dict):
        raise CheckpointError("checkpoint carries no run identity; it was not written by perennial's run store")
    if meta.get("run_id") != expected["run_id"]:
        raise CheckpointError(f"checkpoint belongs to run {meta.get('run_id')!r}, not {expected['run_id']!r}")
    if meta.get("config") != expected["config"]:
        raise CheckpointError(
            "checkpoint was written with a different configuration than the run's stored config "
            "(fingerprints differ); start a new run instead"
        )
    ours, theirs = expected["perennial"].split(".")[:2], str(meta.get("perennial", "")).split(".")[:2]
    if ours != theirs:
        raise CheckpointError(
            f"checkpoint written by perennial {meta.get('perennial')}, this is {expected['perennial']}; "
            "resume with the same major.minor version"
        )


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """First SIGINT/SIGTERM asks the loop to checkpoint and stop; a second one stops at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        for sig, h in old.items():  # a second signal is not caught again
            signal.signal(sig, h)

    for sig in old:
        signal.signal(sig, handler)
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _stop_if_asked(should_stop: Callable[[], bool], where: str) -> None:
    if should_stop():
        raise RunInterrupted(f"stopped {where}; every experience is trained and measured")


def build(cfg: RunConfig) -> tuple[Stream, Strategy, Classifier]:
    stream = build_stream(cfg)
    strategy = make_strategy(cfg.strategy.name, cfg.strategy.params())
    strategy.check_scenario(stream.scenario)
    check_memory(cfg, math.prod(stream.input_shape), stream.n_classes)  # before the model is allocated
    check_online(strategy, stream, cfg.train)  # before the run exists: e.g. ewc with hidden boundaries
    needs = sorted({p.needs_model for p in strategy.parts()} - {None, cfg.model.name})
    if needs:
        raise ConfigError(
            [("model.name", f"strategy {cfg.strategy.name} needs model {needs[0]}; add --model {needs[0]}")]
        )
    torch.manual_seed(cfg.seed)  # model initialisation depends on the seed only
    try:
        model = build_model(
            cfg.model.name,
            stream.input_shape,
            stream.n_classes,
            task_classes=stream.task_classes if stream.scenario == "task" else None,
            **cfg.model.params(),
        )
    except ValueError as e:
        raise ConfigError([("model", str(e))]) from None
    if MODELS.get(cfg.model.name).kind != stream.kind:
        raise ConfigError(
            [
                (
                    "model.name",
                    f"{cfg.model.name} models {MODELS.get(cfg.model.name).kind} data, the stream is {stream.kind}",
                )
            ]
        )
    if cfg.model.init is not None:
        load_init(model, cfg.model.init)
    return stream, strategy, model


def load_init(model: torch.nn.Module, path: str) -> None:
    """Start from saved weights (continual pre-training of an existing model)."""
    from pathlib import Path

    from perennial.store import CheckpointDir

    try:
        payload = CheckpointDir.read(Path(path))
        model.load_state_dict(payload["model"])
    except (CheckpointError, KeyError, RuntimeError) as e:
        raise ConfigError([("model.init", f"cannot start from {path!r}: {e}")]) from None


def model_payload(cfg: RunConfig, stream: Stream, model: torch.nn.Module) -> dict[str, Any]:
    """A run's final weights plus what rebuilding and sampling need (weights-only loadable)."""
    return {
        "format": 1,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_name": cfg.model.name,
        "model_params": cfg.model.params(),
        "input_shape": list(stream.input_shape),
        "n_classes": stream.n_classes,
        "kind": stream.kind,
        "tokenizer": str(stream.meta.get("tokenizer", "")),
    }


def generate(
    store: RunStore,
    run_id: str,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """Continue ``prompt`` with the final model of language-model run ``run_id`` (seeded sampling)."""
    from perennial.errors import DataError
    from perennial.streams.text import load_tokenizer

    payload = store.load_model(run_id)
    if payload.get("kind") != "lm":
        raise DataError(f"run {run_id!r} is not a language-model run; generate needs one (e.g. -b text-domains)")
    model = build_model(payload["model_name"], payload["input_shape"], payload["n_classes"], **payload["model_params"])
    model.load_state_dict(payload["model"])
    tok = load_tokenizer(payload["tokenizer"])
    ids = torch.as_tensor(tok.encode(prompt), dtype=torch.long)
    if ids.numel() == 0:
        raise DataError("the prompt is empty; give at least one character, e.g. --prompt 'def '")
    if bool((ids >= payload["n_classes"]).any()):
        raise DataError("the prompt has tokens outside the model's vocabulary")
    out = sample_tokens(
        model,
        ids,
        max_new_tokens,
        context=int(payload["input_shape"][0]),
        temperature=temperature,
        top_k=top_k,
        generator=torch.Generator().manual_seed(seed),
    )
    return tok.decode(out.tolist())


def run(
    cfg: RunConfig,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    dist: Any = None,
) -> RunRecord:
    """Train one run described by ``cfg``; record it in ``store``; return its record.

    With a store, checkpoints are written at every experience boundary (and every
    ``cfg.checkpoint.every`` steps), and SIGINT/SIGTERM save one before stopping;
    ``resume(store, run_id)`` continues such a run exactly.
    """
    cfg = resolved(cfg)
    apply_threads(cfg.threads)
    stream, strategy, model = build(cfg)
    run_id = run_id or new_run_id(cfg)
    config = cfg.to_dict()
    vers = versions()
    if store is None:
        evaluator = _evaluator(cfg, strategy, None)
        cbs = [*callbacks, *([evaluator] if evaluator is not None else [])]
        result = _fit(cfg, model, stream, strategy, cbs, progress)
        return _record_from_result(cfg, run_id, stream, config, vers, result, evaluator)
    store.delete_model(run_id)  # an overwritten run must not keep the old run's model
    create_run(store, cfg, run_id, stream, config, vers, overwrite=overwrite)
    ckdir = store.checkpoints(run_id, keep=cfg.checkpoint.keep)
    ckdir.clear()  # an overwritten run must not resume from the old run's files
    return _fit_in_store(cfg, store, run_id, stream, strategy, model, ckdir, None, progress, callbacks, dist=dist)


def create_run(
    store: RunStore,
    cfg: RunConfig,
    run_id: str,
    stream: Stream,
    config: dict[str, Any],
    vers: dict[str, str],
    *,
    overwrite: bool = False,
) -> None:
    """A run's row and its experiences in the store, before any result (a new or a failed run)."""
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
    store.record_experiences(run_id, [e.name for e in stream], [list(e.classes) for e in stream])


def resume(
    store: RunStore,
    run_id: str,
    *,
    progress: Progress | None = None,
    callbacks: Sequence[Callback] = (),
    threads: int | None = None,
) -> RunRecord:
    """Continue ``run_id`` from its newest valid checkpoint; the result equals an uninterrupted run.

    ``threads`` overrides the run's torch CPU threads (a machine setting, see ``--threads``)."""
    rec = store.get(run_id)
    if rec.status == "finished":
        raise CheckpointError(f"run {run_id!r} already finished; see: perennial show {run_id}")
    if "adapt" in rec.config:
        raise CheckpointError(
            f"run {run_id!r} is a test-time adaptation run; continue it with: perennial adapt --resume {run_id}"
        )
    try:
        cfg = RunConfig.model_validate(rec.config)
    except ValidationError as e:
        raise CheckpointError(f"run {run_id!r} has a stored config this perennial cannot read: {e}") from None
    if threads is not None:
        cfg = cfg.model_copy(update={"threads": threads})
    apply_threads(cfg.threads)
    ckdir = store.checkpoints(run_id, keep=cfg.checkpoint.keep)
    notes: list[str] = []
    payload: dict[str, Any] | None = None
    if not ckdir.list():
        # killed before its first checkpoint: the run is deterministic, so start it again
        notes.append(f"run {run_id!r} had no checkpoint yet; restarted it from the beginning")
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            payload, path = ckdir.load_latest()
        check_identity(payload.get("meta"), _identity(cfg, run_id))
        notes += [str(w.message) for w in caught] + [f"resumed from checkpoint {path.name}"]
    stream, strategy, model = build(cfg)
    store.mark(run_id, "running", None)
    rec = _fit_in_store(cfg, store, run_id, stream, strategy, model, ckdir, payload, progress, callbacks)
    rec.notes = notes
    return rec


def _fit_in_store(
    cfg: RunConfig,
    store: RunStore,
    run_id: str,
    stream: Stream,
    strategy: Strategy,
    model: Classifier,
    ckdir: CheckpointDir,
    payload: dict[str, Any] | None,
    progress: Progress | None,
    callbacks: Sequence[Callback],
    dist: Any = None,
) -> RunRecord:
    """Fit with the store recording; ``dist`` (rank 0 of a data-parallel run, see
    :mod:`perennial.train.distributed`) trains with the other ranks."""
    # the run's description travels in every checkpoint: `perennial doctor --rebuild` re-creates
    # the run from it when runs.sqlite is lost (identity checks read only the identity keys)
    description = {
        "config": cfg.to_dict(),
        "scenario": stream.scenario,
        "n_experiences": len(stream),
        "names": [e.name for e in stream],
        "classes": [list(e.classes) for e in stream],
        "versions": {k: str(v) for k, v in versions().items()},  # plain str: weights-only loadable
    }
    checkpointer = RunCheckpointer(ckdir, cfg.checkpoint.every, {**_identity(cfg, run_id), "run": description})
    eval_writer = store.eval_writer(run_id) if cfg.eval.every is not None else None
    evaluator = _evaluator(cfg, strategy, eval_writer)
    cbs = [StoreRecorder(store, run_id), *callbacks, *([evaluator] if evaluator is not None else [])]
    if payload is not None:  # measurements made after the checkpoint are made again
        store.delete_eval_after(run_id, int(payload["loop"]["step"]))
    try:
        # The signal window covers the final evaluation, the last checkpoint and the store
        # writes after fit: a SIGINT/SIGTERM there is not ignored but stops the run as
        # interrupted before it is marked finished; the last checkpoint (saved after the
        # final evaluation) lets `resume` finish it without training again.
        with stop_on_signals() as should_stop:
            result = _fit(
                cfg,
                model,
                stream,
                strategy,
                cbs,
                progress,
                checkpointer=checkpointer,
                resume=payload,
                should_stop=should_stop,
                **({"dist": dist} if dist is not None else {}),
            )
            _stop_if_asked(should_stop, "after the final evaluation")
            if (
                stream.kind == "lm" or cfg.benchmark.name in TTA_BENCHMARKS
            ):  # kept for generate / adapt (and model.init)
                store.save_model(run_id, model_payload(cfg, stream, model))
                if hasattr(model, "hf_model"):  # also as safetensors that AutoModelForCausalLM.from_pretrained loads
                    from perennial.models.hf import save_pretrained

                    save_pretrained(model, store.model_path(run_id).with_suffix(".hf"))
            # the log from the store: it holds the whole log, also of a run resumed midway
            metrics = run_metrics(cfg, result, stream.kind, evaluator, store.eval_log(run_id) if evaluator else None)
            _stop_if_asked(should_stop, "before the results were marked final")
            store.finish_run(run_id, metrics, result.seconds)
    except (RunInterrupted, KeyboardInterrupt):
        store.mark(run_id, "interrupted", f"interrupted; continue with: perennial resume {run_id}")
        raise
    except BaseException as e:
        store.mark(run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        if eval_writer is not None:
            eval_writer.close()
    if not cfg.checkpoint.keep_after_finish:
        ckdir.clear()
    return store.get(run_id)


def _fit(
    cfg: RunConfig,
    model: Classifier,
    stream: Stream,
    strategy: Strategy,
    callbacks: Sequence[Callback],
    progress: Progress | None,
    **loop: Any,
) -> FitResult:
    """``fit`` with everything the run config decides (settings, seed, timescales); ``loop``
    adds checkpointing and resume for stored runs."""
    return fit(
        model,
        stream,
        strategy,
        cfg.train,
        seed=cfg.seed,
        callbacks=callbacks,
        progress=progress,
        timescales=cfg.timescales,
        eval_policy=eval_policy(cfg.eval),
        **loop,
    )


def _evaluator(cfg: RunConfig, strategy: Strategy, sink: Any) -> ContinualEvaluator | None:
    if cfg.eval.every is None:
        return None
    return ContinualEvaluator.from_settings(strategy, cfg.eval, batch_size=cfg.train.eval_batch_size, sink=sink)


def run_metrics(
    cfg: RunConfig,
    result: FitResult,
    kind: str,
    evaluator: ContinualEvaluator | None,
    log: Sequence[Any] | None,
) -> dict[str, Any]:
    """A finished run's summary metrics: those of its matrices (and online log), plus, with
    continual evaluation, those of the whole per-step ``log`` (grid records; slow-copy records
    are left out by the summaries)."""
    metrics = _metrics(result, kind)
    if evaluator is not None and log is not None:
        metrics.update(summarize_log(log, window=cfg.eval.window, lca_beta=cfg.eval.lca_beta))
        if cfg.train.mode == "online":
            metrics["anytime_acc"] = anytime_accuracy(log)
        metrics["continual_eval_seconds"] = evaluator.seconds
    return metrics


def _metrics(result: FitResult, kind: str = "classification") -> dict[str, Any]:
    if kind == "lm":  # loss-based: metrics.forgetting is the rise of validation loss (nats), see docs/metrics.md
        metrics: dict[str, Any] = dict(lm_summary(result.loss_matrix, result.accuracy_matrix, result.random_init_loss))
    else:
        metrics = dict(summarize(result.accuracy_matrix, result.random_init_acc))
    if result.online_log:  # online runs: prequential metrics of the per-batch log
        metrics.update(summarize_online(result.online_log))
    metrics["steps"] = result.steps
    metrics["train_seconds"] = result.train_seconds
    metrics["eval_seconds"] = result.eval_seconds
    # per experience: its training time (evaluation excluded) and its evaluation time
    ev = list(result.experience_eval_seconds) + [0.0] * (
        len(result.experience_seconds) - len(result.experience_eval_seconds)
    )
    metrics["experience_train_seconds"] = [t - e for t, e in zip(result.experience_seconds, ev, strict=False)]
    metrics["experience_eval_seconds"] = ev[: len(result.experience_seconds)]
    return metrics


def _record_from_result(
    cfg: RunConfig,
    run_id: str,
    stream: Stream,
    config: dict[str, Any],
    vers: dict[str, str],
    result: FitResult,
    evaluator: ContinualEvaluator | None,
    log: Sequence[EvalRecord] | None = None,
) -> RunRecord:
    """The record of a finished fit. ``log``: its continual-evaluation records, grid and slow
    copies together (default: those the evaluator kept; a Ray worker passes the ones it wrote)."""
    if log is None:
        log = [*evaluator.log, *evaluator.model_log] if evaluator is not None else []
    grid, copies = [r for r in log if not r.model], [r for r in log if r.model]
    now = time.time()
    metrics = run_metrics(cfg, result, stream.kind, evaluator, grid)
    return RunRecord(
        run_id=run_id,
        status="finished",
        benchmark=cfg.benchmark.name,
        scenario=stream.scenario,
        strategy=cfg.strategy.name,
        seed=cfg.seed,
        n_experiences=len(stream),
        created=now,
        updated=now,
        config=config,
        versions=vers,
        metrics=metrics,
        seconds=result.seconds,
        error=None,
        accuracy_matrix=result.accuracy_matrix,
        loss_matrix=[list(r) for r in result.loss_matrix],
        random_init_acc=result.random_init_acc,
        experience_names=[e.name for e in stream],
        eval_log=grid,
        model_log=copies,
        random_init_loss=list(result.random_init_loss),
    )


#: metrics aggregated by ``compare`` (mean and standard error over seeds); the continual ones
#: are None unless the runs used continual evaluation (``--eval-every``)
COMPARE_METRICS = (
    "acc",
    "avg_inc_acc",
    "forgetting",
    "bwt",
    "fwt",
    "learning_acc",
    *CONTINUAL_METRICS,
    *ONLINE_METRICS,
)
#: ... and for language-model runs (losses in nats; forgetting is loss-based there)
LM_COMPARE_METRICS = ("loss", "perplexity", "forgetting", "forgetting_first", "adaptation", "learning_loss", "acc")


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
    reused: int = 0  # finished runs of the same configs found in the store
    resumed: int = 0  # interrupted runs continued from their checkpoints

    def to_dict(self) -> dict[str, Any]:
        from perennial.store.db import SUMMARY_UNITS

        return {
            "units": SUMMARY_UNITS,
            "results": self.rows,
            "run_ids": [r.run_id for r in self.runs],
            "reused": self.reused,
            "resumed": self.resumed,
        }


def grid_run_id(cfg: RunConfig) -> str:
    """The run id a compare gives ``cfg``: readable, and the same for the same config, so that
    running a compare again finds its runs (``compare(..., fresh=False)``)."""
    import re

    name = f"{cfg.benchmark.name}-{cfg.strategy.name}".replace(":", ".")
    return f"{re.sub(r'[^A-Za-z0-9._+-]', '-', name)[:100]}-s{cfg.seed}-{cfg.fingerprint()[:10]}"


def aggregate(
    runs: Sequence[RunRecord], order: Sequence[str] | None = None, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per group of runs (per strategy, or per ``labels[i]`` of ``runs[i]`` when given)."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for i, r in enumerate(runs):
        groups.setdefault((labels[i] if labels else r.strategy, r.benchmark, r.scenario), []).append(r)
    rows = []
    keys = list(groups)
    if order:
        keys.sort(key=lambda k: order.index(k[0]) if k[0] in order else len(order))
    for key in keys:
        rs = groups[key]
        row: dict[str, Any] = {"strategy": key[0], "benchmark": key[1], "scenario": key[2], "n": len(rs)}
        lm = any("perplexity" in (r.metrics or {}) for r in rs)
        for m in LM_COMPARE_METRICS if lm else COMPARE_METRICS:
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
    fresh: bool = False,
    on_start: Callable[[str, RunConfig, str], None] | None = None,
    on_result: Callable[[str, RunRecord], None] | None = None,
    pool: Any = None,
) -> CompareResult:
    """Run every strategy with every seed (``base(strategy, seed)`` gives each config).

    ``strategies`` are labels of the variants compared: strategy specs, or any names that
    ``base`` maps to configs (e.g. ``"replay ratio=0.05"`` for a sweep); rows are per label.

    With a store the grid is idempotent: each run's id is :func:`grid_run_id` of its config, a
    finished run of the same id is reused, an interrupted (or killed) one is resumed from its
    checkpoint, and only missing runs are trained. ``fresh=True`` trains every run again
    (replacing the stored ones). ``on_start(run_id, cfg, action)`` is told before each run
    whether it is ``"reuse"``, ``"resume"`` or ``"run"``.
    ``on_result(label, record)`` (and ``on_run(record)``) is called as each run finishes.
    ``pool`` (e.g. :class:`perennial.scale.ray_runs.RayPool`) trains the runs to be trained or
    resumed elsewhere, each as one self-contained job, and writes them into ``store`` as they
    finish; the result is the same as the sequential one (runs in the same order).
    """
    jobs = [(name, resolved(base(name, seed))) for name in strategies for seed in seeds]

    def done(label: str, rec: RunRecord) -> None:
        if on_run:
            on_run(rec)
        if on_result:
            on_result(label, rec)

    runs, labels = [], []
    reused = resumed = 0
    if store is None:
        if pool is not None:
            raise ConfigError([("store", "running on a pool needs a run store (the driver writes results into it)")])
        for name, cfg in jobs:
            rec = run(cfg, progress=progress)
            runs.append(rec)
            labels.append(name)
            done(name, rec)
        return CompareResult(aggregate(runs, order=list(strategies), labels=labels), runs)
    ids, actions = [], []
    for _, cfg in jobs:
        rid = grid_run_id(cfg)
        action = "run" if fresh or not store.exists(rid) else _grid_action(store.get(rid), cfg)
        if on_start:
            on_start(rid, cfg, action)
        ids.append(rid)
        actions.append(action)
    records: dict[int, RunRecord] = {}
    if pool is not None:
        todo = [i for i, a in enumerate(actions) if a != "reuse"]
        finished = pool.run_all(
            [jobs[i] for i in todo],
            store,
            done,
            run_ids=[ids[i] for i in todo],
            keep_checkpoints=[actions[i] == "resume" for i in todo],
        )
        for k, rec in finished:
            records[todo[k]] = rec
            resumed += actions[todo[k]] == "resume"
    for i, ((name, cfg), rid, action) in enumerate(zip(jobs, ids, actions, strict=True)):
        if action == "reuse":
            rec = store.get(rid)
            reused += 1
        elif pool is not None:
            if i not in records:  # failed for good on the pool (stored as failed, reported by the pool)
                continue
            runs.append(records[i])
            labels.append(name)
            continue
        elif action == "resume":
            try:
                rec = resume(store, rid, progress=progress)
                resumed += 1
            except CheckpointError as e:  # e.g. killed while writing its only checkpoint:
                # the run is deterministic, so training it again gives the same result
                rec = run(cfg, store=store, run_id=rid, progress=progress, overwrite=True)
                rec.notes.append(f"could not resume {rid} ({e}); trained it again from the start")
        else:
            rec = run(cfg, store=store, run_id=rid, progress=progress, overwrite=True)
        runs.append(rec)
        labels.append(name)
        done(name, rec)
    return CompareResult(aggregate(runs, order=list(strategies), labels=labels), runs, reused, resumed)


def _grid_action(rec: RunRecord, cfg: RunConfig) -> str:
    """What a compare does with a stored run of the same id: reuse, resume or run it again."""
    try:
        same = RunConfig.model_validate(rec.config).fingerprint() == cfg.fingerprint()
    except ValidationError:
        same = False
    if not same:
        return "run"
    return "reuse" if rec.status == "finished" else "resume"
