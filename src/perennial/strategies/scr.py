"""SCR: supervised contrastive replay with a nearest-class-mean classifier (Mai et al. 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr
from torch import Tensor

from perennial.models import as_float
from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal, batched_eval


def supcon_loss(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of L2-normalised features ``z``
    (N, d) with labels ``y`` (N,): for every anchor, the mean log-probability of its positives
    (same label, itself excluded) among all other samples; averaged over anchors with a positive."""
    n = len(y)
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -math.inf)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp(min=1)
    has = n_pos > 0
    return per_anchor[has].mean() if bool(has.any()) else z.sum() * 0.0


@register("scr")
class SCR(Rehearsal):
    """Supervised contrastive replay (Mai, Li, Kim, Sanner, "Supervised contrastive replay:
    revisiting the nearest class mean classifier in online class-incremental continual
    learning", CVPR-W 2021).

    Each step appends ``replay_batch_size`` reservoir samples to the incoming rows (as ER), makes a
    second, augmented view of every row (random translation of images by up to ``shift`` pixels
    and Gaussian noise of std ``noise``), and *replaces* the cross-entropy by the supervised
    contrastive loss (temperature ``temperature``) of the L2-normalised features of both views.
    Prediction is the nearest class mean: the mean normalised feature of each class's stored
    samples (classes absent from the memory get the lowest possible score), recomputed when the model or
    the memory changed. The softmax head is not trained. Two simplifications: the features
    are contrasted directly (the paper adds a projection head; here a strategy owns no trained
    parameters), and the augmentation is a generic translation + noise (the paper uses
    random resized crops, flips and colour jitter on natural images). The augmentation is drawn
    from a generator seeded by the run seed and the step, so it needs no saved state. Put SCR
    first in a composition: it replaces the loss it receives.

    Defaults: temperature 0.07 (the paper's), a replay batch as large as the training batch.
    """

    summary = "SCR: supervised contrastive replay with a nearest-class-mean classifier"
    boundary_free = True

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="replayed samples per step (default: the training batch size)"
    )
    temperature: float = Field(default=0.07, gt=0.0, description="temperature of the contrastive loss")
    shift: int = Field(default=1, ge=0, description="augmentation: largest translation of images (pixels)")
    noise: float = Field(default=0.05, ge=0.0, description="augmentation: std of the added Gaussian noise")

    _means: tuple[int, Tensor, Tensor] | None = PrivateAttr(default=None)  # (step, classes, means)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self._means = None

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        s = self.buffer.sample(self.replay_batch_size or ctx.batch_size)
        return batch.append(s["x"], s["y"], s["t"]) if s else batch

    def augment(self, ctx: Context, x: Tensor) -> Tensor:
        g = torch.Generator(device=x.device).manual_seed(ctx.seed_for("scr", ctx.step, ctx.repeat))
        if x.ndim == 4 and self.shift > 0:
            n, _, h, w = x.shape
            shift = (torch.randint(-self.shift, self.shift + 1, (n, 2), generator=g, device=x.device)).to(x.dtype)
            theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            theta[:, 0, 2], theta[:, 1, 2] = 2 * shift[:, 0] / w, 2 * shift[:, 1] / h
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, align_corners=False)
        if self.noise > 0:
            x = x + self.noise * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        x0 = as_float(batch.x)  # uint8 images as floats in [0, 1]: views are made in float
        x = torch.cat([x0, self.augment(ctx, x0)])
        z = F.normalize(ctx.model.features(x).flatten(1), dim=1)
        return supcon_loss(z, torch.cat([batch.y, batch.y]), self.temperature)

    def _class_means(self, ctx: Context) -> tuple[Tensor, Tensor] | None:
        if len(self.buffer) == 0:
            return None
        if self._means is None or self._means[0] != ctx.step:
            x, y = self.buffer.x, self.buffer.y
            f = F.normalize(batched_eval(ctx, lambda xb, _t: ctx.model.features(xb).flatten(1), x, y), dim=1)
            classes = torch.unique(y)
            means = torch.stack([F.normalize(f[y == c].mean(0), dim=0) for c in classes])
            self._means = (ctx.step, classes, means)
        return self._means[1], self._means[2]

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        cm = self._class_means(ctx)
        if cm is None:
            return None
        classes, means = cm
        f = F.normalize(ctx.model.features(x).flatten(1), dim=1)
        # classes absent from the memory: the lowest score a class can get (squared distance 4
        # between unit vectors), so they are never predicted and the log-loss stays finite
        logits = torch.full((len(x), ctx.stream.n_classes), -4.0 / self.temperature, device=x.device, dtype=f.dtype)
        logits[:, classes] = -torch.cdist(f, means).pow(2) / self.temperature
        return logits
