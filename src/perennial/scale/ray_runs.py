"""Many runs as Ray tasks; the driver alone writes the store.

``RayPool(workers=N).run_all(jobs, store, on_result)`` submits each ``(label, config)`` as one
Ray task running :func:`perennial.scale.worker.execute`, and as results arrive writes them
into the SQLite store (workers never open it) and calls ``on_result(label, record)`` (the CLI
prints its ``[k/N]`` line). The records come back in job order, so tables and JSON are the
same as the sequential path's.

Failures: a task that raises, or whose worker process dies (killed, out of memory, node lost),
is reported with its error and submitted again, up to ``retries`` times; the new attempt
continues from the run's last checkpoint in ``checkpoint_root/<run_id>`` (the store's own
checkpoint folder by default, so every local worker reaches it; on a cluster give a shared
filesystem path). Errors that are the input's fault (:class:`~perennial.errors.PerennialError`,
e.g. a bad config) are not retried. A run that fails for good is stored as ``failed`` with
its error and can be continued with ``perennial resume RUN_ID``; the other runs still finish.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perennial.config import RunConfig, resolved
from perennial.errors import DistributedError, PerennialError
from perennial.store import RunRecord, RunStore

INSTALL_HINT = "pip install 'perennial[ray]' (or: pip install 'ray[default]')"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the address, instead of hanging in ``ray.init``."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://head:10001)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise DistributedError(
            f"cannot reach the Ray cluster at {address!r} ({e}); start it (ray start --head), fix --ray-address / "
            "RAY_ADDRESS, or leave both unset to use a local Ray instance"
        ) from None


class RayPool:
    """Runs whole runs as Ray tasks (local Ray by default, ``address`` or ``RAY_ADDRESS`` for a cluster)."""

    def __init__(
        self,
        workers: int,
        *,
        address: str | None = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        retries: int = 2,
        checkpoint_root: str | Path | None = None,
        on_failure: Callable[[str, RunConfig, str, int, bool], None] | None = None,
    ):
        """``on_failure(label, cfg, error, attempt, will_retry)`` is told of every failed attempt."""
        problems = []
        if workers < 1:
            problems.append(f"--workers must be at least 1, got {workers} (1 runs in this process, N > 1 on Ray)")
        if cpus_per_run <= 0:
            problems.append(f"--cpus-per-run must be > 0, got {cpus_per_run}")
        if gpus_per_run < 0:
            problems.append(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        if retries < 0:
            problems.append(f"--retries must be >= 0, got {retries}")
        if problems:
            raise DistributedError("; ".join(problems))
        try:
            import ray
        except ImportError:
            raise DistributedError(f"--workers {workers} runs on Ray, which is not installed; {INSTALL_HINT}") from None
        self.ray = ray
        self.workers, self.cpus, self.gpus, self.retries = workers, cpus_per_run, gpus_per_run, retries
        self.checkpoint_root = None if checkpoint_root is None else Path(checkpoint_root)
        self.on_failure = on_failure
        self.failed: list[tuple[str, str, str]] = []  # (label, run id, error) of runs that failed for good
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            if self.address:
                _check_reachable(self.address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                kwargs["address"] = self.address
            else:  # a local instance for this command, sized to the requested parallelism
                kwargs.update(
                    num_cpus=max(1, round(workers * cpus_per_run)),
                    num_gpus=round(workers * gpus_per_run) if gpus_per_run else 0,
                    object_store_memory=256 * 2**20,
                )
            env = {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS") if k in os.environ}
            if env and not self.address:  # local workers see this checkout; cluster nodes have their own
                kwargs["runtime_env"] = {"env_vars": env}
            try:
                ray.init(**kwargs)
            except Exception as e:  # ConnectionError, RuntimeError, ... from ray
                raise DistributedError(
                    f"cannot start or join Ray ({'at ' + self.address if self.address else 'local'}): {e}"
                ) from None
            self._started = True

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checkpoint_dir(self, store: RunStore, run_id: str) -> str:
        if self.checkpoint_root is None:
            return str(store.checkpoints(run_id).root)
        return str(self.checkpoint_root / run_id)

    def run_all(
        self,
        jobs: Sequence[tuple[str, RunConfig]],
        store: RunStore,
        on_result: Callable[[str, RunRecord], None] | None = None,
        run_ids: Sequence[str] | None = None,
        keep_checkpoints: Sequence[bool] | None = None,
    ) -> list[tuple[int, RunRecord]]:
        """Run every job; ``(job index, record)`` in job order (runs that failed for good are
        left out and stored as failed, and listed in ``self.failed``). ``run_ids`` names the
        runs (default: new ids); a job whose ``keep_checkpoints`` entry is true continues from
        the checkpoints its run already has (an interrupted run of an idempotent compare)."""
        from perennial import api
        from perennial.scale.worker import execute, record_failure, write_result

        ray = self.ray
        remote = ray.remote(execute).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, retry_exceptions=False
        )
        threads = max(1, int(self.cpus))
        cfgs = [resolved(cfg) for _, cfg in jobs]
        from perennial.store import CheckpointDir

        ids = list(run_ids) if run_ids is not None else [api.new_run_id(c) for c in cfgs]
        keep = list(keep_checkpoints) if keep_checkpoints is not None else [False] * len(jobs)
        dirs = [self._checkpoint_dir(store, rid) for rid in ids]
        for d, k in zip(dirs, keep, strict=True):  # a fresh run never continues another run's files
            if not k:
                CheckpointDir(d).clear()
        pending: dict[Any, int] = {}
        attempts = [0] * len(jobs)
        # submit in job order, at most `workers` at a time (the rest wait in the driver, so the
        # order in which runs start is the sequential order)
        queue = list(range(len(jobs)))
        results: dict[int, RunRecord] = {}

        def submit(i: int) -> None:
            pending[remote.remote(cfgs[i], ids[i], dirs[i], threads=threads)] = i

        while queue and len(pending) < self.workers:
            submit(queue.pop(0))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            i = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as e:
                err = _error_text(e)
                attempts[i] += 1
                retry = attempts[i] <= self.retries and not _is_input_error(e)
                if self.on_failure:
                    self.on_failure(jobs[i][0], cfgs[i], err, attempts[i], retry)
                if retry:
                    submit(i)
                else:
                    record_failure(store, cfgs[i], ids[i], dirs[i], err)
                    self.failed.append((jobs[i][0], ids[i], err))
            else:
                res.record.notes = list(res.notes)
                if res.resumed_from:
                    res.record.notes.append(f"resumed from checkpoint {res.resumed_from} after a failed attempt")
                rec = write_result(store, res)
                rec.notes = res.record.notes
                results[i] = rec
                if on_result:
                    on_result(jobs[i][0], rec)
            while queue and len(pending) < self.workers:
                submit(queue.pop(0))
        return [(i, results[i]) for i in range(len(jobs)) if i in results]


def _cause(e: BaseException) -> BaseException:
    """The exception raised inside the task (Ray wraps it)."""
    inner = getattr(e, "cause", None)
    return inner if isinstance(inner, BaseException) else e


def _is_input_error(e: BaseException) -> bool:
    return isinstance(_cause(e), PerennialError)


def _error_text(e: BaseException) -> str:
    c = _cause(e)
    if c is not e:
        return f"{type(c).__name__}: {c}"
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0] if first else ''}".strip()
