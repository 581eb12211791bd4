"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) and its online variant
(Schwarz et al. 2018, "Progress & Compress"; Chaudhry et al. 2018, EWC++)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torch.func import functional_call, grad, vmap

from perennial.strategies.base import Context, Strategy
from perennial.strategies.registry import register
from perennial.streams.core import Split


def diagonal_fisher(
    ctx: Context, split: Split, *, max_samples: int | None, batch_size: int, seed: int
) -> dict[str, Tensor]:
    """Empirical diagonal Fisher ``E[(d log p(y|x) / d theta)^2]`` from per-sample gradients.

    Samples are drawn in a seeded random order (a random subset when ``max_samples`` is
    smaller than the split): class-sorted batches are never used, and because squared
    gradients are taken per sample, the estimate does not depend on how samples are batched.
    """
    model = ctx.model
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=g)
    if max_samples is not None:
        order = order[:max_samples]
    order = order.to(split.y.device)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    linear_only = _linear_layers(model, params)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, y, t = split.x[idx], split.y[idx], split.t[idx]
            if linear_only is not None:
                try:
                    _accumulate_linear(model, linear_only, fisher, x, y, t)
                    continue
                except _NotVectorInputs:  # e.g. sequence inputs: use the general path
                    linear_only = None
            _accumulate_vmap(model, params, fisher, x, y, t)
    finally:
        model.train(was_training)
    n = max(len(order), 1)
    return {k: f / n for k, f in fisher.items()}


def _linear_layers(model: torch.nn.Module, params: dict[str, Tensor]) -> dict[str, torch.nn.Linear] | None:
    """Module names of the Linear layers when they hold *every* trainable parameter, else None."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    covered = {f"{n}.{pn}" for n, m in layers.items() for pn, p in m.named_parameters(recurse=False) if p.requires_grad}
    return layers if covered == set(params) else None


def _accumulate_linear(
    model: torch.nn.Module,
    layers: dict[str, torch.nn.Linear],
    fisher: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    t: Tensor,
) -> None:
    """Exact per-sample squared gradients of Linear layers without materialising them.

    For one sample, dW = g a^T (g: gradient at the layer's output, a: its input), so
    sum_n dW_n^2 = (g^2)^T (a^2) and sum_n db_n^2 = sum_n g_n^2 (Goodfellow 2015's trick).
    Valid when every input is one vector per sample, which the hooks check.
    """
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    hooks = []
    for name, layer in layers.items():

        def hook(mod: torch.nn.Module, inp: tuple[Tensor, ...], out: Tensor, name: str = name) -> None:
            inputs[name] = inp[0].detach()
            outputs[name] = out

        hooks.append(layer.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x, t), y, reduction="sum")
            names = list(outputs)
            if any(inputs[n].ndim != 2 for n in names):
                raise _NotVectorInputs
            grads = torch.autograd.grad(loss, [outputs[n] for n in names])
    finally:
        for h in hooks:
            h.remove()
    for name, g in zip(names, grads, strict=True):
        g2, a2 = g.pow(2), inputs[name].pow(2)
        fisher[f"{name}.weight"] += g2.T @ a2
        if layers[name].bias is not None and f"{name}.bias" in fisher:
            fisher[f"{name}.bias"] += g2.sum(0)


class _NotVectorInputs(Exception):
    pass


def _accumulate_vmap(
    model: torch.nn.Module, params: dict[str, Tensor], fisher: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor
) -> None:
    """General per-sample gradients with ``torch.func.vmap`` (any architecture)."""
    detached = {k: p.detach() for k, p in params.items()}
    buffers = dict(model.named_buffers())

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor, ti: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0), ti.unsqueeze(0)))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    grads = vmap(grad(nll), in_dims=(None, 0, 0, 0))(detached, x, y, t)
    for k, gk in grads.items():
        flat = gk.reshape(gk.shape[0], -1)
        fisher[k] += torch.einsum("ni,ni->i", flat, flat).reshape(fisher[k].shape)


@register("ewc")
class EWC(Strategy):
    """Quadratic penalty ``(lambda / 2) * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2``.

    ``F_k`` is the diagonal (empirical) Fisher information after experience ``k`` and
    ``theta*_k`` the weights then (Kirkpatrick et al. 2017, eq. 3). ``mode="separate"`` keeps
    one penalty per past experience; ``mode="online"`` keeps a single running Fisher
    ``F <- decay * F + F_k`` anchored at the latest weights (Schwarz et al. 2018), so its cost
    does not grow with the number of experiences.

    Default ``ewc_lambda=5000``: the order of magnitude used on Split MNIST by van de Ven et
    al. (their grid: 10^0..10^9; best task-IL values 10^3..10^5 with a mean Fisher).
    """

    summary = "elastic weight consolidation (diagonal Fisher penalty)"

    ewc_lambda: float = Field(default=5000.0, ge=0.0, description="penalty strength")
    mode: Literal["separate", "online"] = Field(default="separate")
    decay: float = Field(default=1.0, gt=0.0, le=1.0, description="online mode: Fisher decay (gamma)")
    fisher_samples: int | None = Field(default=1024, ge=1, description="samples for the Fisher estimate (None: all)")
    fisher_batch_size: int = Field(default=64, ge=1)

    def setup(self, ctx: Context) -> None:
        self.state["penalties"] = []  # list of {"fisher": {...}, "anchor": {...}}

    def after_experience(self, ctx: Context) -> None:
        assert ctx.experience is not None
        fisher = diagonal_fisher(
            ctx,
            ctx.experience.train,
            max_samples=self.fisher_samples,
            batch_size=self.fisher_batch_size,
            seed=ctx.seed_for(self.name, ctx.exp_index),
        )
        anchor = {k: p.detach().clone() for k, p in ctx.model.named_parameters() if k in fisher}
        penalties = self.state["penalties"]
        if self.mode == "online" and penalties:
            old = penalties[0]["fisher"]
            fisher = {k: self.decay * old[k] + f for k, f in fisher.items()}
            penalties.clear()
        penalties.append({"fisher": fisher, "anchor": anchor})

    def loss(self, ctx: Context, batch: object, logits: Tensor, loss: Tensor) -> Tensor:
        penalties = self.state["penalties"]
        if not penalties or self.ewc_lambda == 0:
            return loss
        total = loss.new_zeros(())
        for name, p in ctx.model.named_parameters():
            for pen in penalties:
                f = pen["fisher"].get(name)
                if f is not None:
                    total = total + (f * (p - pen["anchor"][name]).pow(2)).sum()
        return loss + 0.5 * self.ewc_lambda * total


@register("online-ewc")
class OnlineEWC(EWC):
    """EWC with a single running Fisher (``mode="online"``, ``decay=0.9``)."""

    summary = "online EWC: one running Fisher, constant cost per step"

    mode: Literal["separate", "online"] = Field(default="online")
    decay: float = Field(default=0.9, gt=0.0, le=1.0)
