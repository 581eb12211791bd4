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

from perennial.config import RunConfig, resolved
from perennial.errors import CheckpointError, ConfigError, RunInterrupted
from perennial.evaluation import CONTINUAL_METRICS, lm_summary, summarize, summarize_log
from perennial.models import MODELS, Classifier, build_model
from perennial.models import generate as sample_tokens
from perennial.store import CheckpointDir, RunRecord, RunStore
from perennial.strategies import Context, Strategy, make_strategy
from perennial.streams import Stream, build_benchmark
from perennial.train import Callback, ContinualEvaluator, FitResult, Progress, fit


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
    options = b.model_dump(exclude={"name", "scenario"})  # None = not set; build_benchmark drops those
    if cfg.model.name.startswith("hf:") and b.tokenizer is None and "tokenizer" in _benchmark_options(b.name):
        from perennial.models.hf import tokenizer_spec

        options["tokenizer"] = tokenizer_spec(cfg.model.name[3:])  # the model's own tokenizer (or bytes)
    return build_benchmark(b.name, b.scenario, **options)


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

    def on_experience_end(self, ctx: Context, acc: list[float], loss: list[float]) -> None:
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


def build(cfg: RunConfig) -> tuple[Stream, Strategy, Classifier]:
    stream = build_stream(cfg)
    strategy = make_strategy(cfg.strategy.name, cfg.strategy.params())
    strategy.check_scenario(stream.scenario)
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
) -> RunRecord:
    """Train one run described by ``cfg``; record it in ``store``; return its record.

    With a store, checkpoints are written at every experience boundary (and every
    ``cfg.checkpoint.every`` steps), and SIGINT/SIGTERM save one before stopping;
    ``resume(store, run_id)`` continues such a run exactly.
    """
    cfg = resolved(cfg)
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
    ckdir = store.checkpoints(run_id, keep=cfg.checkpoint.keep)
    ckdir.clear()  # an overwritten run must not resume from the old run's files
    return _fit_in_store(cfg, store, run_id, stream, strategy, model, ckdir, None, progress, callbacks)


def resume(
    store: RunStore,
    run_id: str,
    *,
    progress: Progress | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunRecord:
    """Continue ``run_id`` from its newest valid checkpoint; the result equals an uninterrupted run."""
    rec = store.get(run_id)
    if rec.status == "finished":
        raise CheckpointError(f"run {run_id!r} already finished; see: perennial show {run_id}")
    try:
        cfg = RunConfig.model_validate(rec.config)
    except ValidationError as e:
        raise CheckpointError(f"run {run_id!r} has a stored config this perennial cannot read: {e}") from None
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
) -> RunRecord:
    checkpointer = RunCheckpointer(ckdir, cfg.checkpoint.every, _identity(cfg, run_id))
    eval_writer = store.eval_writer(run_id) if cfg.eval.every is not None else None
    evaluator = _evaluator(cfg, strategy, eval_writer)
    cbs = [StoreRecorder(store, run_id), *callbacks, *([evaluator] if evaluator is not None else [])]
    if payload is not None:  # measurements made after the checkpoint are made again
        store.delete_eval_after(run_id, int(payload["loop"]["step"]))
    try:
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
            )
    except (RunInterrupted, KeyboardInterrupt):
        store.mark(run_id, "interrupted", f"interrupted; continue with: perennial resume {run_id}")
        raise
    except BaseException as e:
        store.mark(run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        if eval_writer is not None:
            eval_writer.close()
    if stream.kind == "lm":  # kept for `perennial generate` (and model.init of a later run)
        store.save_model(run_id, model_payload(cfg, stream, model))
        if hasattr(model, "hf_model"):  # also as safetensors that AutoModelForCausalLM.from_pretrained loads
            from perennial.models.hf import save_pretrained

            save_pretrained(model, store.model_path(run_id).with_suffix(".hf"))
    metrics = _metrics(result, stream.kind)
    if evaluator is not None:
        # from the store: it holds the whole log, also of a run resumed midway
        metrics.update(summarize_log(store.eval_log(run_id), window=cfg.eval.window, lca_beta=cfg.eval.lca_beta))
        metrics["continual_eval_seconds"] = evaluator.seconds
    store.finish_run(run_id, metrics, result.seconds)
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
        **loop,
    )


def _evaluator(cfg: RunConfig, strategy: Strategy, sink: Any) -> ContinualEvaluator | None:
    if cfg.eval.every is None:
        return None
    return ContinualEvaluator.from_settings(strategy, cfg.eval, batch_size=cfg.train.eval_batch_size, sink=sink)


def _metrics(result: FitResult, kind: str = "classification") -> dict[str, Any]:
    if kind == "lm":  # loss-based: metrics.forgetting is the rise of validation loss (nats), see docs/metrics.md
        metrics: dict[str, Any] = dict(lm_summary(result.loss_matrix, result.accuracy_matrix, result.random_init_loss))
    else:
        metrics = dict(summarize(result.accuracy_matrix, result.random_init_acc))
    metrics["steps"] = result.steps
    metrics["train_seconds"] = result.train_seconds
    metrics["eval_seconds"] = result.eval_seconds
    return metrics


def _record_from_result(
    cfg: RunConfig,
    run_id: str,
    stream: Stream,
    config: dict[str, Any],
    vers: dict[str, str],
    result: FitResult,
    evaluator: ContinualEvaluator | None,
) -> RunRecord:
    now = time.time()
    metrics = _metrics(result, stream.kind)
    if evaluator is not None:
        metrics.update(summarize_log(evaluator.log, window=cfg.eval.window, lca_beta=cfg.eval.lca_beta))
        metrics["continual_eval_seconds"] = evaluator.seconds
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
        eval_log=evaluator.log if evaluator is not None else [],
        model_log=evaluator.model_log if evaluator is not None else [],
        random_init_loss=list(result.random_init_loss),
    )


#: metrics aggregated by ``compare`` (mean and standard error over seeds); the continual ones
#: are None unless the runs used continual evaluation (``--eval-every``)
COMPARE_METRICS = ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc", *CONTINUAL_METRICS)
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

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.rows, "run_ids": [r.run_id for r in self.runs]}


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
) -> CompareResult:
    """Run every strategy with every seed (``base(strategy, seed)`` gives each config).

    ``strategies`` are labels of the variants compared: strategy specs, or any names that
    ``base`` maps to configs (e.g. ``"replay ratio=0.05"`` for a sweep); rows are per label.
    """
    runs, labels = [], []
    for name in strategies:
        for seed in seeds:
            rec = run(base(name, seed), store=store, progress=progress)
            runs.append(rec)
            labels.append(name)
            if on_run:
                on_run(rec)
    return CompareResult(aggregate(runs, order=list(strategies), labels=labels), runs)
