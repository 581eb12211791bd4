"""BiC: bias correction for class-incremental learning (Wu et al. 2019, "Large scale incremental learning")."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.memory import Policy
from perennial.models import MASK_VALUE
from perennial.strategies.base import Batch, Context, frozen_copy
from perennial.strategies.lwf import distillation
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal, batched_eval, boundary_buffer_policy
from perennial.streams.core import Split


def holdout_per_class(y: Tensor, per_class: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split indices into (held out: ``per_class`` random samples of each class, the rest)."""
    keys = torch.rand(len(y), generator=generator)
    order = torch.argsort(keys)
    by_class = order[torch.argsort(y.cpu()[order], stable=True)]
    ys = y.cpu()[by_class]
    start = torch.searchsorted(ys, ys, right=False)  # first position of each sample's class
    rank = torch.arange(len(ys)) - start
    held = rank < per_class
    return by_class[held].to(y.device), by_class[~held].to(y.device)


def fit_bias(logits: Tensor, y: Tensor, classes: list[int], seen: list[int], steps: int) -> tuple[Tensor, Tensor]:
    """(alpha, beta) minimising the cross-entropy of ``alpha * z_c + beta`` for ``c in classes``
    (the other seen classes' logits unchanged, unseen ones masked), by L-BFGS on two scalars."""
    z = logits.detach().float()
    unseen = torch.ones(z.shape[1], dtype=torch.bool, device=z.device)
    unseen[seen] = False
    z = z.masked_fill(unseen, MASK_VALUE)
    cols = torch.tensor(classes, device=z.device)
    ab = torch.tensor([1.0, 0.0], device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        corrected = z.clone()
        corrected[:, cols] = ab[0] * z[:, cols] + ab[1]
        loss = F.cross_entropy(corrected, y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return ab[0].detach().clone(), ab[1].detach().clone()


@register("bic")
class BiC(Rehearsal):
    """BiC (Wu et al. 2019), class-incremental: replay + distillation + a bias correction layer.

    - Stage 1, at experience ``s > 0``: train on the new data plus the exemplars with
      ``L = lambda * L_d + (1 - lambda) * L_c``, ``lambda = n_old / n_seen``, where ``L_d`` is the
      distillation of the previous model's (bias-corrected) old-class outputs at temperature
      ``T`` and ``L_c`` the cross-entropy; ``val_fraction`` of a class's memory share is held
      out per class, from the exemplars and from the new data, as a balanced validation set.
    - Stage 2, after training: with the network frozen, the two parameters of the bias
      correction layer ``q_k = alpha * o_k + beta`` for the new classes' logits (the old
      classes' logits pass unchanged) are fitted on the validation set by minimising its
      cross-entropy (a small L-BFGS run on BiC's own two parameters). Predictions use the
      corrected logits.

    Defaults: ``T = 2`` and a 9:1 train/validation split (``val_fraction = 0.1``) as in the
    paper; herding exemplars (BiC follows iCaRL's exemplar management); 500 exemplars (our
    split-mnist memory).
    """

    summary = "BiC: replay, distillation and a bias-correction layer fitted on held-out data"
    scenarios = frozenset({"class"})
    store_every_step = False
    buffer_policy: Literal["past"] = boundary_buffer_policy()  # type: ignore[assignment]

    policy: Policy = Field(
        default="herding",
        description="exemplar selection: reservoir, class_balanced, experience_balanced, fifo or herding",
    )
    temperature: float = Field(default=2.0, gt=0.0, description="distillation temperature")
    val_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="share of each class's memory slots held out for the bias layer"
    )
    bias_steps: int = Field(default=100, ge=1, description="L-BFGS iterations fitting the bias layer")

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.state["teacher"] = frozen_copy(ctx.model)
        self.state["active"] = False
        self.state["alpha"] = torch.ones((), device=ctx.device)
        self.state["beta"] = torch.zeros((), device=ctx.device)
        self.state["bias_classes"] = []  # the classes the correction applies to (the latest ones)
        self.state["val"] = None  # {"x", "y", "t"}: this experience's held-out validation set

    def correct(self, logits: Tensor) -> Tensor:
        cls = self.state["bias_classes"]
        if not cls:
            return logits
        out = logits.clone()
        out[:, cls] = self.state["alpha"] * logits[:, cls] + self.state["beta"]
        return out

    def train_split(self, ctx: Context, split: Split) -> Split:
        b = self.buffer
        if len(b) == 0:
            self.state["val"] = None
            return split
        per_class = max(1, round(self.val_fraction * b.capacity / max(len(ctx.seen_classes), 1)))
        g = torch.Generator().manual_seed(ctx.seed_for(self.name, "val", ctx.exp_index))
        memory = Split(b.x, b.y, b.t)
        val_old, train_old = holdout_per_class(memory.y, per_class, g)
        val_new, train_new = holdout_per_class(split.y, per_class, g)
        val = Split.cat([memory.subset(val_old), split.subset(val_new)])
        self.state["val"] = {"x": val.x, "y": val.y, "t": val.t}
        return Split.cat([split.subset(train_new), memory.subset(train_old)])

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        old = list(ctx.previous_classes())
        if not self.state["active"] or not old:
            return loss
        lam = len(old) / len(set(old) | set(ctx.seen_classes))
        with torch.no_grad():
            target = self.correct(self.state["teacher"](batch.x, batch.t))
        t = self.temperature
        kd = distillation(logits[:, old], target[:, old], t) / (t * t)  # soft cross-entropy (up to a constant)
        return loss + lam * (kd - F.cross_entropy(logits, batch.y))

    def after_experience(self, ctx: Context) -> None:
        assert ctx.experience is not None
        val = self.state["val"]
        if val is not None:
            z = batched_eval(ctx, ctx.model, val["x"], val["t"])
            new = list(ctx.experience.classes)
            alpha, beta = fit_bias(z, val["y"], new, list(ctx.seen_classes), self.bias_steps)
            self.state["alpha"], self.state["beta"], self.state["bias_classes"] = alpha, beta, new
        super().after_experience(ctx)  # update the exemplars
        self.state["teacher"].load_state_dict(ctx.model.state_dict())
        self.state["active"] = True

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        if not self.state["bias_classes"]:
            return None
        return self.correct(ctx.model(x, t))
