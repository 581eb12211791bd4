"""Experience replay (ER): mix stored samples of earlier experiences into every batch."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Extras, Rehearsal, sample_by_age
from perennial.streams.core import Split


@register("replay")
class Replay(Rehearsal):
    """Experience replay with a fixed-size buffer (Chaudhry et al. 2019, "On tiny episodic
    memories in continual learning"; Rolnick et al. 2019).

    Every step appends ``replay_batch_size`` samples drawn from the buffer to the batch
    (cross-entropy over the combined batch); after the step the new samples are offered to
    the buffer (``reservoir`` or ``class_balanced`` selection, see
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

    Defaults: 500 slots (50 per class on 10-class benchmarks, half of the 100/class of van de
    Ven et al. 2022, since our MNIST subset has 400 training images per class); a replay batch
    as large as the training batch (ER as in Chaudhry et al.).
    """

    summary = "experience replay from a reservoir, class-balanced or herding buffer; optional power-law schedule"

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )
    schedule: Literal["uniform", "power"] = Field(
        default="uniform", description="which stored samples to replay: uniform, or earlier experiences by age^-alpha"
    )
    schedule_alpha: float = Field(default=1.0, ge=0.0, description="power-law exponent of schedule=power")

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        m = self.replay_batch_size or ctx.batch_size
        if self.schedule == "power":
            s = sample_by_age(self.buffer, m, ctx.exp_index, self.schedule_alpha)
        else:
            s = self.buffer.sample(m)
        if not s:
            return batch
        return batch.append(s["x"], s["y"], s["t"])

    def step_extras(self, ctx: Context, new: Batch) -> Extras:
        return self._exp_tag(ctx, len(new))

    def experience_extras(self, ctx: Context, split: Split) -> Extras:
        return self._exp_tag(ctx, len(split))

    def _exp_tag(self, ctx: Context, n: int) -> Extras:
        if self.schedule != "power":
            return {}
        return {"exp": torch.full((n,), ctx.exp_index, dtype=torch.long)}
