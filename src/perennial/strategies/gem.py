"""Gradient projection with an episodic memory: GEM (Lopez-Paz & Ranzato 2017) and A-GEM
(Chaudhry et al. 2019).

Both keep samples of *past* experiences (stored at the end of each experience, with any
selection policy) and, in ``before_step``, change the gradient the loop is about to apply so
that the loss on the memory does not increase. The reference gradients come from
``torch.autograd.grad`` on the memory loss; the loop's own backward and optimizer step are
untouched.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.strategies.base import Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Extras, Rehearsal, boundary_buffer_policy
from perennial.streams.core import Split


def _params(ctx: Context) -> list[Tensor]:
    return [p for p in ctx.model.parameters() if p.requires_grad]


def memory_gradient(ctx: Context, x: Tensor, y: Tensor, t: Tensor) -> list[Tensor]:
    """Gradient of the mean cross-entropy on ``(x, y, t)`` w.r.t. the trainable parameters."""
    params = _params(ctx)
    with torch.enable_grad():
        loss = F.cross_entropy(ctx.model(x, t), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def current_gradient(ctx: Context) -> list[Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad for p in _params(ctx)]


def set_gradient(ctx: Context, flat: Tensor) -> None:
    """Write a flat gradient vector back into ``p.grad``."""
    offset = 0
    for p in _params(ctx):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def flat(grads: list[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def gem_project(g: np.ndarray, G: np.ndarray, margin: float = 0.5, eps: float = 1e-3) -> np.ndarray:
    """GEM's projection (Lopez-Paz & Ranzato 2017, eqs. 10-13).

    The closest gradient ``z`` to ``g`` with ``G z >= 0`` (no increase of any past task's
    loss, rows of ``G`` = their gradients) is ``z = g + G^T v`` where ``v`` solves the dual
    quadratic program

        min_v  1/2 v^T (G G^T + eps I) v + (G g)^T v   subject to  v >= margin

    (``margin`` = GEM's gamma, which biases the update towards positive backward transfer;
    ``eps`` keeps the matrix positive definite, as in the authors' code). With
    ``v = u + margin`` and ``G G^T + eps I = L L^T`` (Cholesky) the program is the
    non-negative least-squares problem ``min_{u >= 0} || L^T u + L^{-1} c ||^2`` with
    ``c = G g + margin (G G^T + eps I) 1``, solved by SciPy's NNLS (Lawson & Hanson's active
    set method).
    """
    import scipy.linalg  # imported here: keeps `import perennial` (and the CLI) fast
    import scipy.optimize

    g = np.asarray(g, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    k = G.shape[0]
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(k)
    c = G @ g + margin * P.sum(1)
    L = np.linalg.cholesky(P)
    b = -scipy.linalg.solve_triangular(L, c, lower=True)
    u, _ = scipy.optimize.nnls(L.T, b)
    v = u + margin
    return g + G.T @ v


@register("gem")
class GEM(Rehearsal):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017, Algorithm 1).

    At every step, the gradient of each past experience's memory loss ``g_k`` is computed;
    when the proposed update ``g`` increases any of them (``<g, g_k> < 0``), ``g`` is replaced
    by its projection solving GEM's quadratic program (:func:`gem_project`, eq. 13). The cost
    per step grows with the number of past experiences, as the method requires.

    Defaults: ``margin = 0.5`` (the paper's memory strength gamma for all its experiments);
    500 memory slots shared by all past experiences (the paper uses 256 per task; our
    experiences have only 800 training samples). The memory is filled at the end of each
    experience with the selected ``policy``.
    """

    summary = "gradient episodic memory (per-experience gradient constraints, QP projection)"
    store_every_step = False
    buffer_policy: Literal["past"] = boundary_buffer_policy()  # type: ignore[assignment]

    margin: float = Field(default=0.5, ge=0.0, description="memory strength gamma: v >= margin in the dual QP")
    eps: float = Field(default=1e-3, gt=0.0, description="ridge added to G G^T")

    def experience_extras(self, ctx: Context, split: Split) -> Extras:
        return {"exp": torch.full((len(split),), ctx.exp_index, dtype=torch.long)}

    def before_step(self, ctx: Context) -> None:
        buf = self.buffer
        if len(buf) == 0:
            return
        exp = buf.get("exp").cpu()
        rows = []
        for k in torch.unique(exp).tolist():
            s = buf.select(exp == k)
            rows.append(flat(memory_gradient(ctx, s["x"], s["y"], s["t"])))
        G = torch.stack(rows)  # (past experiences, parameters)
        g = flat(current_gradient(ctx))
        if bool((G @ g >= 0).all()):
            return  # no constraint violated: keep the gradient
        z = gem_project(g.detach().cpu().double().numpy(), G.detach().cpu().double().numpy(), self.margin, self.eps)
        set_gradient(ctx, torch.from_numpy(z).to(g.device))


@register("agem")
class AGEM(Rehearsal):
    """Averaged GEM (Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM", eq. 11).

    One constraint on the *average* memory loss instead of one per experience: with ``g_ref``
    the gradient on a batch drawn from the memory of past experiences, the update ``g`` is
    used as is when ``g . g_ref >= 0`` and otherwise replaced by
    ``g - (g . g_ref / g_ref . g_ref) g_ref``. Constant cost per step.

    Defaults: 500 memory slots filled at the end of each experience (the paper stores a fixed
    number per task); a memory batch as large as the training batch (the paper uses 256).
    """

    summary = "averaged GEM (project the gradient when it conflicts with the memory's)"
    store_every_step = False
    buffer_policy: Literal["past"] = boundary_buffer_policy()  # type: ignore[assignment]

    memory_batch_size: int | None = Field(
        default=None, ge=1, description="memory samples per reference gradient (default: the training batch size)"
    )

    def before_step(self, ctx: Context) -> None:
        s = self.buffer.sample(self.memory_batch_size or ctx.batch_size)
        if not s:
            return
        ref = memory_gradient(ctx, s["x"], s["y"], s["t"])
        grads = current_gradient(ctx)
        dot = sum((g * r).sum() for g, r in zip(grads, ref, strict=True))
        ref_sq = sum(r.pow(2).sum() for r in ref)
        # only when the update would increase the memory loss (no host sync: a tensor factor)
        coef = torch.clamp(dot, max=0.0) / (ref_sq + 1e-12)
        for p, g, r in zip(_params(ctx), grads, ref, strict=True):
            p.grad = g - coef * r
