"""``perennial run`` / ``resume`` inside ``torchrun``: one run trained by every rank, recorded by rank 0.

Rank 0 runs the ordinary stored path (``api.run`` / the body of ``api.resume``: store rows,
continual evaluation, checkpoints in ``<store>/checkpoints/<run_id>``); every other rank trains
the same run without the store, checkpointing into ``<store>/checkpoints/<run_id>/rank<r>``
(its RNG states and sharded replay buffers are its own). The training itself is ``fit`` with a
:class:`~perennial.train.distributed.Distributed` (see that module for the semantics).

A resume continues every rank from the newest checkpoint *step that all ranks completed* (a
rank killed while writing leaves its newest one incomplete), and is refused, on every rank
alike, when the world size differs from the one that wrote the checkpoints.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from perennial import api
from perennial.config import RunConfig, resolved
from perennial.errors import CheckpointError, DistributedError, PerennialError
from perennial.store import CheckpointDir, RunRecord, RunStore
from perennial.train import Callback, Progress
from perennial.train.distributed import Distributed, check_world


class RankLost(DistributedError):
    """Another rank of the run died (or its connection broke); the run can be resumed."""

    exit_code = 1


@contextlib.contextmanager
def _peers_lost(run_id: str, store_root: Path, world: int) -> Iterator[None]:
    """A collective that fails because a peer died is reported as such, with the resume command."""
    try:
        yield
    except RuntimeError as e:  # gloo/nccl: connection closed by peer, timeouts, ...
        if isinstance(e, PerennialError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RankLost(
            f"another process of the run stopped ({first}); continue with: "
            f"perennial resume {run_id} --store {store_root} --nproc {world}"
        ) from None


class _Placeholder(Callback):
    """Keeps the callback layout of non-main ranks fixed (they record nothing)."""


def _agree(dist: Distributed, ok: bool, message: str) -> None:
    """Raise ``message`` on every rank if any rank is not ``ok`` (so no rank waits forever)."""
    import torch.distributed as tdist

    flags: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(flags, (ok, message))
    bad = [m for f, m in flags if not f]
    if bad:
        raise DistributedError(bad[0])


def _rank_dir(store_root: Path, run_id: str, dist: Distributed, keep: int) -> CheckpointDir:
    root = store_root / "checkpoints" / run_id
    sub = dist.checkpoint_subdir()
    return CheckpointDir(root / sub if sub else root, keep=keep)


def _common_payload(ckdir: CheckpointDir, dist: Distributed) -> dict[str, Any] | None:
    """The checkpoint at the newest step every rank has a valid checkpoint of (None: none)."""
    import torch.distributed as tdist

    valid: dict[int, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in ckdir.list():
            try:
                CheckpointDir.read(c.path)
            except CheckpointError:
                continue
            valid[c.step] = c.path  # the newest write of a step wins
    gathered: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(gathered, sorted(valid))
    common = set(gathered[0]).intersection(*map(set, gathered[1:]))
    if not common:
        if any(gathered):
            raise DistributedError("the ranks have no checkpoint step in common; the run cannot be resumed")
        return None
    return CheckpointDir.read(valid[max(common)])


def run(
    cfg: RunConfig,
    store_root: Path,
    *,
    run_id: str | None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunRecord | None:
    """Train ``cfg`` data-parallel; rank 0 returns the run's record, the other ranks None."""
    dist = Distributed.from_env()
    if dist is None:
        raise DistributedError("not inside torchrun (RANK/WORLD_SIZE unset); use perennial run --nproc N")
    dist.init(cfg.train.device)
    try:
        cfg = resolved(cfg)
        run_id = dist.broadcast_object(run_id or api.new_run_id(cfg) if dist.is_main else None)
        assert run_id is not None
        if dist.is_main:
            store = RunStore(store_root)
            ok, msg = True, ""
            if not overwrite and store.exists(run_id):
                ok, msg = False, f"run {run_id!r} already exists in {store_root}; choose another --run-id"
            _agree(dist, ok, msg)
            with _peers_lost(run_id, store_root, dist.world_size):
                return api.run(cfg, store=store, run_id=run_id, progress=progress, overwrite=overwrite, dist=dist)
        _agree(dist, True, "")
        ckdir = _rank_dir(store_root, run_id, dist, cfg.checkpoint.keep)
        ckdir.clear()
        with _peers_lost(run_id, store_root, dist.world_size):
            _train_other_rank(cfg, run_id, ckdir, None, dist)
        return None
    finally:
        dist.close()


def resume(store_root: Path, run_id: str, *, progress: Progress | None = None) -> RunRecord | None:
    """Continue a data-parallel run with the same world size; rank 0 returns its record."""
    dist = Distributed.from_env()
    if dist is None:
        raise DistributedError("not inside torchrun (RANK/WORLD_SIZE unset); use perennial resume RUN_ID --nproc N")
    dist.init()
    try:
        config: Any = None
        problem = ""
        if dist.is_main:
            try:
                rec = RunStore(store_root).get(run_id)
                if rec.status == "finished":
                    problem = f"run {run_id!r} already finished; see: perennial show {run_id}"
                config = rec.config
            except PerennialError as e:
                problem = str(e)
        config, problem = dist.broadcast_object((config, problem))
        if problem:
            raise CheckpointError(problem)
        try:
            cfg = RunConfig.model_validate(config)
        except ValidationError as e:
            raise CheckpointError(f"run {run_id!r} has a stored config this perennial cannot read: {e}") from None
        ckdir = _rank_dir(store_root, run_id, dist, cfg.checkpoint.keep)
        payload = _common_payload(ckdir, dist)
        ok, msg = True, ""
        if payload is not None:
            try:
                check_world(payload, dist)
                api.check_identity(payload.get("meta"), api._identity(cfg, run_id))
            except PerennialError as e:
                ok, msg = False, str(e)
        _agree(dist, ok, msg)
        if not dist.is_main:
            with _peers_lost(run_id, store_root, dist.world_size):
                _train_other_rank(cfg, run_id, ckdir, payload, dist)
            return None
        store = RunStore(store_root)
        stream, strategy, model = api.build(cfg)
        store.mark(run_id, "running", None)
        with _peers_lost(run_id, store_root, dist.world_size):
            rec = api._fit_in_store(
                cfg, store, run_id, stream, strategy, model, ckdir, payload, progress, (), dist=dist
            )
        rec.notes = [
            f"resumed on {dist.world_size} processes from step {payload['loop']['step']}"
            if payload
            else "restarted from the beginning (no checkpoint yet)"
        ]
        return rec
    finally:
        dist.close()


def _train_other_rank(
    cfg: RunConfig, run_id: str, ckdir: CheckpointDir, payload: dict[str, Any] | None, dist: Distributed
) -> None:
    stream, strategy, model = api.build(cfg)
    # the same callback layout as rank 0's stored run (StoreRecorder [+ evaluator]) is not needed:
    # each rank resumes from its own checkpoints
    checkpointer = api.RunCheckpointer(ckdir, cfg.checkpoint.every, api._identity(cfg, run_id))
    with api.stop_on_signals() as should_stop:
        api._fit(
            cfg, model, stream, strategy, [_Placeholder()], None,
            checkpointer=checkpointer, resume=payload, should_stop=should_stop, dist=dist,
        )  # fmt: skip
    if not cfg.checkpoint.keep_after_finish:
        ckdir.clear()
