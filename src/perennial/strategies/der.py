"""Dark Experience Replay, DER and DER++ (Buzzega et al. 2020, "Dark experience for general
continual learning: a strong, simple baseline")."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field, PrivateAttr
from torch import Tensor

from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Extras, Rehearsal, batched_eval
from perennial.streams.core import Split


@register("der")
class DER(Rehearsal):
    """Replay the network's own past *logits* (Buzzega et al. 2020, eq. 6).

    The buffer stores each sample with the logits the model gave it when it was trained on
    it; every step adds ``alpha * || z - f(x') ||^2`` (mean squared error over the logits) on
    a batch ``(x', z)`` drawn from the buffer, on top of the cross-entropy on the new data.
    The buffer is a reservoir by default (as in the paper); with ``herding`` the experience's
    samples are stored at its end with the logits of the model at that point.

    Defaults: 500 slots; ``alpha = 0.3``, the best of the grid {0.1, 0.3, 0.5, 1} on
    split-mnist class-incremental with seed 100, not a seed of the reproduction table (final
    accuracy 90.1 / 91.9 / 91.4 / 91.3%); a replay batch as large as the training batch.
    """

    summary = "dark experience replay (match stored logits)"
    boundary_free = True

    alpha: float = Field(default=0.3, ge=0.0, description="weight of the logit-matching loss")
    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )

    _logits: Tensor | None = PrivateAttr(default=None)  # this step's logits of the new samples

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        self._logits = logits[: batch.n_new].detach()
        m = self.replay_batch_size or ctx.batch_size
        s = self.buffer.sample(m, fields=("x", "t", "logits"))  # one index, one gather per field
        if s and self.alpha:
            loss = loss + self.alpha * F.mse_loss(ctx.model(s["x"], s["t"]), s["logits"])
        return loss

    def step_extras(self, ctx: Context, new: Batch) -> Extras:
        assert self._logits is not None, "DER stores the logits of the step's forward pass"
        out, self._logits = self._logits, None
        return {"logits": out}

    def experience_extras(self, ctx: Context, split: Split) -> Extras:
        return {"logits": batched_eval(ctx, ctx.model, split.x, split.t)}


@register("derpp")
class DERpp(DER):
    """DER++ (Buzzega et al. 2020, eq. 7): DER plus a cross-entropy on the stored *labels*.

    Adds ``beta * CE(f(x''), y'')`` on a second batch drawn independently from the buffer,
    which corrects logits stored before a class was learned well.

    Defaults: ``alpha = 0.1, beta = 1.0``, the best of six (alpha, beta) pairs from
    {0.1, 0.2, 0.5, 1} x {0.5, 1} on split-mnist class-incremental with seed 100, not a seed of
    the reproduction table (92.1%; the others 90.6-92.0%).
    """

    summary = "DER++: logit matching plus cross-entropy on replayed labels"

    alpha: float = Field(default=0.1, ge=0.0, description="weight of the logit-matching loss")
    beta: float = Field(default=1.0, ge=0.0, description="weight of the replayed cross-entropy")

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        loss = super().loss(ctx, batch, logits, loss)
        s = self.buffer.sample(self.replay_batch_size or ctx.batch_size, fields=("x", "y", "t"))
        if s and self.beta:
            loss = loss + self.beta * F.cross_entropy(ctx.model(s["x"], s["t"]), s["y"])
        return loss
