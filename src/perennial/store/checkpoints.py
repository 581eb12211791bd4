"""Checkpoint files: atomic, checksummed, loaded without executing code.

Layout: ``<store>/checkpoints/<run_id>/ckpt-<step>.pt`` written with ``torch.save`` and a
sidecar ``ckpt-<step>.pt.sha256`` holding the SHA-256 of the file's bytes. Writing goes to a
temporary file that is fsynced and renamed into place (then the directory is fsynced), so a
crash leaves either the old set of checkpoints or the new one, never a half-written file
under a final name. Loading verifies the checksum *before* unpickling and unpickles with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from perennial.errors import CheckpointError

_NAME = re.compile(r"^ckpt-(\d{9})-(\d{4})\.pt$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + dir fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    seq: int


class CheckpointDir:
    """The checkpoints of one run: save (keeping the last ``keep``), list, load the latest valid."""

    def __init__(self, root: str | os.PathLike[str], keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def list(self) -> list[CheckpointInfo]:
        """Checkpoint files, oldest first (by step, then write sequence)."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append(CheckpointInfo(p, int(m.group(1)), int(m.group(2))))
        return sorted(out, key=lambda c: (c.step, c.seq))

    def save(self, payload: dict[str, Any], step: int) -> Path:
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        existing = self.list()
        seq = max((c.seq for c in existing if c.step == step), default=-1) + 1
        path = self.root / f"ckpt-{step:09d}-{seq:04d}.pt"
        digest = hashlib.sha256(data).hexdigest()
        atomic_write(path, data)
        atomic_write(path.with_name(path.name + ".sha256"), (digest + "\n").encode())
        for old in self.list()[: -self.keep]:
            self._remove(old.path)
        return path

    @staticmethod
    def _remove(path: Path) -> None:
        for p in (path, path.with_name(path.name + ".sha256")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def clear(self) -> None:
        for c in self.list():
            self._remove(c.path)
        try:
            self.root.rmdir()
        except OSError:
            pass

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """Verify and load one checkpoint file; raise :class:`CheckpointError` when it is not valid."""
        from perennial.files import file_kind_problem

        side = path.with_name(path.name + ".sha256")
        kind = file_kind_problem(path)  # a FIFO or device in place of a checkpoint must not hang the read
        if kind:
            raise CheckpointError(f"{path.name}: {kind}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{path.name}: cannot read ({e})") from None
        try:
            expected = side.read_text().strip()
        except OSError:
            raise CheckpointError(f"{path.name}: its checksum file is missing (the write did not finish)") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CheckpointError(f"{path.name}: checksum mismatch (truncated or corrupted file)")
        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as e:
            raise CheckpointError(f"{path.name}: not a loadable weights-only checkpoint ({type(e).__name__})") from None
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path.name}: not a checkpoint (top level is {type(payload).__name__})")
        return payload

    def load_latest(self) -> tuple[dict[str, Any], Path]:
        """The newest valid checkpoint; invalid newer ones are skipped with a warning."""
        found = self.list()
        if not found:
            raise CheckpointError(f"no checkpoint in {self.root}")
        problems = []
        for c in reversed(found):
            try:
                return self.read(c.path), c.path
            except CheckpointError as e:
                problems.append(str(e))
                warnings.warn(f"skipping invalid checkpoint: {e}; falling back to an older one", stacklevel=2)
        raise CheckpointError("no valid checkpoint left:\n" + "\n".join(f"  - {p}" for p in problems))
