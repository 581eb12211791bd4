"""One run as a self-contained function: a config in, a result out, no run store touched.

``execute(cfg, run_id, checkpoint_dir)`` is what a Ray task runs (and what any other executor
may run): it trains the run exactly as ``api.run`` does (same seed, same loop, same callbacks
in the same order, so the same numbers), writes checkpoints into ``checkpoint_dir`` (a
directory every worker can reach) and continues from the newest valid one there if a previous
attempt died. The continual-evaluation log goes to ``eval_log.jsonl`` in the same directory as
it is measured, so a retried attempt keeps the curve measured before its checkpoint. The
result is a :class:`DetachedResult` that the driver writes into the store
(:func:`write_result`): workers never open the SQLite store.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from perennial import api
from perennial.config import RunConfig, resolved
from perennial.errors import CheckpointError
from perennial.evaluation.continual import EvalRecord
from perennial.store import CheckpointDir, RunRecord, RunStore
from perennial.train import Callback

EVAL_FILE = "eval_log.jsonl"
#: who is running the run now (host, pid, start time): for operators, and for fault-injection tests
WORKER_FILE = "worker.json"


@dataclass
class DetachedResult:
    """Everything the store keeps of a finished run (plus what only the driver may write)."""

    record: RunRecord
    classes: list[list[int]]
    model_payload: dict[str, Any] | None = None  # language-model runs keep their final weights
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)


class _RowsPlaceholder(Callback):
    """Stands where ``StoreRecorder`` stands in a stored run, so a checkpoint written here has
    the same callback layout and ``perennial resume`` can continue it (and vice versa)."""


class _JsonlSink:
    """Appends continual-evaluation records to a JSON-lines file as they are measured."""

    def __init__(self, path: Path, after_step: int | None):
        self.path = path
        if after_step is None:
            path.unlink(missing_ok=True)
        else:  # measurements after the checkpoint are made again
            kept = [r for r in read_eval_file(path) if r.step <= after_step]
            path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in kept))

    def __call__(self, records: Sequence[EvalRecord]) -> None:
        with self.path.open("a") as f:
            f.write("".join(json.dumps(asdict(r)) + "\n" for r in records))


def read_eval_file(path: Path) -> list[EvalRecord]:
    if not path.is_file():
        return []
    out: dict[tuple[int, int, int, str], EvalRecord] = {}
    for line in path.read_text().splitlines():
        try:
            r = EvalRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut short by a kill
        out[(r.step, r.exp_trained, r.exp_eval, r.model)] = r
    return sorted(out.values(), key=lambda r: (r.step, r.exp_trained, r.exp_eval, r.model))


def execute(cfg: RunConfig, run_id: str, checkpoint_dir: str | Path, *, threads: int | None = None) -> DetachedResult:
    """Train run ``run_id`` of ``cfg``; checkpoints in ``checkpoint_dir``; resume from it if it holds one."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    cfg = resolved(cfg)
    stream, strategy, model = api.build(cfg)
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    ckdir = CheckpointDir(root, keep=cfg.checkpoint.keep)
    (root / WORKER_FILE).write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "run_id": run_id})
    )
    payload: dict[str, Any] | None = None
    resumed_from = None
    notes = []
    if ckdir.list():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                payload, path = ckdir.load_latest()
            notes += [str(w.message) for w in caught]
        except CheckpointError as e:  # killed while writing its first checkpoint: start again (deterministic)
            notes.append(f"{e}; restarted the run from the beginning")
            ckdir.clear()
        if payload is not None:
            api.check_identity(payload.get("meta"), api._identity(cfg, run_id))
            resumed_from = path.name
    sink = _JsonlSink(root / EVAL_FILE, None if payload is None else int(payload["loop"]["step"]))
    evaluator = api._evaluator(cfg, strategy, sink)
    cbs: list[Callback] = [_RowsPlaceholder(), *([evaluator] if evaluator is not None else [])]
    checkpointer = api.RunCheckpointer(ckdir, cfg.checkpoint.every, api._identity(cfg, run_id))
    result = api._fit(cfg, model, stream, strategy, cbs, None, checkpointer=checkpointer, resume=payload)
    log: list[EvalRecord] = read_eval_file(root / EVAL_FILE) if evaluator is not None else []
    rec = api._record_from_result(cfg, run_id, stream, cfg.to_dict(), api.versions(), result, evaluator, log)
    lm = api.model_payload(cfg, stream, model) if stream.kind == "lm" else None
    (root / EVAL_FILE).unlink(missing_ok=True)
    (root / WORKER_FILE).unlink(missing_ok=True)
    if not cfg.checkpoint.keep_after_finish:
        ckdir.clear()
        for tmp in root.glob(".ckpt-*.tmp"):  # a write cut short by a killed attempt
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            root.rmdir()
    return DetachedResult(rec, [list(map(int, e.classes)) for e in stream], lm, resumed_from, notes)


def write_result(store: RunStore, res: DetachedResult) -> RunRecord:
    """The driver's half: write a finished detached run into the store (the only store writer)."""
    rec = res.record
    store.delete_model(rec.run_id)
    store.create_run(
        rec.run_id,
        benchmark=rec.benchmark,
        scenario=rec.scenario,
        strategy=rec.strategy,
        seed=rec.seed,
        n_experiences=rec.n_experiences,
        config=rec.config,
        versions=rec.versions,
        overwrite=True,
    )
    store.record_experiences(rec.run_id, rec.experience_names, res.classes)
    store.record_row(rec.run_id, -1, rec.random_init_acc, rec.random_init_loss)  # type: ignore[arg-type]
    for i, (acc, loss) in enumerate(zip(rec.accuracy_matrix, rec.loss_matrix, strict=True)):
        store.record_row(rec.run_id, i, acc, loss)  # type: ignore[arg-type]
    if rec.eval_log or rec.model_log:
        store.record_eval(rec.run_id, [*rec.eval_log, *rec.model_log])
    if res.model_payload is not None:
        store.save_model(rec.run_id, res.model_payload)
    store.finish_run(rec.run_id, rec.metrics or {}, rec.seconds or 0.0)
    return store.get(rec.run_id)


def record_failure(store: RunStore, cfg: RunConfig, run_id: str, checkpoint_dir: str | Path, error: str) -> None:
    """A run that failed for good: stored as ``failed`` with its error and whatever the worker
    measured before its last checkpoint, so ``perennial resume RUN_ID`` can continue it (its
    checkpoints are in ``checkpoint_dir``, the store's own checkpoint folder by default)."""
    cfg = resolved(cfg)
    stream = api.build_stream(cfg)
    if not store.exists(run_id):
        api.create_run(store, cfg, run_id, stream, cfg.to_dict(), api.versions())
    ckdir = CheckpointDir(checkpoint_dir, keep=cfg.checkpoint.keep)
    if ckdir.list():
        try:
            payload, _ = ckdir.load_latest()
            lp = payload["loop"]
            if lp["b_acc"]:
                store.record_row(run_id, -1, lp["b_acc"], lp["b_loss"])
            for i, (acc, loss) in enumerate(zip(lp["R"], lp["L"], strict=True)):
                store.record_row(run_id, i, acc, loss)
            step = int(lp["step"])
            log = [r for r in read_eval_file(Path(checkpoint_dir) / EVAL_FILE) if r.step <= step]
            if log:
                store.record_eval(run_id, log)
            (Path(checkpoint_dir) / EVAL_FILE).unlink(missing_ok=True)
            (Path(checkpoint_dir) / WORKER_FILE).unlink(missing_ok=True)
        except Exception:  # best effort: the error below is what matters
            pass
    store.mark(run_id, "failed", error)
