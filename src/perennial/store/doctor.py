"""Health of a run store: the database file, its rows, checkpoints and saved models.

``perennial doctor`` runs :func:`diagnose` (read-only: SQLite ``PRAGMA integrity_check``,
every run row parsed, every checkpoint and model file's SHA-256 verified). A store whose
``runs.sqlite`` is empty, truncated or not a database while checkpoints exist is *damaged*,
never a store with "no runs"; ``perennial doctor --rebuild`` (:func:`rebuild`) moves the
damaged file aside and re-creates one run per checkpoint directory from what its newest
valid checkpoint holds (config, experiences, accuracy and loss rows so far), as an
``interrupted`` run that ``perennial resume`` continues.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perennial.errors import CheckpointError

SQLITE_MAGIC = b"SQLite format 3\x00"
DB_NAME = "runs.sqlite"  # the same name as perennial.store.db.DB_NAME (kept free of that import)


def saved_files(root: Path) -> list[Path]:
    """Checkpoint and model files under a store directory (what a damaged database leaves)."""
    out: list[Path] = []
    for sub in ("checkpoints", "models"):
        d = root / sub
        if d.is_dir():
            out += [p for p in d.rglob("*.pt") if not p.is_symlink()]
    return sorted(out)


def db_file_problem(path: Path) -> str | None:
    """What is wrong with a ``runs.sqlite`` file judged from its size and header (None: looks sound).

    Only the first 100 bytes are read; a missing file is not a problem (a new store)."""
    from perennial.files import file_kind_problem

    if not os.path.lexists(path):
        return None
    kind = file_kind_problem(path)
    if kind:
        return kind
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(100)
    if not head.startswith(SQLITE_MAGIC):
        return f"{path} is not a database (no SQLite header)"
    if len(head) < 100:
        return f"{path} is truncated ({size} bytes, shorter than an SQLite header)"
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    n_pages = struct.unpack(">I", head[28:32])[0]
    wal = path.with_name(path.name + "-wal")
    wal_empty = not wal.exists() or wal.stat().st_size == 0
    if page_size and (size % page_size or (wal_empty and n_pages and size < n_pages * page_size)):
        return f"{path} is truncated ({size:,} bytes; its header declares {n_pages} pages of {page_size} bytes)"
    return None


def rebuild_hint(root: Path) -> str:
    return f"perennial doctor --store {root} --rebuild"


@dataclass
class Diagnosis:
    store: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def _verify(path: Path) -> str | None:
    from perennial.store.checkpoints import CheckpointDir

    try:
        CheckpointDir.read(path)
    except CheckpointError as e:
        return str(e)
    return None


def diagnose(root: str | os.PathLike[str]) -> Diagnosis:
    """Check a store without changing it; every problem found is listed (see module docstring)."""
    root = Path(root)
    d = Diagnosis(root)
    if not root.is_dir():
        d.problems.append(f"{root} is not a store directory")
        return d
    db = root / DB_NAME
    files = saved_files(root)
    bad_file = db_file_problem(db)
    run_ids: set[str] = set()
    if bad_file:
        d.problems.append(f"{bad_file}; rebuild what the checkpoints hold with: {rebuild_hint(root)}")
    elif not db.exists():
        d.notes.append(f"no {DB_NAME} yet (an empty store)")
        if files:
            d.problems.append(
                f"{DB_NAME} is missing but {len(files)} checkpoint/model files exist; rebuild with: {rebuild_hint(root)}"
            )
    else:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                result = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
                if result != ["ok"]:
                    d.problems += [f"integrity_check: {r}" for r in result[:20]]
                else:
                    d.notes.append("integrity_check: ok")
                rows = con.execute("SELECT * FROM runs").fetchall()
                cols = [c[0] for c in con.execute("SELECT * FROM runs LIMIT 0").description]
            finally:
                con.close()
        except sqlite3.Error as e:
            d.problems.append(f"{db} cannot be read ({e}); rebuild with: {rebuild_hint(root)}")
            rows, cols = [], []
        from perennial.store.db import RunStore

        for raw in rows:
            row = dict(zip(cols, raw, strict=False))
            run_ids.add(str(row.get("run_id")))
            problem = RunStore.row_problem(row)
            if problem:
                d.problems.append(f"run {row.get('run_id')!r}: damaged row ({problem})")
        d.notes.append(f"{len(rows)} runs")
    n_ok = 0
    for p in files:
        problem = _verify(p)
        if problem:
            d.problems.append(f"{p.relative_to(root)}: {problem.split(': ', 1)[-1]}")
        else:
            n_ok += 1
    d.notes.append(f"{n_ok} of {len(files)} checkpoint/model files verified (SHA-256)")
    ck = root / "checkpoints"
    if run_ids and ck.is_dir():
        orphans = sorted(p.name for p in ck.iterdir() if p.is_dir() and p.name not in run_ids and any(p.iterdir()))
        if orphans:
            d.problems.append(
                f"checkpoints of runs missing from the database: {', '.join(orphans)}; rebuild with: "
                f"{rebuild_hint(root)}"
            )
    return d


def rebuild(root: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Move a damaged ``runs.sqlite`` aside and re-create runs from their checkpoints.

    Returns ``(restored run ids, problems)``. A sound database is kept: only runs missing
    from it are added. Runs whose checkpoints were deleted when they finished (the default)
    cannot be restored; a checkpoint written before this feature (no run description in
    it) is reported.
    """
    from perennial.store.checkpoints import CheckpointDir
    from perennial.store.db import RunStore

    root = Path(root)
    db = root / DB_NAME
    problems: list[str] = []
    if db_file_problem(db) or _unreadable(db):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            p = db.with_name(db.name + suffix)
            if os.path.lexists(p):
                p.rename(p.with_name(f"{p.name}.damaged-{stamp}"))
    store = RunStore(root)
    restored: list[str] = []
    ck = root / "checkpoints"
    dirs = sorted(p for p in ck.iterdir() if p.is_dir()) if ck.is_dir() else []
    for d in dirs:
        run_id = d.name
        if store.exists(run_id):
            continue
        try:
            payload, _ = CheckpointDir(d).load_latest()
        except CheckpointError as e:
            problems.append(f"{run_id}: {e}")
            continue
        info = (payload.get("meta") or {}).get("run") if isinstance(payload.get("meta"), dict) else None
        if not isinstance(info, dict):
            problems.append(f"{run_id}: its checkpoints predate run descriptions; it cannot be rebuilt")
            continue
        try:
            _restore_run(store, run_id, info, payload)
        except Exception as e:  # a malformed description: report, go on with the others
            problems.append(f"{run_id}: cannot rebuild ({type(e).__name__}: {e})")
            continue
        restored.append(run_id)
    return restored, problems


def _unreadable(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("PRAGMA quick_check").fetchone()[0] != "ok"
        finally:
            con.close()
    except sqlite3.Error:
        return True


def _restore_run(store: Any, run_id: str, info: dict[str, Any], payload: dict[str, Any]) -> None:
    cfg = info["config"]
    loop = payload.get("loop", {})
    store.create_run(
        run_id,
        benchmark=cfg["benchmark"]["name"],
        scenario=info["scenario"],
        strategy=cfg["strategy"]["name"],
        seed=int(cfg["seed"]),
        n_experiences=int(info["n_experiences"]),
        config=cfg,
        versions=info.get("versions", {}),
    )
    store.record_experiences(run_id, [str(n) for n in info["names"]], [list(c) for c in info["classes"]])
    if loop.get("b_acc"):
        store.record_row(run_id, -1, list(loop["b_acc"]), list(loop.get("b_loss") or []) or None)
    for i, row in enumerate(loop.get("R", [])):
        losses = loop.get("L", [])
        store.record_row(run_id, i, list(row), list(losses[i]) if i < len(losses) else None)
    store.mark(run_id, "interrupted", f"rebuilt from checkpoints; continue with: perennial resume {run_id}")


def describe(d: Diagnosis) -> str:
    lines = [f"store {d.store}: {'healthy' if d.healthy else f'{len(d.problems)} problem(s)'}"]
    lines += [f"  ok: {n}" for n in d.notes]
    lines += [f"  PROBLEM: {p}" for p in d.problems]
    return "\n".join(lines)


def dumps_report(d: Diagnosis) -> str:
    return json.dumps({"store": str(d.store), "healthy": d.healthy, "problems": d.problems, "notes": d.notes})
