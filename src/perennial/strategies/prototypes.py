"""Shared pieces of the prototype methods (simplecil, first-session, slca): batched feature
extraction and masking of the classes a prediction may not choose."""

from __future__ import annotations

import torch
from torch import Tensor

from perennial.models import MASK_VALUE
from perennial.strategies.base import Context
from perennial.streams.core import Split


@torch.no_grad()
def split_features(ctx: Context, split: Split, batch_size: int = 1024) -> Tensor:
    """Features ``model.features(x)`` of a whole split, in eval mode, without gradients."""
    model = ctx.model
    was_training = model.training
    model.eval()
    try:
        parts = [model.features(split.x[i : i + batch_size]) for i in range(0, len(split), batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        return torch.zeros(0, getattr(model, "feature_dim", 0), device=split.x.device)
    return torch.cat(parts).float()


def mask_logits(ctx: Context, logits: Tensor, allowed: Tensor, t: Tensor) -> Tensor:
    """Give classes outside ``allowed`` (bool, per class) and, in task-incremental streams,
    outside the sample's task the logit ``MASK_VALUE`` (finite, so losses stay finite)."""
    keep = allowed.to(logits.device)[None, :].expand_as(logits)
    task_mask = getattr(ctx.model.head, "mask", None)
    if ctx.scenario == "task" and isinstance(task_mask, Tensor):
        keep = keep & task_mask[t]
    return logits.masked_fill(~keep, MASK_VALUE)


def no_training(split: Split) -> Split:
    """An empty split: the loop takes no step on this experience."""
    return split.subset(torch.zeros(0, dtype=torch.long, device=split.y.device))
