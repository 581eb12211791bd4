"""OCM: online continual learning by mutual-information maximisation (Guo et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.models import MASK_VALUE, as_float
from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal
from perennial.strategies.scr import supcon_loss


def rotations(x: Tensor, y: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Every image rotated by 0, 90, 180 and 270 degrees, labelled ``y + n_classes * k`` (k-th
    rotation): the rotated copies act as extra classes (OCM's distribution-shifted positives and
    negatives). Square images only; other inputs come back as they are."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        return x, y
    xs = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    ys = torch.cat([y + n_classes * k for k in range(4)])
    return xs, ys


@register("ocm")
class OCM(Rehearsal):
    """OCM (Guo, Liu, Zhao, "Online continual learning through mutual information
    maximization", ICML 2022), simplified to this library's hooks.

    Chosen over OnPro (Wei et al. 2023) because it is a loss, not extra bookkeeping: OnPro keeps
    online prototypes of every class and an adaptive feedback sampler, OCM only adds a
    contrastive (InfoNCE / mutual-information) term that pushes the features to keep holistic
    information about the inputs, so that less is discarded when new classes arrive, and it
    reuses pieces the library has (the supervised contrastive loss of :mod:`scr`, the asymmetric
    cross-entropy of ER-ACE).

    Loss per step, with ``m`` replayed samples drawn from the reservoir:

    - the incoming rows' cross-entropy over the classes present in the incoming batch (as
      ER-ACE, applied as a change of the loop's loss so composed members' terms are kept) plus
      the replayed rows' full cross-entropy;
    - ``weight`` x the supervised contrastive loss (temperature ``temperature``) of the
      L2-normalised features of incoming and replayed rows in their four rotations, each
      rotation of a class counted as its own class (OCM's rotation-augmented positives and
      negatives), with a second, noisy view of every row (``noise``), seeded by the step.

    Simplifications: OCM's projection head and its full augmentation pipeline (colour jitter,
    crops, on natural images) are left out; rotations apply to square images only (other
    inputs contrast the two noisy views). Defaults: weight 1, temperature 0.07 (SupCon's),
    replay batch as large as the training batch.
    """

    summary = "OCM: replay + asymmetric CE + rotation-augmented contrastive (mutual-information) loss"
    boundary_free = True

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )
    weight: float = Field(default=1.0, ge=0.0, description="weight of the contrastive term")
    temperature: float = Field(default=0.07, gt=0.0, description="temperature of the contrastive loss")
    noise: float = Field(default=0.05, ge=0.0, description="std of the Gaussian noise of the second view")

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        n = batch.n_new
        y, z = batch.y[:n], logits[:n]
        present = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
        present[y] = True
        ace = F.cross_entropy(z.masked_fill(~present, MASK_VALUE), y, reduction="sum")
        total = loss + (ace - F.cross_entropy(z, y, reduction="sum")) / len(batch)  # as ER-ACE: keeps composed terms
        x_all, y_all = as_float(batch.x[:n]), y  # uint8 images as floats in [0, 1]: views are made in float
        s = self.buffer.sample(self.replay_batch_size or ctx.batch_size)
        if s:
            total = total + F.cross_entropy(ctx.model(s["x"], s["t"]), s["y"])
            x_all, y_all = torch.cat([x_all, as_float(s["x"]).to(x_all.dtype)]), torch.cat([y_all, s["y"]])
        if self.weight > 0:
            xr, yr = rotations(x_all, y_all, ctx.stream.n_classes)
            g = torch.Generator(device=xr.device).manual_seed(ctx.seed_for("ocm", ctx.step, ctx.repeat))
            noisy = xr + self.noise * torch.randn(xr.shape, generator=g, device=xr.device, dtype=xr.dtype)
            f = F.normalize(ctx.model.features(torch.cat([xr, noisy])).flatten(1), dim=1)
            total = total + self.weight * supcon_loss(f, torch.cat([yr, yr]), self.temperature)
        return total
