"""Slow copies of a model: exponential moving averages (EMA) of its weights at chosen rates.

``EMA(model, {"stable": 0.999, "plastic": 0.9})`` keeps one frozen copy of ``model`` per
name. After each optimizer step, :meth:`EMA.update` moves every copy towards the model::

    theta_copy <- a * theta_copy + (1 - a) * theta_model,   a = min(decay, 1 - 1 / (n + 1))

where ``n`` counts the updates so far (the warm-up of mean teachers, Tarvainen & Valpola 2017,
and CLS-ER: early on the copy is the running mean of the weights seen, so it does not stay
stuck at the random initialisation). A copy may also be updated stochastically, with
probability ``update_prob[name]`` per step (CLS-ER): its expected time constant is then
``1 / (p * (1 - decay))`` steps.

Each copy is updated with one ``torch._foreach_lerp_`` over all its parameters (one fused
kernel launch per copy on accelerators, no Python loop over parameters); floating-point
buffers (e.g. batch-norm statistics) are averaged the same way, integer buffers copied.
Copies live on the model's device, are in eval mode and never require gradients; each one is
a full model, so ``ema["stable"](x, t)`` and ``ema["stable"].features(x)`` work as for the
model. ``state_dict()`` holds only tensors and numbers (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn


def check_decays(decays: Mapping[str, float], what: str = "decays") -> None:
    """Raise ``ValueError`` naming the problem unless every decay is a number in [0, 1)."""
    for name, d in decays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: copy names must be non-empty strings, got {name!r}")
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0.0 <= d < 1.0:
            raise ValueError(f"{what}[{name!r}] must be a decay in [0, 1) (e.g. 0.999 for a slow copy), got {d!r}")


class EMA:
    """Named exponential-moving-average copies of one model (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        decays: Mapping[str, float],
        *,
        update_prob: Mapping[str, float] | None = None,
        warmup: bool = True,
        seed: int = 0,
    ):
        check_decays(decays)
        if not decays:
            raise ValueError("EMA needs at least one copy, e.g. EMA(model, {'stable': 0.999})")
        probs = dict(update_prob or {})
        unknown = set(probs) - set(decays)
        if unknown:
            raise ValueError(f"update_prob names {sorted(unknown)} that are not copies ({sorted(decays)})")
        for name, p in probs.items():
            if not 0.0 < p <= 1.0:
                raise ValueError(f"update_prob[{name!r}] must be in (0, 1], got {p!r}")
        self.decays: dict[str, float] = {k: float(v) for k, v in decays.items()}
        self.probs: dict[str, float] = {k: float(probs.get(k, 1.0)) for k in decays}
        self.warmup = bool(warmup)
        self.updates = 0  # update() calls so far (steps), whether or not a copy moved
        self.generator = torch.Generator().manual_seed(int(seed))
        self.copies: dict[str, nn.Module] = {name: frozen_copy(model) for name in decays}

    # ---------------------------------------------------------------- access
    def __getitem__(self, name: str) -> nn.Module:
        try:
            return self.copies[name]
        except KeyError:
            raise KeyError(f"no EMA copy named {name!r}; copies: {', '.join(self.copies)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.copies

    def __iter__(self) -> Iterator[str]:
        return iter(self.copies)

    def __len__(self) -> int:
        return len(self.copies)

    def items(self) -> Iterable[tuple[str, nn.Module]]:
        return self.copies.items()

    def decay_now(self, name: str) -> float:
        """The effective decay the next update of ``name`` uses (after warm-up: its decay)."""
        d = self.decays[name]
        if not self.warmup:
            return d
        n = self.updates + 1
        return min(d, 1.0 - 1.0 / (n + 1))

    # ---------------------------------------------------------------- updates
    @torch.no_grad()
    def update(self, model: nn.Module) -> list[str]:
        """Move the copies towards ``model``; returns the names of the copies that moved.

        One random number per copy is drawn every call (also for copies updated with
        probability 1), so the random stream does not depend on which copies moved.
        """
        draws = torch.rand(len(self.copies), generator=self.generator).tolist()
        moved = [name for name, u in zip(self.copies, draws, strict=True) if u < self.probs[name]]
        src_p = [p.detach() for p in model.parameters()]
        src_b = [b for b in model.buffers()]
        for name in moved:
            w = 1.0 - self.decay_now(name)
            dst = self.copies[name]
            dst_p = list(dst.parameters())
            if len(dst_p) != len(src_p):
                raise ValueError(f"EMA copy {name!r} has {len(dst_p)} parameters, the model {len(src_p)}")
            torch._foreach_lerp_(dst_p, src_p, w)
            _update_buffers(list(dst.buffers()), src_b, w)
        self.updates += 1
        return moved

    @torch.no_grad()
    def reset(self, model: nn.Module, names: Iterable[str] | None = None) -> None:
        """Set copies (all by default) to the model's current weights."""
        src_p = [p.detach() for p in model.parameters()]
        for name in names if names is not None else list(self.copies):
            dst = self[name]
            torch._foreach_copy_(list(dst.parameters()), src_p)
            for d, s in zip(dst.buffers(), model.buffers(), strict=True):
                d.copy_(s)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "decays": dict(self.decays),
            "probs": dict(self.probs),
            "warmup": self.warmup,
            "updates": self.updates,
            "generator": self.generator.get_state(),
            "copies": {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in self.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if dict(state["decays"]) != self.decays or dict(state["probs"]) != self.probs:
            raise ValueError(
                f"EMA state is for decays={dict(state['decays'])}, update_prob={dict(state['probs'])}; "
                f"these copies have decays={self.decays}, update_prob={self.probs}"
            )
        self.warmup = bool(state["warmup"])
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])
        for name, sd in state["copies"].items():
            self[name].load_state_dict(sd)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A detached, eval-mode copy of ``model`` with gradients off (an EMA copy, a teacher)."""
    m = copy.deepcopy(model)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _update_buffers(dst: list[Tensor], src: list[Tensor], w: float) -> None:
    if len(dst) != len(src):
        raise ValueError(f"EMA copy has {len(dst)} buffers, the model {len(src)}")
    if not dst:
        return
    fl = [(d, s) for d, s in zip(dst, src, strict=True) if d.is_floating_point()]
    if fl:
        torch._foreach_lerp_([d for d, _ in fl], [s for _, s in fl], w)
    for d, s in zip(dst, src, strict=True):
        if not d.is_floating_point():
            d.copy_(s)
