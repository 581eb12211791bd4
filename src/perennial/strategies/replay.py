"""Experience replay (ER): mix stored samples of earlier experiences into every batch."""

from __future__ import annotations

from pydantic import Field

from perennial.memory import Buffer, Policy
from perennial.strategies.base import Batch, Context, Strategy
from perennial.strategies.registry import register


@register("replay")
class Replay(Strategy):
    """Experience replay with a fixed-size buffer (Chaudhry et al. 2019, "On tiny episodic
    memories in continual learning"; Rolnick et al. 2019).

    Every step appends ``replay_batch_size`` samples drawn uniformly from the buffer to the
    batch (cross-entropy over the combined batch); after the step the new samples are offered
    to the buffer (``reservoir`` or ``class_balanced`` selection, see
    :class:`perennial.memory.Buffer`).

    Defaults: 500 slots (50 per class on 10-class benchmarks, half of the 100/class of van de
    Ven et al. 2022, since our MNIST subset has 400 training images per class); a replay batch
    as large as the training batch (ER as in Chaudhry et al.).
    """

    summary = "experience replay from a reservoir or class-balanced buffer"

    buffer_size: int = Field(default=500, ge=1, description="number of stored samples")
    policy: Policy = Field(default="reservoir", description="which samples the buffer keeps")
    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )

    def setup(self, ctx: Context) -> None:
        self.state["buffer"] = Buffer(self.buffer_size, self.policy, seed=ctx.seed_for("replay"), device=ctx.device)

    @property
    def buffer(self) -> Buffer:
        return self.state["buffer"]

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        s = self.buffer.sample(self.replay_batch_size or ctx.batch_size)
        if not s:
            return batch
        return batch.append(s["x"], s["y"], s["t"])

    def after_step(self, ctx: Context, batch: Batch) -> None:
        new = batch.new()
        self.buffer.add(new.x, new.y, new.t)
