"""Data-parallel training of one run over several processes (``torchrun``), wrapped around ``fit``.

Start it with ``torchrun --nproc-per-node N -m perennial run ...`` or ``perennial run ... --nproc N``
(which runs that torchrun command). gloo on the CPU, nccl when every rank has a GPU.

What each rank does (docs/scale-out.md has the full story):

- **Data**: every rank builds the same stream and draws the same shuffled order (same seed).
  Each global batch of ``train.batch_size`` samples is split into ``world_size`` disjoint
  shards, rank ``r`` training on the ``r``-th; gradients are averaged across ranks after
  every backward (one all-reduce of all gradients, flattened) before the strategy's gradient
  hook and the optimizer step. So a run with N ranks takes the same optimizer steps over the
  same global batches as one process with the same ``train.batch_size`` (the sum of float
  reductions differs, so numbers agree within noise, not bit for bit).
- **Model and optimizer** are identical on every rank (same initialisation, same averaged
  gradients); :func:`check_in_sync` verifies it at every experience boundary.
- **Strategy state** computed at experience boundaries from the whole experience (EWC and
  online-EWC Fisher information, MAS importance, the GEM/A-GEM memories, class statistics,
  LwF and EMA teachers) is computed by every rank from the same full data and the same
  weights, so it is *replicated* by construction and needs no reduction; SI's path integral
  uses the averaged gradients, so it is replicated too. :meth:`Distributed.check_in_sync`
  compares the weights across ranks at every experience boundary and stops a run whose ranks
  drifted; :meth:`Distributed.check_same` stops one whose ranks would take different numbers
  of steps. State filled from training batches (the buffers of replay, der/derpp, er-ace,
  ...) sees only the rank's shard: those buffers are *sharded* - each rank keeps its own
  buffer, filled from its shard, and replays from it into its shard of the batch; the union
  over ranks is a memory of ``N x buffer_size`` samples drawn from the whole stream.
- **Evaluation** runs on every rank (identical models give identical numbers); rank 0 alone
  writes the store, the continual-evaluation log and the checkpoints' shared part.
- **Checkpoints**: every rank saves its own payload (its RNG states and sharded buffers
  differ) into ``<checkpoint dir>/rank<r>`` (rank 0: the run's checkpoint folder itself),
  stamped with the world size; a resume with another world size is refused with an error
  naming both sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from perennial.errors import CheckpointError, DistributedError
from perennial.strategies.base import Context, Strategy


@dataclass
class Distributed:
    """This process's place in a data-parallel run (``rank`` of ``world_size``)."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env() -> Distributed | None:
        """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None outside it."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        try:
            rank, world, local = (
                int(os.environ["RANK"]),
                int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", 0)),
            )
        except ValueError:
            raise DistributedError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (set by torchrun)") from None
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
        return Distributed(rank, world, local)

    def init(self, device: str = "auto") -> str:
        """Join the process group (gloo on the CPU, nccl with GPUs); returns the device to train on."""
        import torch.distributed as dist

        use_cuda = (torch.cuda.is_available() and device in ("auto", "cuda")) or device.startswith("cuda")
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend=backend)
            except Exception as e:
                raise DistributedError(f"cannot join the {backend} process group: {e}") from None
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return "cpu"

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # -------------------------------------------------------------------- collectives
    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch's indices (a batch smaller than the world size
        gives its last sample to the ranks that would get none, so no rank has an empty batch)."""
        mine = idx[self.rank :: self.world_size]
        return mine if len(mine) else idx[-1:]

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` over ranks in place (one flattened all-reduce)."""
        import torch.distributed as dist

        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    def broadcast_object(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def check_same(self, value: int, what: str) -> None:
        """Every rank has the same ``value`` (else they would wait for each other forever)."""
        import torch.distributed as dist

        t = torch.tensor([value, -value], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise DistributedError(
                f"the ranks disagree on the {what} ({-int(t[1])} .. {int(t[0])}); this strategy's training data "
                "depend on rank-local state, so it cannot train data-parallel"
            )

    def check_in_sync(self, model: torch.nn.Module, what: str = "model") -> None:
        """Every rank holds the same weights (a checksum compared across ranks)."""
        import torch.distributed as dist

        with torch.no_grad():
            s = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).cpu()
        lo, hi = s.clone(), s.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if float(hi - lo) > 1e-6 * max(1.0, abs(float(s))):
            raise DistributedError(
                f"the ranks' {what} weights differ (checksums {float(lo)} .. {float(hi)}); a rank drifted"
            )

    def checkpoint_subdir(self) -> str | None:
        """Where this rank's checkpoints go inside the run's folder (None: the folder itself)."""
        return None if self.rank == 0 else f"rank{self.rank}"


def check_world(payload: dict[str, Any], dist: Distributed | None) -> None:
    """A checkpoint resumes only with the world size that wrote it (data order and sharded
    buffers depend on it)."""
    saved, now = int(payload.get("world_size", 1)), 1 if dist is None else dist.world_size
    if saved != now:
        how = "perennial resume RUN_ID" + (f" --nproc {saved}" if saved > 1 else " (without --nproc)")
        raise CheckpointError(
            f"checkpoint was written by a run on {saved} process(es), this resume has {now}; "
            f"resume with the same world size: {how}"
        )


class GradientAverage(Strategy):
    """Averages gradients over the ranks before any other gradient hook (composed first by
    :func:`data_parallel`); stateless, supports every scenario and stream kind."""

    name = "data-parallel"
    kinds = frozenset({"classification", "lm"})
    summary = "averages gradients across data-parallel ranks"
    dist: Distributed

    def before_step(self, ctx: Context) -> None:
        grads = [p.grad for p in ctx.model.parameters() if p.grad is not None]
        self.dist.all_reduce_mean_(grads)


def data_parallel(strategy: Strategy, dist: Distributed | None) -> Strategy:
    """``strategy`` with gradient averaging over ``dist``'s ranks composed in front (unchanged
    without ``dist`` or with one rank)."""
    if dist is None or dist.world_size == 1:
        return strategy
    from perennial.strategies.compose import compose

    return compose(GradientAverage(dist=dist), strategy)
