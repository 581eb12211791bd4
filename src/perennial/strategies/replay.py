"""Experience replay (ER): mix data of earlier experiences into every batch.

Two modes:

- **buffer** (default): stored samples from a fixed-size buffer are appended to every batch
  (Chaudhry et al. 2019; Rolnick et al. 2019), drawn uniformly or by a power-law rehearsal
  schedule over the experiences' ages;
- **ratio** (``ratio`` set): compute-equivalent mixing as in continual pre-training of
  language models (Ibrahim et al. 2024): a share ``ratio`` of every batch is *replaced* by
  samples drawn uniformly from all earlier experiences' training data, so the batch size and
  the compute per step stay the same and replayed tokens replace new ones.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field, model_validator

from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Extras, Rehearsal, append_stored, index_by_age
from perennial.streams.core import Split

BUFFER_FIELDS = ("buffer_size", "policy", "buffer_policy", "replay_batch_size", "schedule", "schedule_alpha")


@register("replay")
class Replay(Rehearsal):
    """Experience replay with a fixed-size buffer (Chaudhry et al. 2019, "On tiny episodic
    memories in continual learning"; Rolnick et al. 2019), or compute-equivalent replay
    mixing of all earlier data (Ibrahim et al. 2024, "Simple and scalable strategies to
    continually pre-train large language models").

    Buffer mode: every step appends ``replay_batch_size`` samples drawn from the buffer to the
    batch (cross-entropy over the combined batch); after the step the new samples are offered
    to the buffer (``reservoir`` or ``class_balanced`` selection, see
    :class:`perennial.memory.Buffer`; with ``herding`` the experience is offered at its end).

    Rehearsal schedule: ``schedule="uniform"`` (default) draws stored samples uniformly (the
    current experience's included, as in ER). ``schedule="power"`` replays earlier
    experiences only: it draws an experience with probability proportional to
    ``age^-schedule_alpha`` (age 1 = the experience before the current one, 2 = the one before
    that, ...), then one of its stored samples uniformly. Recent experiences are revisited
    often and old ones with a power-law decaying probability, the shape of forgetting curves
    (Wixted & Ebbesen 1991) that spaced-rehearsal schedules follow (cf. Klasson et al. 2023,
    "Learn the time to learn: replay scheduling in continual learning"). ``schedule_alpha=0``
    gives every earlier experience the same share of the replay batch.

    Ratio mode (``ratio`` = r): in experience k > 0, rows ``[n - m, n)`` of each batch of n
    new samples are replaced by samples drawn uniformly from the union of the training data
    of experiences 0..k-1, with ``m`` chosen so that the replayed rows after s steps total
    ``round(r * n * s)`` (exactly r of the phase's rows, also when r * n is not an integer).
    The draws are a pure function of the run seed and the step (no state). A phase can set
    its own ratio (``train.phases[i].replay_ratio``). Put this strategy first in a composition.

    Defaults: 500 slots (50 per class on 10-class benchmarks, half of the 100/class of van de
    Ven et al. 2022, since our MNIST subset has 400 training images per class); a replay batch
    as large as the training batch (ER as in Chaudhry et al.). No ratio (buffer mode); Ibrahim
    et al. found 1-5% enough for a weak shift, ~25% for a strong one.

    Data-parallel (``--nproc N``): the buffer is *sharded*, not reduced: each rank fills its own
    buffer from its shard of every batch and replays from it (``N x buffer_size`` samples over
    all ranks; docs/scale-out.md). Ratio mode draws from the full earlier data on every rank.
    """

    summary = "experience replay from a reservoir, class-balanced or herding buffer (optional power-law schedule), or ratio mixing"
    kinds = frozenset({"classification", "lm"})
    boundary_free = True  # buffer mode with reservoir or class_balanced selection and uniform schedule

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )
    schedule: Literal["uniform", "power"] = Field(
        default="uniform", description="which stored samples to replay: uniform, or earlier experiences by age^-alpha"
    )
    schedule_alpha: float = Field(default=1.0, ge=0.0, description="power-law exponent of schedule=power")
    ratio: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="ratio mode: share of every batch replaced by samples of all earlier experiences (no buffer)",
    )

    @model_validator(mode="after")
    def _one_mode(self) -> Replay:
        both = sorted(set(BUFFER_FIELDS) & self.model_fields_set)
        if self.ratio is not None and both:
            raise ValueError(
                f"ratio mode replays all earlier data without a buffer; drop {', '.join(both)} or drop ratio"
            )
        return self

    def needs_boundaries(self) -> bool:
        # ratio mode and the power schedule read the experience index
        return self.ratio is not None or self.schedule == "power" or super().needs_boundaries()

    def setup(self, ctx: Context) -> None:
        if self.ratio is None:
            super().setup(ctx)

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        if self.ratio is not None:
            return self._mix(ctx, batch, float(ctx.phase.get("replay_ratio", self.ratio)))
        m = self.replay_batch_size or ctx.batch_size
        if self.schedule == "power":
            idx = index_by_age(self.buffer, m, ctx.exp_index, self.schedule_alpha)
        else:
            idx = self.buffer.sample_index(m)
        return append_stored(batch, self.buffer, idx)

    def after_step(self, ctx: Context, batch: Batch) -> None:
        if self.ratio is None:
            super().after_step(ctx, batch)

    def after_experience(self, ctx: Context) -> None:
        if self.ratio is None:
            super().after_experience(ctx)

    def step_extras(self, ctx: Context, new: Batch) -> Extras:
        return self._exp_tag(ctx, len(new))

    def experience_extras(self, ctx: Context, split: Split) -> Extras:
        return self._exp_tag(ctx, len(split))

    def _exp_tag(self, ctx: Context, n: int) -> Extras:
        if self.schedule != "power":
            return {}
        return {"exp": torch.full((n,), ctx.exp_index, dtype=torch.long)}

    # ------------------------------------------------------------ ratio mode
    def _mix(self, ctx: Context, batch: Batch, ratio: float) -> Batch:
        earlier = ctx.stream.experiences[: max(ctx.exp_index, 0)]
        n, k = batch.n_new, ctx.step_in_experience
        m = min(replayed_rows(ratio, n, k), n)
        if m == 0 or not earlier:
            return batch
        g = torch.Generator().manual_seed(ctx.seed_for("replay-mix", ctx.step))
        sizes = torch.tensor([len(e.train) for e in earlier])
        offsets = torch.cumsum(sizes, 0) - sizes  # first global index of each experience
        idx = torch.randint(int(sizes.sum()), (m,), generator=g)  # uniform over the union
        which = torch.bucketize(idx, offsets[1:], right=True)
        x, y, t = batch.x.clone(), batch.y.clone(), batch.t.clone()
        dev = x.device
        for d, e in enumerate(earlier):
            rows = (which == d).nonzero().squeeze(1)
            if rows.numel():
                local = (idx[rows] - offsets[d]).to(dev)
                at = (n - m + rows).to(dev)
                x[at], y[at], t[at] = e.train.x[local].to(x.dtype), e.train.y[local], e.train.t[local]
        return replace(batch, x=x, y=y, t=t, n_new=n - m)


def replayed_rows(ratio: float, n: int, k: int) -> int:
    """Rows to replace at step ``k`` of a phase with batches of ``n``: the replayed rows of
    steps 0..k total ``round(ratio * n * (k + 1))`` (error diffusion, halves rounded up)."""

    def total(steps: int) -> int:
        return math.floor(ratio * n * steps + 0.5)

    return total(k + 1) - total(k)
