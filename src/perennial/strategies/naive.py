"""Fine-tuning: train on each experience in turn, nothing else (the lower bound)."""

from __future__ import annotations

from perennial.strategies.base import Strategy
from perennial.strategies.registry import register


@register("naive")
class Naive(Strategy):
    """Plain fine-tuning. In class-incremental learning it forgets everything but the last
    experience (van de Ven et al. 2022: ~19.9% on Split MNIST with 5 experiences)."""

    summary = "fine-tuning on each experience in turn (lower bound)"
    boundary_free = True
    kinds = frozenset({"classification", "lm"})
