"""Learning-rate schedules as pure functions of the step (nanoGPT style).

Every schedule restarts at each experience (phase): with ``warmup`` > 0 that is a re-warm
and re-decay at each phase (Ibrahim et al. 2024; Gupta et al. 2023). Per-phase maximum LR
and warmup come from ``train.phases`` (see :class:`perennial.train.TrainSettings`).
"""

from __future__ import annotations

import math

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "wsd")


def lr_multiplier(
    step: int, total: int, kind: str, warmup: int = 0, min_ratio: float = 0.0, decay_fraction: float = 0.1
) -> float:
    """Multiplier of the base (maximum) LR at ``step`` (0-based) of ``total`` steps.

    Warmup is linear from ``1/warmup`` to 1 over the first ``warmup`` steps, then:

    - ``constant``: 1;
    - ``cosine``: half-cosine from 1 to ``min_ratio``;
    - ``linear``: straight line from 1 to ``min_ratio``;
    - ``wsd`` (warmup-stable-decay, the "infinite" schedule family): 1 until the last
      ``decay_fraction`` of the steps, then a linear anneal that reaches ``min_ratio`` at the
      last step. The LR stays at its maximum for most of the phase, so training can go on
      indefinitely and the short anneal is done only where a checkpoint is wanted.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        decay = min(max(round(decay_fraction * total), 1 if decay_fraction > 0 else 0), total)
        start = total - decay
        if step < start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * min((step - start + 1) / decay, 1.0)
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    raise ValueError(f"unknown schedule {kind!r}; use {', '.join(SCHEDULES)}")
