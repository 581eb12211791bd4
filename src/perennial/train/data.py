"""Batches of one epoch, in the order of a permutation: index slices, or DataLoader workers.

In-memory splits (the fast path) are sliced by index on the training device, exactly as the
loop always did. Splits whose inputs are a :class:`~perennial.streams.source.DiskImages`
handle are read by a ``torch.utils.data.DataLoader``: each item is one whole batch (the rows
of one slice of the permutation), read by ``workers`` processes ahead of the loop into
pinned memory (on CUDA) and moved to the device with ``non_blocking=True``; labels and task
ids stay on the device and are sliced there. The batches are the same, in the same order,
whatever the number of workers, so exact resume holds with workers > 0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from perennial.streams.core import Split
from perennial.streams.source import DiskImages


class _PermBatches(Dataset[Tensor]):
    """Item ``i``: the inputs of batch ``i`` of the permutation ``perm``."""

    def __init__(self, x: DiskImages, perm: Tensor, batch_size: int, shard: Shard | None = None):
        self.x, self.perm, self.batch_size, self.shard = x, perm.cpu(), batch_size, shard

    def __len__(self) -> int:
        return math.ceil(len(self.perm) / self.batch_size)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[_rows(self.perm, i, self.batch_size, self.shard)]


#: picks this process's part of a batch's indices (data-parallel ranks; see train.distributed)
Shard = Callable[[Tensor], Tensor]


def _rows(perm: Tensor, pos: int, batch_size: int, shard: Shard | None) -> Tensor:
    idx = perm[pos * batch_size : (pos + 1) * batch_size]
    return idx if shard is None else shard(idx)


def epoch_batches(
    data: Split,
    perm: Tensor,
    start: int,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    shard: Shard | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(x, y, t)`` of batches ``start, start + 1, ...`` of the epoch ordered by ``perm``
    (with ``shard``, this process's part of each batch)."""
    per_epoch = math.ceil(len(perm) / batch_size)
    if not isinstance(data.x, DiskImages):
        for pos in range(start, per_epoch):
            idx = _rows(perm, pos, batch_size, shard)
            yield data.x[idx], data.y[idx], data.t[idx]
        return
    loader = DataLoader(
        _PermBatches(data.x, perm, batch_size, shard),
        batch_size=None,
        sampler=range(start, per_epoch),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    for pos, x in zip(range(start, per_epoch), loader, strict=True):
        idx = _rows(perm, pos, batch_size, shard)
        yield x.to(device, non_blocking=True), data.y[idx], data.t[idx]


def fingerprint_inputs(x: Tensor | DiskImages) -> Tensor:
    """(N,) float64 per-row values for the loop's data fingerprint; disk rows by identity (the
    cache file is keyed by its content), without reading them."""
    if isinstance(x, DiskImages):
        return torch.from_numpy(x.rows).to(torch.float64) + float(zlib.crc32(x.key.encode()))
    n = x.shape[0]
    return x.reshape(n, -1).to(torch.float64).sum(1)
