"""Offline upper bounds: joint training and cumulative re-training."""

from __future__ import annotations

import torch

from perennial.strategies.base import Context, Strategy
from perennial.strategies.registry import register
from perennial.streams.core import Split


@register("joint")
class Joint(Strategy):
    """Upper bound: at the first experience, train on the union of *all* experiences'
    training data (i.i.d., shuffled); later experiences add no training. With the same number
    of epochs this takes as many steps as the sequential methods in total. Every row of the
    accuracy matrix then shows the jointly trained model."""

    summary = "offline upper bound: train once on all experiences' data"
    online = False  # needs the whole experience (or memory) at once
    kinds = frozenset({"classification", "lm"})

    def train_split(self, ctx: Context, split: Split) -> Split:
        if ctx.exp_index == 0:
            return Split.cat([e.train for e in ctx.stream])
        return split.subset(torch.zeros(0, dtype=torch.long, device=split.y.device))


@register("cumulative")
class Cumulative(Strategy):
    """At experience k, continue training on the union of experiences 0..k (no memory limit)."""

    summary = "retrain on all data seen so far at every experience"
    online = False  # needs the whole experience (or memory) at once
    kinds = frozenset({"classification", "lm"})

    def train_split(self, ctx: Context, split: Split) -> Split:
        return Split.cat([e.train for e in ctx.seen_experiences()])
