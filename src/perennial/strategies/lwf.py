"""Learning without Forgetting (Li & Hoiem 2016/2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.strategies.base import Batch, Context, Strategy, frozen_copy
from perennial.strategies.registry import register


def distillation(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over rows (Hinton et al. 2015)."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True)
        * t
        * t
    )


@register("lwf")
class LwF(Strategy):
    """Distil the previous model's outputs on the *current* data into the new model.

    After each experience the model is frozen as a teacher; later steps add
    ``alpha * T^2 * KL(teacher || student)`` at temperature ``T`` over the outputs of earlier
    experiences: the old classes' logits (class-IL), each old task's head separately
    (task-IL), or all outputs (domain-IL). Defaults ``alpha=1, T=2`` as in Li & Hoiem.
    """

    summary = "learning without forgetting (distillation from the previous model)"

    alpha: float = Field(default=1.0, ge=0.0, description="weight of the distillation loss")
    temperature: float = Field(default=2.0, gt=0.0)

    def setup(self, ctx: Context) -> None:
        self.state["teacher"] = frozen_copy(ctx.model)
        self.state["active"] = False

    def after_experience(self, ctx: Context) -> None:
        self.state["teacher"].load_state_dict(ctx.model.state_dict())
        self.state["active"] = True

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        if not self.state["active"] or self.alpha == 0:
            return loss
        teacher = self.state["teacher"]
        if ctx.scenario == "domain":
            with torch.no_grad():
                old = teacher(batch.x, batch.t)
            return loss + self.alpha * distillation(logits, old, self.temperature)
        if ctx.scenario == "task":
            with torch.no_grad():
                old = teacher(batch.x)  # unmasked: every head
            new = ctx.model(batch.x)
            kd = sum(
                distillation(new[:, list(cs)], old[:, list(cs)], self.temperature)
                for cs in ctx.stream.task_classes[: ctx.exp_index]
            )
            return loss + self.alpha * kd
        cols = list(ctx.previous_classes())
        if not cols:
            return loss
        with torch.no_grad():
            old = teacher(batch.x, batch.t)
        return loss + self.alpha * distillation(logits[:, cols], old[:, cols], self.temperature)
