"""ER-ACE: experience replay with the asymmetric cross-entropy (Caccia et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.models import MASK_VALUE
from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal


@register("er-ace")
class ERACE(Rehearsal):
    """ER with the asymmetric cross-entropy (Caccia et al. 2022, "New insights on reducing
    abrupt representation change in online continual learning", eq. 4).

    The incoming samples' cross-entropy only sees the logits of the classes present in the
    incoming batch, so learning new classes does not push the old classes' logits down; the
    replayed samples (a separate batch from the buffer) get the ordinary cross-entropy over
    all classes: ``L = CE_masked(new) + CE(replay)``. In this library the change is applied to
    the loop's loss as ``loss + (sum_new (CE_masked - CE)) / batch_rows``, which replaces the
    new rows' cross-entropy and keeps whatever other composed members added.

    Defaults: 500 reservoir slots and a replay batch as large as the training batch (the
    paper's ER setting).
    """

    summary = "experience replay with the asymmetric cross-entropy (ER-ACE)"
    boundary_free = True

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        n = batch.n_new
        y, z = batch.y[:n], logits[:n]
        present = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
        present[y] = True
        ace = F.cross_entropy(z.masked_fill(~present, MASK_VALUE), y, reduction="sum")
        ce = F.cross_entropy(z, y, reduction="sum")
        loss = loss + (ace - ce) / len(batch)
        s = self.buffer.sample(self.replay_batch_size or ctx.batch_size, fields=("x", "y", "t"))
        if s:
            loss = loss + F.cross_entropy(ctx.model(s["x"], s["t"]), s["y"])
        return loss
