"""Test-time adaptation methods, one small class each (hooks: :mod:`perennial.adaptation.base`).

Defaults are the papers' CIFAR-10-C settings where they transfer (Adam 1e-3 for Tent and
CoTTA, EMA 0.999, restore probability 0.01, 32 augmentations, entropy margin 0.4 ln C),
scaled down where our models are small (noted per field).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from perennial.adaptation.base import (
    AdaptContext,
    Adapter,
    GradientAdapter,
    Rng,
    augment,
    check_norm,
    entropy,
    new_rng_state,
    norm_affine_params,
    soft_ce,
    symmetric_ce,
    use_batch_statistics,
)
from perennial.models.ema import EMA, frozen_copy
from perennial.registry import Registry
from perennial.strategies.base import Batch

ADAPTERS: Registry[type[Adapter]] = Registry("adaptation method")


def register(name: str) -> Any:
    def deco(cls: type[Adapter]) -> type[Adapter]:
        cls.name = name
        return ADAPTERS.add(name, cls)

    return deco


@register("source")
class Source(Adapter):
    """The unadapted source model (eval mode, training-set BN statistics)."""

    summary: ClassVar[str] = "no adaptation: the source model as trained"


@register("bn")
class BNAdapt(Adapter):
    """BN-adapt: normalise with each test batch's statistics, no weight update (Schneider et al. 2020)."""

    summary: ClassVar[str] = "test-batch normalisation statistics, no weight update"
    needs_norm: ClassVar[bool] = True

    def configure(self, ctx: AdaptContext) -> list[nn.Parameter]:
        check_norm(ctx.model, self.name)
        use_batch_statistics(ctx.model)
        ctx.model.requires_grad_(False)
        ctx.model.train()
        return []


@register("tent")
class Tent(GradientAdapter):
    """Tent: minimise the prediction entropy on each test batch, updating only the BN affine
    parameters, with test-batch statistics (Wang et al. 2021). One forward and backward per batch."""

    summary: ClassVar[str] = "entropy minimisation of BN scale/shift (Wang et al. 2021)"
    needs_norm: ClassVar[bool] = True

    def configure(self, ctx: AdaptContext) -> list[nn.Parameter]:
        check_norm(ctx.model, self.name)
        use_batch_statistics(ctx.model)
        ctx.model.train()
        return norm_affine_params(ctx.model)

    def forward(self, ctx: AdaptContext, batch: Batch) -> Tensor:
        return ctx.model(batch.x)  # with gradients: the same forward is scored and adapted on

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        return entropy(logits).mean()


@register("eata")
class EATA(Tent):
    """EATA (Niu et al. 2022): Tent on reliable, non-redundant samples only, weighted by
    confidence, plus a Fisher-weighted anchor to the source parameters (when clean samples exist)."""

    summary: ClassVar[str] = "entropy filtering + redundancy filtering + Fisher anchor (Niu et al. 2022)"
    e_margin: float = Field(default=0.4, gt=0, description="entropy threshold as a fraction of ln(n_classes)")
    d_margin: float = Field(default=0.4, ge=-1, le=1, description="cosine similarity above which a sample is redundant")
    fisher_alpha: float = Field(default=2000.0, ge=0, description="weight of the Fisher anchor (0: off, as ETA)")
    fisher_size: int = Field(default=500, ge=1, description="clean samples for the Fisher information")

    def setup(self, ctx: AdaptContext) -> None:
        self.state["mean_probs"] = torch.zeros(ctx.n_classes, device=ctx.device)
        self.state["has_mean"] = torch.zeros((), device=ctx.device)
        if self.fisher_alpha > 0 and ctx.clean is not None:
            self.state["fisher"], self.state["anchor"] = _fisher(ctx, self.fisher_size)

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        margin = self.e_margin * math.log(ctx.n_classes)
        ent = entropy(logits)
        keep = ent < margin
        probs = logits.detach().softmax(1)
        mean = self.state["mean_probs"]
        has = self.state["has_mean"]
        if self.d_margin < 1:
            sim = F.cosine_similarity(probs, mean[None], dim=1)
            keep = keep & ((has == 0) | (sim.abs() < self.d_margin))
        w = keep.float() * torch.exp(margin - ent.detach())  # 1 / exp(ent - margin)
        loss = (ent * w).sum() / keep.sum().clamp(min=1)
        # moving average of the kept samples' predictions (redundancy filter)
        k = keep.float()[:, None]
        batch_mean = (probs * k).sum(0) / k.sum().clamp(min=1)
        new = torch.where(has > 0, 0.9 * mean + 0.1 * batch_mean, batch_mean)
        any_kept = keep.any()
        self.state["mean_probs"] = torch.where(any_kept, new, mean)
        self.state["has_mean"] = torch.where(any_kept, torch.ones_like(has), has)
        if "fisher" in self.state:
            params = [p for p in ctx.model.parameters() if p.requires_grad]
            reg = sum(
                (f * (p - a) ** 2).sum()
                for f, p, a in zip(self.state["fisher"], params, self.state["anchor"], strict=True)
            )
            loss = loss + self.fisher_alpha * reg
        return loss


def _fisher(ctx: AdaptContext, n: int) -> tuple[list[Tensor], list[Tensor]]:
    """Diagonal Fisher of the adapted parameters on clean samples, with the model's own
    predictions as labels (EATA), and the parameters' source values."""
    assert ctx.clean is not None
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p) for p in params]
    x = ctx.clean[:n].to(ctx.device)
    bs = ctx.batch_size
    chunks = 0
    for i in range(0, len(x), bs):
        logits = ctx.model(x[i : i + bs])
        loss = F.cross_entropy(logits, logits.argmax(1))
        grads = torch.autograd.grad(loss, params)
        for f, g in zip(fisher, grads, strict=True):
            f += g.detach() ** 2
        chunks += 1
    return [f / max(chunks, 1) for f in fisher], [p.detach().clone() for p in params]


@register("sar")
class SAR(Tent):
    """SAR (Niu et al. 2023): entropy minimisation on reliable samples with a sharpness-aware
    (SAM) step, and a reset to the source weights when the moving-average loss collapses."""

    summary: ClassVar[str] = "reliable, sharpness-aware entropy minimisation + model recovery (Niu et al. 2023)"
    optimizer: Literal["adam", "sgd"] = Field(default="sgd", description="sgd (momentum 0.9) as in the paper, or adam")
    lr: float = Field(default=5e-3, gt=0, description="learning rate (paper: 2.5e-4 for ImageNet ResNet-50)")
    e_margin: float = Field(default=0.4, gt=0, description="entropy threshold as a fraction of ln(n_classes)")
    rho: float = Field(default=0.05, gt=0, description="SAM neighbourhood size")
    reset_below: float = Field(default=0.2, ge=0, description="reset when the loss's moving average falls below this")

    def setup(self, ctx: AdaptContext) -> None:
        self.state["loss_ema"] = -1.0  # -1: no value yet
        self._tmp.clear()

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        margin = self.e_margin * math.log(ctx.n_classes)
        ent = entropy(logits)
        keep = ent.detach() < margin
        self._tmp["pending"] = (batch.x, keep)
        return (ent * keep).sum() / keep.sum().clamp(min=1)

    @torch.no_grad()
    def _perturb(self, params: list[nn.Parameter], sign: float, eps: list[Tensor] | None = None) -> list[Tensor]:
        if eps is None:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            norm = torch.sqrt(sum((g**2).sum() for g in grads)) + 1e-12  # type: ignore[arg-type]
            eps = [self.rho * g / norm for g in grads]
        torch._foreach_add_(params, eps, alpha=sign)
        return eps

    def before_step(self, ctx: AdaptContext) -> None:  # type: ignore[override]
        x, keep = self._tmp.pop("pending")
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        eps = self._perturb(params, 1.0)  # to the worst point in the rho-ball
        for p in params:
            p.grad = None
        with torch.enable_grad():
            ent2 = entropy(ctx.model(x))
            keep2 = keep & (ent2.detach() < self.e_margin * math.log(ctx.n_classes))
            loss2 = (ent2 * keep2).sum() / keep2.sum().clamp(min=1)
            loss2.backward()
        self._perturb(params, -1.0, eps)  # back; the optimizer steps with the sharpness-aware gradient
        v = float(loss2.detach())
        ema = self.state["loss_ema"]
        self.state["loss_ema"] = v if ema < 0 else 0.9 * ema + 0.1 * v

    def should_reset(self, ctx: AdaptContext) -> bool:
        ema = self.state.get("loss_ema", -1.0)
        return 0 <= ema < self.reset_below


class _MeanTeacher(GradientAdapter):
    """Student updated by gradient steps; teacher = the library's EMA copy of the student."""

    needs_norm: ClassVar[bool] = False
    ema_decay: float = Field(default=0.999, ge=0, lt=1, description="EMA decay of the teacher (paper: 0.999)")

    def configure(self, ctx: AdaptContext) -> list[nn.Parameter]:
        use_batch_statistics(ctx.model)  # a no-op without BN layers
        ctx.model.train()
        ctx.model.requires_grad_(True)
        return [p for p in ctx.model.parameters()]

    def setup(self, ctx: AdaptContext) -> None:
        # one EMA implementation in the library: models.ema (constant decay from the source weights)
        self.state["ema"] = EMA(ctx.model, {"teacher": self.ema_decay}, warmup=False, seed=ctx.seed_for("ema"))
        self.state["rng"] = new_rng_state(ctx.seed_for(self.name))

    def teacher(self) -> nn.Module:
        return self.state["ema"]["teacher"]

    def after_step(self, ctx: AdaptContext, batch: Batch) -> None:  # type: ignore[override]
        self.state["ema"].update(ctx.model)


@register("cotta")
class CoTTA(_MeanTeacher):
    """CoTTA (Wang et al. 2022): EMA teacher, augmentation-averaged pseudo-labels when the
    source model is unsure, stochastic restore of source weights. Predictions are the teacher's."""

    summary: ClassVar[str] = "EMA teacher, augmentation-averaged pseudo-labels, stochastic restore (Wang et al. 2022)"
    restore_prob: float = Field(default=0.01, ge=0, le=1, description="per-weight probability of a restore per step")
    confidence: float = Field(
        default=0.92, ge=0, le=1, description="augment when the source's mean confidence is below"
    )
    n_augment: int = Field(default=32, ge=1, description="augmented views averaged for the pseudo-labels")

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.state["source"] = frozen_copy(ctx.model)

    def forward(self, ctx: AdaptContext, batch: Batch) -> Tensor:
        x = batch.x
        student = ctx.model(x)
        with torch.no_grad():
            teacher = self.teacher()(x)
            conf = self.state["source"](x).softmax(1).max(1).values.mean()
            if float(conf) < self.confidence:
                with Rng(self.state) as gen:
                    views = augment(x, self.n_augment, gen)
                probs = self.teacher()(views).softmax(1).reshape(self.n_augment, x.shape[0], -1).mean(0)
                teacher = probs.clamp_min(1e-12).log()
        self._tmp["student"] = student
        return teacher

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        loss = soft_ce(self._tmp.pop("student"), logits).mean()
        return loss

    def after_step(self, ctx: AdaptContext, batch: Batch) -> None:  # type: ignore[override]
        super().after_step(ctx, batch)
        if self.restore_prob <= 0:
            return
        with torch.no_grad(), Rng(self.state) as gen:
            for p, s in zip(ctx.model.parameters(), self.state["source"].parameters(), strict=True):
                mask = (torch.rand(p.shape, generator=gen) < self.restore_prob).to(p.device)
                p.copy_(torch.where(mask, s, p))


@register("rmt")
class RMT(_MeanTeacher):
    """RMT (Döbler et al. 2023), core: robust mean teacher trained with symmetric cross-entropy
    between student and EMA teacher, on the test batch and an augmented view; predictions are the
    student-teacher ensemble. (The paper's source-replay warm-up and contrastive term are left out.)"""

    summary: ClassVar[str] = "mean teacher with symmetric cross-entropy (Döbler et al. 2023)"
    lr: float = Field(default=1e-4, gt=0, description="learning rate (all weights are adapted)")

    def forward(self, ctx: AdaptContext, batch: Batch) -> Tensor:
        student = ctx.model(batch.x)
        with torch.no_grad():
            teacher = self.teacher()(batch.x)
        self._tmp["student"], self._tmp["teacher"] = student, teacher
        return student.detach() + teacher

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        student, teacher = self._tmp.pop("student"), self._tmp.pop("teacher")
        with Rng(self.state) as gen:
            view = augment(batch.x, 1, gen)
        loss = symmetric_ce(student, teacher).mean() + symmetric_ce(ctx.model(view), teacher).mean()
        return 0.5 * loss


@register("lame")
class LAME(Adapter):
    """LAME (Boudiaf et al. 2022): parameter-free. The source model's outputs are adjusted by a
    Laplacian-regularised assignment over the batch's k-nearest-neighbour graph in feature space;
    weights and statistics never change."""

    summary: ClassVar[str] = "Laplacian-adjusted outputs, no weight update (Boudiaf et al. 2022)"
    knn: int = Field(default=5, ge=1, description="neighbours in the affinity graph")
    max_iter: int = Field(default=100, ge=1, description="bound-optimisation iterations (stops earlier at convergence)")

    def forward(self, ctx: AdaptContext, batch: Batch) -> Tensor:
        with torch.no_grad():
            feats = ctx.model.features(batch.x)
            logits = ctx.model.head(feats)
            probs = logits.softmax(1)
            f = F.normalize(feats.flatten(1), dim=1)
            b = f.shape[0]
            k = min(self.knn, b - 1)
            if k < 1:
                return logits
            sim = f @ f.T
            sim.fill_diagonal_(-float("inf"))
            idx = sim.topk(k, dim=1).indices
            w = torch.zeros(b, b, device=f.device)
            w.scatter_(1, idx, 1.0)  # kNN affinity (row i: i's neighbours)
            unary = -probs.clamp_min(1e-10).log()
            y = probs
            for _ in range(self.max_iter):
                new = (-unary + w @ y).softmax(1)
                if (new - y).abs().max() < 1e-6:
                    y = new
                    break
                y = new
            return y.clamp_min(1e-12).log()


@register("rdumb")
class RDumb(EATA):
    """RDumb (Press et al. 2023): ETA (EATA without the Fisher anchor) that resets the model to
    the source weights every ``reset_every`` batches."""

    summary: ClassVar[str] = "ETA with a reset to the source weights every N batches (Press et al. 2023)"
    fisher_alpha: float = Field(default=0.0, ge=0, description="Fisher anchor weight (0: ETA, as in the paper)")
    reset_every: int = Field(default=1000, ge=1, description="batches between resets (paper: 1000 batches of 64)")

    def should_reset(self, ctx: AdaptContext) -> bool:
        return ctx.step > 0 and ctx.step % self.reset_every == 0


def make_adapter(name: str, params: dict[str, Any] | None = None) -> Adapter:
    from pydantic import ValidationError

    from perennial.errors import ConfigError

    cls = ADAPTERS.get(name, field="method")
    try:
        return cls(**(params or {}))
    except ValidationError as e:
        raise ConfigError(
            [(f"method.{'.'.join(map(str, err['loc']))}", err["msg"]) for err in e.errors()],
            header=f"invalid parameters for method {name!r}",
        ) from None
