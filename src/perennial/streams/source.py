"""Data sources behind one shape: a :class:`DiskImages` handle stands in for an input tensor.

In-memory data are tensors and batches are index slices of them (the fast path, the default
for data that fit). Data larger than memory live in an on-disk cache of uint8 rows
(:mod:`perennial.streams.images` writes it); a ``Split`` then holds a :class:`DiskImages`
instead of a tensor for ``x``. It answers the parts of the tensor interface that the library
uses on inputs (``len``, ``shape``, ``dtype``, ``device``, indexing by an int, a slice, an
index or a boolean mask, ``to``, ``detach``) and every index returns an ordinary CPU tensor.

Rows are read with ``os.pread`` rather than through ``mmap``: pages read that way stay in the
kernel's page cache (shared, reclaimable) and never count in the process's resident set, so
a 3 GB image set trains in a small, bounded RSS. Contiguous runs of rows (an evaluation
slice, a class's rows) are read in one call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


class DiskImages:
    """Rows ``rows`` of a raw uint8 file holding ``(n_total, *row_shape)`` values, C order."""

    dtype = torch.uint8
    device = torch.device("cpu")
    is_disk = True

    def __init__(self, path: str | Path, row_shape: Sequence[int], rows: np.ndarray, key: str = ""):
        self.path = str(path)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.row_bytes = int(np.prod(self.row_shape))
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.key = key  # content key of the cache file (identifies the data)
        self._fd: int | None = None
        self._pid = -1

    # ----------------------------------------------------------------- tensor-like
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.row_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def to(self, *args: Any, **kwargs: Any) -> DiskImages:
        """Stays on disk: batches move to the model's device when they are read."""
        return self

    def detach(self) -> DiskImages:
        return self

    def __repr__(self) -> str:
        return f"DiskImages({self.path!r}, rows={len(self.rows)}, row_shape={self.row_shape})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __getitem__(self, index: Any) -> Tensor:
        return self.read(self._select(index))

    def subset(self, index: Any) -> DiskImages:
        """A view of some rows (nothing is read)."""
        return DiskImages(self.path, self.row_shape, self._select(index), self.key)

    def materialize(self) -> Tensor:
        return self.read(self.rows)

    # ----------------------------------------------------------------- reading
    def _select(self, index: Any) -> np.ndarray:
        if isinstance(index, int):
            return self.rows[[index]]
        if isinstance(index, slice):
            return self.rows[index]
        idx = index.detach().cpu().numpy() if isinstance(index, Tensor) else np.asarray(index)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        return self.rows[idx.astype(np.int64, copy=False)]

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # one descriptor per process (DataLoader workers)
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = os.getpid()
        return self._fd

    def read(self, rows: np.ndarray) -> Tensor:
        """The values of file rows ``rows`` as a (len(rows), *row_shape) uint8 tensor."""
        n, rb = len(rows), self.row_bytes
        out = np.empty((n, rb), dtype=np.uint8)
        if n:
            fd = self._descriptor()
            order = np.argsort(rows, kind="stable")
            sr = rows[order]
            breaks = np.flatnonzero(np.diff(sr) != 1) + 1  # runs of consecutive rows
            starts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [n]))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                first, count = int(sr[a]), b - a
                buf = os.pread(fd, count * rb, first * rb)
                if len(buf) != count * rb:
                    raise OSError(f"{self.path} is shorter than expected; delete the cache folder and run again")
                out[order[a:b]] = np.frombuffer(buf, dtype=np.uint8).reshape(count, rb)
        return torch.from_numpy(out).view(n, *self.row_shape)

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass


def is_disk(x: object) -> bool:
    return isinstance(x, DiskImages)


def cat_inputs(xs: Sequence[Any]) -> Any:
    """``torch.cat`` for inputs that may be disk handles: handles of one file stay a handle."""
    if xs and all(isinstance(x, DiskImages) for x in xs) and len({x.path for x in xs}) == 1:
        first = xs[0]
        return DiskImages(first.path, first.row_shape, np.concatenate([x.rows for x in xs]), first.key)
    return torch.cat([x.materialize() if isinstance(x, DiskImages) else x for x in xs])
