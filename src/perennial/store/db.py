"""The run store: one SQLite database (WAL mode) per store directory.

Every run's config, seed, versions, accuracy matrix rows, metrics and timing are written as
soon as they are produced, each in its own short transaction, so that a crash or a kill
keeps everything already measured. Several processes may write to one store at once: WAL
lets readers and a writer work together, and writers wait (``busy_timeout``) and retry.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from perennial.errors import CheckpointError, StoreError
from perennial.evaluation.continual import EvalRecord, summarize_log
from perennial.store.checkpoints import CheckpointDir, atomic_write

T = TypeVar("T")
SCHEMA_VERSION = 1
DB_NAME = "runs.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    scenario TEXT NOT NULL,
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    n_experiences INTEGER NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    metrics TEXT,
    seconds REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    row INTEGER NOT NULL,          -- experience trained (-1: the initial model)
    col INTEGER NOT NULL,          -- experience evaluated
    acc REAL NOT NULL,
    loss REAL,
    PRIMARY KEY (run_id, row, col)
);
CREATE INDEX IF NOT EXISTS runs_by_group ON runs (benchmark, scenario, strategy);
CREATE TABLE IF NOT EXISTS eval_log (  -- continual evaluation: one row per (step, evaluated experience)
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,         -- optimizer steps taken so far in the run
    exp_trained INTEGER NOT NULL,  -- experience being trained
    exp_eval INTEGER NOT NULL,     -- experience evaluated
    acc REAL NOT NULL,
    loss REAL,
    grid INTEGER NOT NULL DEFAULT 1,  -- 1: regular schedule; 0: extra point for the learning curve area
    PRIMARY KEY (run_id, step, exp_trained, exp_eval)
);
CREATE TABLE IF NOT EXISTS model_log (  -- the same for the working model and its slow copies (timescales)
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    exp_trained INTEGER NOT NULL,
    exp_eval INTEGER NOT NULL,
    model TEXT NOT NULL,           -- "model" (the working model) or a teacher's name
    acc REAL NOT NULL,
    loss REAL,
    PRIMARY KEY (run_id, step, exp_trained, exp_eval, model)
);
CREATE TABLE IF NOT EXISTS experiences (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    classes TEXT NOT NULL,         -- JSON list of class indices
    PRIMARY KEY (run_id, idx)
);
"""


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    return x


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def dumps(x: Any) -> str:
    """JSON with NaN/inf written as null (valid JSON for every reader)."""
    return json.dumps(_finite_or_none(x), sort_keys=True)


#: what the numbers of a run summary (``--json``) are measured in
SUMMARY_UNITS = {
    "accuracy": "fraction (0-1): accuracy_matrix, random_init_acc and the accuracy metrics (acc, forgetting, "
    "bwt, fwt, ...); the tables show them in %",
    "loss": "nats (per token for language models)",
    "seconds": "wall-clock seconds; train_seconds/eval_seconds: lists, one per experience",
}


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise StoreError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    return run_id


@dataclass
class RunRecord:
    run_id: str
    status: str
    benchmark: str
    scenario: str
    strategy: str
    seed: int
    n_experiences: int
    created: float
    updated: float
    config: dict[str, Any]
    versions: dict[str, Any]
    metrics: dict[str, Any] | None
    seconds: float | None
    error: str | None
    accuracy_matrix: list[list[float | None]] = field(default_factory=list)  # None: not measured
    loss_matrix: list[list[float | None]] = field(default_factory=list)
    random_init_acc: list[float] = field(default_factory=list)
    random_init_loss: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. warnings from a resume (not stored)
    experience_names: list[str] = field(default_factory=list)
    eval_log: list[EvalRecord] = field(default_factory=list)  # continual evaluation (empty: off)
    model_log: list[EvalRecord] = field(default_factory=list)  # the model and its slow copies (timescales)

    def continual_metrics(self) -> dict[str, Any]:
        """Metrics of the per-step evaluation log (empty when there is none), with the run's
        own window and LCA beta (``eval.window``, ``eval.lca_beta``)."""
        if not self.eval_log:
            return {}
        ev = self.config.get("eval") or {}
        return summarize_log(self.eval_log, window=ev.get("window", 10), lca_beta=ev.get("lca_beta", 10))

    def summary(self) -> dict[str, Any]:
        """The run summary written by ``--json`` (same keys for fresh and stored runs)."""
        m = self.metrics or {}
        return _finite_or_none(
            {
                "units": SUMMARY_UNITS,
                "run_id": self.run_id,
                "status": self.status,
                "benchmark": self.benchmark,
                "scenario": self.scenario,
                "strategy": self.strategy,
                "seed": self.seed,
                "accuracy_matrix": self.accuracy_matrix,
                "loss_matrix": self.loss_matrix,
                "random_init_acc": self.random_init_acc,
                "random_init_loss": self.random_init_loss,
                "metrics": {**(self.metrics or {}), **self.continual_metrics()},
                "experience_names": self.experience_names,
                "seconds": self.seconds,
                "train_seconds": m.get("experience_train_seconds", []),
                "eval_seconds": m.get("experience_eval_seconds", []),
                "config": self.config,
                "versions": self.versions,
            }
        )


class EvalLogWriter:
    """Writes continual-evaluation rows as they are measured, one short transaction each.

    Every evaluation during training (every few steps) becomes one transaction, so it keeps one
    connection open for the run, with ``synchronous=NORMAL``: a commit then costs well under a
    millisecond instead of a disk flush (opening and closing a connection per write makes
    SQLite checkpoint the WAL with a flush every time). Committed rows survive a crash or kill
    of the process (they are in the WAL); the next fully synchronous commit of the store (e.g.
    the accuracy-matrix row at the end of the experience) makes them safe from power loss too.
    """

    SQL = (
        "INSERT OR REPLACE INTO eval_log (run_id, step, exp_trained, exp_eval, acc, loss, grid) VALUES (?,?,?,?,?,?,?)"
    )
    MODEL_SQL = "INSERT OR REPLACE INTO model_log (run_id, step, exp_trained, exp_eval, model, acc, loss) VALUES (?,?,?,?,?,?,?)"

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id
        self._con: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                con = sqlite3.connect(self.store.path, timeout=self.store.timeout, isolation_level=None)
            except sqlite3.Error as e:
                raise StoreError(f"cannot open the run store {self.store.path}: {e}") from None
            con.execute(f"PRAGMA busy_timeout={int(self.store.timeout * 1000)}")
            con.execute("PRAGMA synchronous=NORMAL")
            self._con = con
        return self._con

    def __call__(self, records: Sequence[EvalRecord]) -> None:
        def loss(r: EvalRecord) -> float | None:
            return None if r.loss is None or not math.isfinite(r.loss) else float(r.loss)

        rows = [
            (self.run_id, int(r.step), int(r.exp_trained), int(r.exp_eval), float(r.acc), loss(r), int(bool(r.grid)))
            for r in records
            if not r.model
        ]
        model_rows = [
            (self.run_id, int(r.step), int(r.exp_trained), int(r.exp_eval), r.model, float(r.acc), loss(r))
            for r in records
            if r.model
        ]
        if not rows and not model_rows:
            return

        def go() -> None:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(self.SQL, rows)
                con.executemany(self.MODEL_SQL, model_rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

        self.store._retry(go)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> EvalLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunStore:
    """A directory holding ``runs.sqlite`` (and, later, checkpoints)."""

    def __init__(self, root: str | os.PathLike[str] = "perennial-runs", *, timeout: float = 60.0):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store directory {self.root}: {e}; pass --store DIR") from None
        self.path = self.root / DB_NAME
        self.timeout = timeout
        self._check_file()
        self._retry(self._init_schema)

    def _check_file(self) -> None:
        """A damaged ``runs.sqlite`` (empty, truncated, not a database) is reported, never
        silently replaced by an empty store; an empty file with nothing saved beside it
        (a store created and killed before its first write) is initialised."""
        from perennial.store.doctor import db_file_problem, rebuild_hint, saved_files

        problem = db_file_problem(self.path)
        if problem is None:
            return
        saved = saved_files(self.root)
        if problem.endswith("is empty (0 bytes)") and not saved:
            return
        held = f"; {len(saved)} checkpoint/model files remain beside it" if saved else ""
        raise StoreError(
            f"the run store is damaged: {problem}{held}; rebuild what the checkpoints hold with: "
            f"{rebuild_hint(self.root)} (see: perennial doctor --store {self.root})"
        )

    # -------------------------------------------------------------- plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the run store {self.path}: {e}") from None
        try:
            con.execute("PRAGMA foreign_keys=ON")
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            yield con
        finally:
            con.close()

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; on 'database is locked/busy' wait and retry until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                msg = str(e).lower()
                if ("locked" in msg or "busy" in msg) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise StoreError(f"run store {self.path}: {e}") from None
            except sqlite3.DatabaseError as e:
                raise StoreError(
                    f"run store {self.path} is damaged ({e}); check it with: perennial doctor --store {self.root}; "
                    f"rebuild what the checkpoints hold with: perennial doctor --store {self.root} --rebuild"
                ) from None

    def _write(self, sql_batches: list[tuple[str, tuple[Any, ...] | list[tuple[Any, ...]]]]) -> None:
        def go() -> None:
            with self._connect() as con:
                con.execute("BEGIN IMMEDIATE")
                try:
                    for sql, args in sql_batches:
                        if isinstance(args, list):
                            con.executemany(sql, args)
                        else:
                            con.execute(sql, args)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

        self._retry(go)

    def _init_schema(self) -> None:
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":  # e.g. network file systems: still correct, just less concurrent
                con.execute("PRAGMA journal_mode=DELETE")
            con.executescript(SCHEMA)
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {row[0]}, newer than this perennial "
                    f"understands ({SCHEMA_VERSION}); upgrade perennial"
                )

    def checkpoints(self, run_id: str, keep: int = 3) -> CheckpointDir:
        """The checkpoint directory of ``run_id`` (``<store>/checkpoints/<run_id>``)."""
        check_run_id(run_id)
        return CheckpointDir(self.root / "checkpoints" / run_id, keep=keep)

    # ---------------------------------------------------------------- writes
    def create_run(
        self,
        run_id: str,
        *,
        benchmark: str,
        scenario: str,
        strategy: str,
        seed: int,
        n_experiences: int,
        config: dict[str, Any],
        versions: dict[str, Any],
        overwrite: bool = False,
    ) -> None:
        check_run_id(run_id)
        if not overwrite and self.exists(run_id):
            raise StoreError(f"run {run_id!r} already exists in {self.root}; choose another --run-id")
        now = time.time()
        self._write(
            [
                ("DELETE FROM runs WHERE run_id=?", (run_id,)),
                (
                    "INSERT INTO runs (run_id, created, updated, status, benchmark, scenario, strategy, seed,"
                    " n_experiences, config, versions) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        now,
                        now,
                        "running",
                        benchmark,
                        scenario,
                        strategy,
                        seed,
                        n_experiences,
                        dumps(config),
                        dumps(versions),
                    ),
                ),
            ]
        )

    def record_row(
        self, run_id: str, row: int, acc: Sequence[float | None], loss: Sequence[float | None] | None = None
    ) -> None:
        """Write one row of the accuracy matrix (``row=-1``: the initial model); cells that
        were not measured (``None``) are not stored and read back as ``None``."""
        losses = loss or [None] * len(acc)
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO results (run_id, row, col, acc, loss) VALUES (?,?,?,?,?)",
                    [
                        (run_id, row, j, float(a), None if lo is None else float(lo))
                        for j, (a, lo) in enumerate(zip(acc, losses, strict=True))
                        if a is not None
                    ],
                ),
                ("UPDATE runs SET updated=? WHERE run_id=?", (time.time(), run_id)),
            ]
        )

    def record_experiences(self, run_id: str, names: list[str], classes: list[list[int]]) -> None:
        """The stream's experience names and classes (for tables and plots)."""
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO experiences (run_id, idx, name, classes) VALUES (?,?,?,?)",
                    [
                        (run_id, i, n, json.dumps([int(c) for c in cs]))
                        for i, (n, cs) in enumerate(zip(names, classes, strict=True))
                    ],
                )
            ]
        )

    def record_eval(self, run_id: str, records: Sequence[EvalRecord]) -> None:
        """Append rows of the continual-evaluation log in one transaction (a row measured again
        at the same step, trained and evaluated experience replaces the old one). For many
        small writes during a run, :meth:`eval_writer` is much cheaper."""
        with self.eval_writer(run_id) as write:
            write(records)

    def eval_writer(self, run_id: str) -> EvalLogWriter:
        """A writer of ``run_id``'s eval log over one connection kept open (close it, or use ``with``)."""
        return EvalLogWriter(self, run_id)

    def delete_eval_after(self, run_id: str, step: int) -> int:
        """Remove continual-evaluation rows measured after ``step`` (rows at ``step`` stay);
        for a run resumed from a checkpoint taken at ``step``. Returns the rows removed."""
        removed = [0]

        def go() -> None:
            with self._connect() as con:
                con.execute("BEGIN IMMEDIATE")
                try:
                    cur = con.execute("DELETE FROM eval_log WHERE run_id=? AND step>?", (run_id, int(step)))
                    removed[0] = cur.rowcount
                    con.execute("DELETE FROM model_log WHERE run_id=? AND step>?", (run_id, int(step)))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

        self._retry(go)
        return removed[0]

    def finish_run(self, run_id: str, metrics: dict[str, Any], seconds: float) -> None:
        self._write(
            [
                (
                    "UPDATE runs SET status='finished', metrics=?, seconds=?, updated=?, error=NULL WHERE run_id=?",
                    (dumps(metrics), seconds, time.time(), run_id),
                )
            ]
        )

    def mark(self, run_id: str, status: str, error: str | None = None, metrics: dict[str, Any] | None = None) -> None:
        """Set a run's status (``failed``, ``interrupted``, ...) keeping what it measured."""
        self._write(
            [
                (
                    "UPDATE runs SET status=?, error=?, metrics=COALESCE(?, metrics), updated=? WHERE run_id=?",
                    (status, error, dumps(metrics) if metrics is not None else None, time.time(), run_id),
                )
            ]
        )

    def delete(self, run_id: str) -> None:
        self._write(
            [
                ("DELETE FROM results WHERE run_id=?", (run_id,)),
                ("DELETE FROM eval_log WHERE run_id=?", (run_id,)),
                ("DELETE FROM model_log WHERE run_id=?", (run_id,)),
                ("DELETE FROM experiences WHERE run_id=?", (run_id,)),
                ("DELETE FROM runs WHERE run_id=?", (run_id,)),
            ]
        )
        self.delete_model(run_id)

    # ------------------------------------------------------- trained models
    # A finished run may keep its final weights (language-model runs do, for `perennial
    # generate`): <store>/models/<run_id>.pt, written atomically with a SHA-256 sidecar like
    # checkpoints and read back with torch.load(weights_only=True).
    def model_path(self, run_id: str) -> Path:
        check_run_id(run_id)
        return self.root / "models" / f"{run_id}.pt"

    def save_model(self, run_id: str, payload: dict[str, Any]) -> Path:
        """Save ``payload`` (the state dict plus how to rebuild the model: tensors, numbers, strings)."""
        import hashlib
        import io

        import torch

        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        path = self.model_path(run_id)
        atomic_write(path, data)
        atomic_write(path.with_name(path.name + ".sha256"), (hashlib.sha256(data).hexdigest() + "\n").encode())
        return path

    def load_model(self, run_id: str) -> dict[str, Any]:
        path = self.model_path(run_id)
        if not path.is_file():
            self.get(run_id)  # an unknown run id gets its own error (with suggestions)
            raise StoreError(
                f"run {run_id!r} has no saved model; language-model runs and adaptation source runs "
                "(-b mnist-c / digits-c) save theirs when they finish "
                f"(status here: {self.get(run_id).status})"
            )
        try:
            return CheckpointDir.read(path)
        except CheckpointError as e:
            raise StoreError(f"saved model of run {run_id!r} is unusable: {e}") from None

    def delete_model(self, run_id: str) -> None:
        path = self.model_path(run_id)
        for p in (path, path.with_name(path.name + ".sha256")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # ----------------------------------------------------------------- reads
    def exists(self, run_id: str) -> bool:
        def go() -> bool:
            with self._connect() as con:
                return con.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

        return self._retry(go)

    def get(self, run_id: str) -> RunRecord:
        def go() -> tuple[Any, list[Any]]:
            with self._connect() as con:
                con.row_factory = sqlite3.Row
                r = con.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
                rows = con.execute(
                    "SELECT row, col, acc, loss FROM results WHERE run_id=? ORDER BY row, col", (run_id,)
                ).fetchall()
                exps = con.execute("SELECT name FROM experiences WHERE run_id=? ORDER BY idx", (run_id,)).fetchall()
                return r, rows, exps

        r, rows, exps = self._retry(go)
        if r is None:
            close = self._close_ids(run_id)
            hint = f"; did you mean {', '.join(close)}?" if close else "; list runs with: perennial runs"
            raise StoreError(f"no run {run_id!r} in {self.root}{hint}")
        problem = self.row_problem(dict(r))
        bad = [x for x in rows if not _is_int(x["row"]) or not _is_int(x["col"]) or not _is_num(x["acc"])]
        if problem or bad:
            raise StoreError(
                f"run {run_id!r} is damaged in {self.path} ({problem or f'{len(bad)} malformed result rows'}); "
                f"other runs are unaffected; see: perennial doctor --store {self.root}"
            )
        rec = self._record(r)
        by_row: dict[int, dict[int, tuple[float, float | None]]] = {}
        for row in rows:
            by_row.setdefault(row["row"], {})[row["col"]] = (row["acc"], row["loss"] if _is_num(row["loss"]) else None)
        if -1 in by_row:
            rec.random_init_acc = [by_row[-1][j][0] for j in sorted(by_row[-1])]
            rec.random_init_loss = [by_row[-1][j][1] for j in sorted(by_row[-1])]
        n_cols = max([rec.n_experiences, *(c + 1 for cols in by_row.values() for c in cols)])
        for i in sorted(k for k in by_row if k >= 0):
            cols = by_row[i]
            # cells the evaluation policy did not measure were not stored: None
            rec.accuracy_matrix.append([cols[j][0] if j in cols else None for j in range(n_cols)])
            rec.loss_matrix.append([cols[j][1] if j in cols else None for j in range(n_cols)])
        rec.experience_names = [e["name"] for e in exps]
        rec.eval_log = self.eval_log(run_id)
        rec.model_log = self.model_log(run_id)
        return rec

    def eval_log(self, run_id: str) -> list[EvalRecord]:
        """The run's continual-evaluation log in time order (empty when it was off)."""

        def go() -> list[Any]:
            with self._connect() as con:
                return con.execute(
                    "SELECT step, exp_trained, exp_eval, acc, loss, grid FROM eval_log WHERE run_id=?"
                    " ORDER BY step, exp_trained, exp_eval",
                    (run_id,),
                ).fetchall()

        return [EvalRecord(s, t, e, a, lo, bool(g)) for s, t, e, a, lo, g in self._retry(go)]

    def model_log(self, run_id: str) -> list[EvalRecord]:
        """The per-step log of the working model and its slow copies (``EvalRecord.model``);
        empty unless the run kept slow copies and had continual evaluation on."""

        def go() -> list[Any]:
            with self._connect() as con:
                return con.execute(
                    "SELECT step, exp_trained, exp_eval, acc, loss, model FROM model_log WHERE run_id=?"
                    " ORDER BY step, exp_trained, exp_eval, model",
                    (run_id,),
                ).fetchall()

        return [EvalRecord(s, t, e, a, lo, True, m) for s, t, e, a, lo, m in self._retry(go)]

    def list(
        self,
        *,
        benchmark: str | None = None,
        strategy: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        where, args = [], []
        for col, val in (("benchmark", benchmark), ("strategy", strategy), ("status", status)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"

        def go() -> list[Any]:
            with self._connect() as con:
                con.row_factory = sqlite3.Row
                return con.execute(sql, args).fetchall()

        out = []
        for r in self._retry(go):
            problem = self.row_problem(dict(r))
            out.append(self._record(r) if problem is None else self._damaged(dict(r), problem))
        return out

    @staticmethod
    def row_problem(row: dict[str, Any]) -> str | None:
        """What is malformed in a ``runs`` row (None: sound); one bad row never breaks the others."""
        texts = ("run_id", "status", "benchmark", "scenario", "strategy")
        for k in texts:
            if not isinstance(row.get(k), str):
                return f"{k} is {row.get(k)!r}, not text"
        for k in ("seed", "n_experiences"):
            if not _is_int(row.get(k)):
                return f"{k} is {row.get(k)!r}, not an integer"
        for k in ("created", "updated"):
            if not _is_num(row.get(k)):
                return f"{k} is {row.get(k)!r}, not a time"
        if row.get("seconds") is not None and not _is_num(row.get("seconds")):
            return f"seconds is {row.get('seconds')!r}, not a number"
        for k, allow_null in (("config", False), ("versions", False), ("metrics", True)):
            v = row.get(k)
            if v is None and allow_null:
                continue
            try:
                parsed = json.loads(v) if isinstance(v, (str, bytes)) else None
            except (ValueError, RecursionError):
                return f"{k} is not valid JSON"
            if not isinstance(parsed, dict):
                return f"{k} is not a JSON object"
        return None

    @staticmethod
    def _damaged(row: dict[str, Any], problem: str) -> RunRecord:
        def text(k: str) -> str:
            return row[k] if isinstance(row.get(k), str) else "?"

        return RunRecord(
            run_id=str(row.get("run_id")),
            status="damaged",
            benchmark=text("benchmark"),
            scenario=text("scenario"),
            strategy=text("strategy"),
            seed=row["seed"] if _is_int(row.get("seed")) else -1,
            n_experiences=row["n_experiences"] if _is_int(row.get("n_experiences")) else 0,
            created=float(row["created"]) if _is_num(row.get("created")) else 0.0,
            updated=float(row["updated"]) if _is_num(row.get("updated")) else 0.0,
            config={},
            versions={},
            metrics=None,
            seconds=None,
            error=f"damaged row: {problem}",
        )

    def _close_ids(self, run_id: str) -> list[str]:
        import difflib

        def go() -> list[str]:
            with self._connect() as con:
                return [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()]

        return difflib.get_close_matches(run_id, self._retry(go), n=3, cutoff=0.6)

    @staticmethod
    def _record(r: sqlite3.Row) -> RunRecord:
        return RunRecord(
            run_id=r["run_id"],
            status=r["status"],
            benchmark=r["benchmark"],
            scenario=r["scenario"],
            strategy=r["strategy"],
            seed=r["seed"],
            n_experiences=r["n_experiences"],
            created=r["created"],
            updated=r["updated"],
            config=json.loads(r["config"]),
            versions=json.loads(r["versions"]),
            metrics=json.loads(r["metrics"]) if r["metrics"] else None,
            seconds=r["seconds"],
            error=r["error"],
        )
