"""Learning-rate schedules as pure functions of the step (nanoGPT style)."""

from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, kind: str, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the base LR at ``step`` (0-based) of ``total`` steps.

    ``constant``: 1 after warmup. ``cosine``: half-cosine from 1 to ``min_ratio`` after
    warmup. ``linear``: straight line from 1 to ``min_ratio``. Warmup is linear from
    ``1/warmup`` to 1 over the first ``warmup`` steps.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    raise ValueError(f"unknown schedule {kind!r}; use constant, cosine or linear")
