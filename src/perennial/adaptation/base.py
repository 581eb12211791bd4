"""The adaptation-method protocol: test-time adaptation methods are strategies with two more hooks.

A test-time adaptation (TTA) method is a :class:`~perennial.strategies.base.Strategy`: its
hyperparameters are validated pydantic fields, its learned state lives in ``self.state`` and
round-trips through ``state_dict`` / ``load_state_dict`` (so checkpoints restore it exactly),
and ``before_step`` / ``after_step`` run around the optimizer step exactly as in ``fit``
(the adapt loop calls the same :func:`perennial.train.loop.optimizer_step`). What differs:
there are no labels and no task loss, and every batch is *predicted before it is adapted on*.
So a method adds:

- ``configure(ctx) -> params``: put the model in the mode the method adapts (e.g. batch
  normalisation on test-batch statistics) and return the parameters it updates ([] = none);
- ``forward(ctx, batch) -> logits``: the prediction that is scored (e.g. the EMA teacher's
  for CoTTA); it may keep what ``adapt_loss`` needs (the student's logits);
- ``adapt_loss(ctx, batch, logits) -> loss | None``: the unsupervised loss (entropy,
  consistency with a teacher); ``None`` = no gradient step on this batch;
- ``should_reset(ctx)``: return the model to the source weights now (RDumb, SAR's recovery);
  the loop then resets the model and the optimizer and calls ``setup`` again.

Hook order for every batch of the test stream::

    should_reset(ctx) -> bool        # if true: model <- source, fresh optimizer, setup(ctx)
    forward(ctx, batch) -> logits    # scored against the hidden labels (the method never sees them)
    adapt_loss(ctx, batch, logits)   # None: no step
    (loop: backward)
    before_step(ctx)                 # e.g. SAR's sharpness-aware second pass
    (loop: optimizer step)
    after_step(ctx, batch)           # e.g. EMA teacher update, stochastic restore

``batch.y`` holds ``-1``: the labels stay with the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr
from torch import Tensor, nn

from perennial.errors import ConfigError
from perennial.strategies.base import Batch, Context, Strategy

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class AdaptContext(Context):
    """What adaptation hooks may read: the fit ``Context`` plus the test-stream position."""

    domain_name: str = ""
    domain_index: int = -1
    n_classes: int = 0
    #: unlabeled clean (source-domain) samples, when the benchmark has them (EATA's Fisher)
    clean: Tensor | None = None


class Adapter(Strategy):
    """Base class of test-time adaptation methods (see the module docstring)."""

    #: the method adapts normalisation layers: source models without them are refused
    needs_norm: ClassVar[bool] = False

    #: values passed between the hooks of one batch (never checkpointed: empty between batches)
    _tmp: dict[str, Any] = PrivateAttr(default_factory=dict)

    def configure(self, ctx: AdaptContext) -> list[nn.Parameter]:
        """Default: the source model as it is (eval mode, stored statistics), nothing adapted."""
        ctx.model.eval()
        ctx.model.requires_grad_(False)
        return []

    def forward(self, ctx: AdaptContext, batch: Batch) -> Tensor:
        with torch.no_grad():
            return ctx.model(batch.x)

    def adapt_loss(self, ctx: AdaptContext, batch: Batch, logits: Tensor) -> Tensor | None:
        return None

    def should_reset(self, ctx: AdaptContext) -> bool:
        return False

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        return None


class GradientAdapter(Adapter):
    """A method that takes optimizer steps (Adam by default, as Tent on CIFAR)."""

    lr: float = Field(default=1e-3, gt=0, description="learning rate of the adaptation steps")
    optimizer: Literal["adam", "sgd"] = Field(default="adam", description="adam or sgd (momentum 0.9)")

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        if not params:
            return None
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))


# ----------------------------------------------------------------- helpers


def norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def check_norm(model: nn.Module, method: str) -> None:
    if not norm_layers(model):
        raise ConfigError(
            [
                (
                    "method",
                    f"{method} adapts batch-normalisation layers, but the source model has none; train the source "
                    "with a model that has them (perennial run -b mnist-c -m cnn-bn, or -m resnet), or use a method "
                    "that does not need them (source, lame, cotta, rmt)",
                )
            ],
            header="source model does not fit the method",
        )


def use_batch_statistics(model: nn.Module) -> None:
    """Batch normalisation normalises with each test batch's own statistics (no running estimates)."""
    for m in norm_layers(model):
        m.track_running_stats = False
        m.running_mean = None
        m.running_var = None
        m.num_batches_tracked = None


def norm_affine_params(model: nn.Module) -> list[nn.Parameter]:
    """Train only the affine parameters (scale, shift) of the normalisation layers (Tent)."""
    model.requires_grad_(False)
    params: list[nn.Parameter] = []
    for m in norm_layers(model):
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(True)
                params.append(p)
    return params


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy of softmax(logits) per row (nats)."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def soft_ce(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Cross-entropy of softmax(logits) against the soft targets softmax(target_logits), per row."""
    return -(target_logits.softmax(1) * logits.log_softmax(1)).sum(1)


def symmetric_ce(student: Tensor, teacher: Tensor) -> Tensor:
    """Symmetric cross-entropy between student and teacher outputs (RMT), per row."""
    return 0.5 * (soft_ce(student, teacher.detach()) + soft_ce(teacher.detach(), student))


def augment(x: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` random views of every image in ``x`` (n*B, C, H, W): small affine warp, contrast and
    brightness jitter, light gaussian noise; the random numbers come from ``gen`` (CPU)."""
    b = x.shape[0]
    k = n * b
    dev = x.device
    ang = (torch.rand(k, generator=gen) * 2 - 1) * (15 * torch.pi / 180)
    scale = 0.9 + 0.2 * torch.rand(k, generator=gen)
    shift = (torch.rand(k, 2, generator=gen) * 2 - 1) * 0.1
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    xs = x.repeat(n, *([1] * (x.dim() - 1)))
    grid = F.affine_grid(theta.to(dev, x.dtype), list(xs.shape), align_corners=False)
    xs = F.grid_sample(xs, grid, align_corners=False, padding_mode="zeros")
    contrast = (0.8 + 0.4 * torch.rand(k, 1, 1, 1, generator=gen)).to(dev, x.dtype)
    bright = ((torch.rand(k, 1, 1, 1, generator=gen) * 2 - 1) * 0.1).to(dev, x.dtype)
    noise = (torch.randn(xs.shape, generator=gen) * 0.01).to(dev, x.dtype)
    mean = xs.mean(dim=(1, 2, 3), keepdim=True)
    return ((xs - mean) * contrast + mean + bright + noise).clamp(0.0, 1.0)


class Rng:
    """A CPU generator whose state lives in a method's ``state`` (so checkpoints restore it)."""

    def __init__(self, state: dict[str, Any], key: str = "rng"):
        self.state, self.key = state, key
        self.gen = torch.Generator()
        self.gen.set_state(state[key])

    def __enter__(self) -> torch.Generator:
        return self.gen

    def __exit__(self, *exc: object) -> None:
        self.state[self.key] = self.gen.get_state()


def new_rng_state(seed: int) -> Tensor:
    return torch.Generator().manual_seed(seed).get_state()
