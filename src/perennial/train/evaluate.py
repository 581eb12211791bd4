"""Batched evaluation of a model (through the strategy's ``predict``) on splits, and the
policy of which experiences ``fit`` evaluates after each experience."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from perennial.strategies.base import Context, Strategy
from perennial.streams.core import Split

AfterExperience = Literal["all", "seen", "seen+next", "current+next"]


@torch.inference_mode()
def evaluate_split(ctx: Context, strategy: Strategy, split: Split, batch_size: int) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on ``split``; restores the model's train/eval mode.

    For language modelling (logits (B, T, V), targets (B, T)) both are per token: next-token
    accuracy and the mean cross-entropy over every token (whose exp is the perplexity).
    """
    model = ctx.model
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.y.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.y.device)
    try:
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size]
            y = split.y[start : start + batch_size]
            t = split.t[start : start + batch_size]
            logits = strategy.predict(ctx, x, t)
            if logits is None:
                logits = model(x, t)
            logits = logits.float()
            correct += (logits.argmax(-1) == y).sum()
            loss_sum += F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum").double()
    finally:
        model.train(was_training)
    n = max(split.y.numel(), 1)  # samples, or tokens for (N, T) targets
    return float(correct) / n, float(loss_sum) / n


def evaluate_stream(ctx: Context, strategy: Strategy, batch_size: int) -> tuple[list[float], list[float]]:
    """Accuracy and loss on the test split of every experience of the stream."""
    accs, losses = [], []
    for e in ctx.stream:
        a, l_ = evaluate_split(ctx, strategy, e.test, batch_size)
        accs.append(a)
        losses.append(l_)
    return accs, losses


@dataclass(frozen=True)
class EvalPolicy:
    """Which test splits ``fit`` measures after each experience (``eval.after_experience``).

    - ``"seen+next"`` (default): experiences ``0..i+1`` after experience ``i``; every metric
      ``fit`` reports is defined (forward transfer needs ``R[i-1, i]``, the next experience).
    - ``"seen"``: experiences ``0..i``; forward transfer is undefined (``nan``).
    - ``"all"``: every experience, seen or not (the full ``T x T`` matrix); the cost of one
      row grows with the length of the stream, not with what was learned.
    - ``"current+next"``: only experiences ``i`` and ``i+1`` after experience ``i``, and every
      experience after the last one: the cost of a row is constant however long the stream.
      Final accuracy, backward and forward transfer and learning accuracy stay defined;
      forgetting (max over earlier rows) and average incremental accuracy need the rows in
      between and are ``nan``. For very long streams (hundreds of experiences), where the
      other policies' evaluation grows with the number of experiences seen.

    Unmeasured cells of the accuracy and loss matrices are ``None`` (see docs/metrics.md).
    ``max_samples`` caps the test samples per experience: a fixed subset drawn with a
    generator seeded from the run seed and the experience index (the global RNGs are not
    touched), so every row measures the same samples. The initial model is always measured
    on every experience (once; forward transfer needs ``b_i``).
    """

    after_experience: AfterExperience = "seen+next"
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.after_experience not in ("all", "seen", "seen+next", "current+next"):
            raise ValueError(
                f"after_experience must be all, seen, seen+next or current+next, got {self.after_experience!r}"
            )
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples}")

    def columns(self, row: int, n: int) -> range:
        """Experiences measured after training on experience ``row`` (``row=-1``: the initial model)."""
        if row < 0 or self.after_experience == "all":
            return range(n)
        if self.after_experience == "current+next":
            return range(n) if row >= n - 1 else range(row, min(row + 2, n))
        return range(min(row + (2 if self.after_experience == "seen+next" else 1), n))


def _capped(ctx: Context, index: int, split: Split, max_samples: int | None) -> Split:
    if max_samples is None or len(split) <= max_samples:
        return split
    g = torch.Generator().manual_seed(ctx.seed_for("eval-after-experience", index))
    idx = torch.randperm(len(split), generator=g)[:max_samples].sort().values.to(split.y.device)
    return split.subset(idx)


def evaluate_row(
    ctx: Context, strategy: Strategy, batch_size: int, policy: EvalPolicy, row: int
) -> tuple[list[float | None], list[float | None]]:
    """One row of the accuracy and loss matrices: the experiences ``policy`` measures after
    experience ``row`` (``-1``: the initial model); ``None`` for the others."""
    n = len(ctx.stream)
    accs: list[float | None] = [None] * n
    losses: list[float | None] = [None] * n
    for j in policy.columns(row, n):
        e = ctx.stream.experiences[j]
        accs[j], losses[j] = evaluate_split(ctx, strategy, _capped(ctx, j, e.test, policy.max_samples), batch_size)
    return accs, losses
