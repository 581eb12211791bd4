"""A slow EMA teacher: consistency towards it during training, prediction with it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.models.ema import EMA
from perennial.strategies.base import Batch, Context, Strategy, register_teacher
from perennial.strategies.registry import register


@register("ema-teacher")
class EMATeacher(Strategy):
    """Mean teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS
    2017) as a continual learner: after every optimizer step a slow copy of the weights moves
    towards the model, ``theta' <- a theta' + (1 - a) theta`` with ``a = min(decay,
    1 - 1/(n+1))`` (their Eq. and warm-up), and training adds the consistency cost

        weight * mean_i || z_theta(x_i) - z_theta'(x_i) ||^2

    over the logits ``z`` of every row of the batch (new and, when composed with replay,
    replayed samples), which pulls the fast model back towards what the slow one knows.
    Prediction uses the teacher (``predict_with_teacher``): a weight average over the last
    ``~1/(1 - decay)`` steps, which forgets more slowly than the model itself.

    Defaults: ``decay=0.99`` (a time constant of about 100 steps, two-thirds of one
    split-mnist experience at the benchmark's settings; mean teachers use 0.99-0.999 for
    their far longer runs), ``weight=1``.
    """

    summary = "slow EMA teacher: logit consistency towards it, predict with it"
    boundary_free = True

    decay: float = Field(default=0.99, ge=0.0, lt=1.0, description="EMA decay of the teacher")
    weight: float = Field(default=1.0, ge=0.0, description="weight of the consistency loss")
    predict_with_teacher: bool = Field(default=True, description="evaluate with the teacher instead of the model")

    def setup(self, ctx: Context) -> None:
        ema = EMA(ctx.model, {"teacher": self.decay}, seed=ctx.seed_for("ema-teacher"))
        self.state["ema"] = ema
        register_teacher(ctx, "ema-teacher", ema["teacher"])

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        if self.weight == 0:
            return loss
        with torch.no_grad():
            target = self.state["ema"]["teacher"](batch.x, batch.t)
        return loss + self.weight * F.mse_loss(logits, target.to(logits.dtype))

    def after_step(self, ctx: Context, batch: Batch) -> None:
        self.state["ema"].update(ctx.model)

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        return self.state["ema"]["teacher"](x, t) if self.predict_with_teacher else None
