"""Batched evaluation of a model (through the strategy's ``predict``) on splits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perennial.strategies.base import Context, Strategy
from perennial.streams.core import Split


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
