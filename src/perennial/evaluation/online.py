"""Online (prequential) metrics: pure functions of the per-batch log of an online run.

Each row of the log is one incoming batch, scored *before* the model trained on it:
``[experience, correct predictions, samples, summed negative log-likelihood (nats)]`` (see
:mod:`perennial.train.online`). Definitions:

- **online accuracy** (Cai et al. 2021, CLOC): the running accuracy of those predictions over
  the whole stream, ``sum(correct) / sum(samples)``;
- **cumulative log-loss** (prequential / minimum-description-length view, Bornschein et al.
  2024): ``sum(nll)``, the total code length of the stream's labels in nats; ``online_logloss``
  is its mean per sample;
- **anytime accuracy** (Koh et al. 2022, A_AUC): the mean, over the continual-evaluation times
  (``eval.every`` steps), of the accuracy on the held-out test sets of the experiences seen so
  far (the experience whose training has not started yet excluded); a function of the
  continual-evaluation log (:mod:`perennial.evaluation.continual`).

Functions never mutate their input, validate it and return ``nan`` where undefined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from perennial.evaluation.continual import EvalLog, experience_starts, validate_log

ONLINE_METRICS = ("online_acc", "online_logloss", "anytime_acc")


def _array(log: Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(log, dtype=np.float64).reshape(-1, 4) if len(log) else np.zeros((0, 4))
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"online log rows must be [exp, correct, n, nll], got shape {a.shape}")
    if not np.isfinite(a[:, :3]).all() or (a[:, 1] < 0).any() or (a[:, 1] > a[:, 2]).any():
        raise ValueError("online log has a row with correct < 0, correct > n or a non-finite count")
    return a


def online_accuracy(log: Sequence[Sequence[float]]) -> float:
    a = _array(log)
    n = a[:, 2].sum()
    return float(a[:, 1].sum() / n) if n > 0 else math.nan


def cumulative_logloss(log: Sequence[Sequence[float]]) -> float:
    a = _array(log)
    return float(a[:, 3].sum()) if len(a) else math.nan


def online_logloss(log: Sequence[Sequence[float]]) -> float:
    a = _array(log)
    n = a[:, 2].sum()
    return float(a[:, 3].sum() / n) if n > 0 else math.nan


def online_curve(log: Sequence[Sequence[float]], points: int = 200) -> list[list[float]]:
    """``[[batches seen, running online accuracy], ...]`` at up to ``points`` evenly spaced batches."""
    a = _array(log)
    if len(a) == 0:
        return []
    correct, n = np.cumsum(a[:, 1]), np.cumsum(a[:, 2])
    idx = np.unique(np.linspace(0, len(a) - 1, min(points, len(a))).round().astype(int))
    return [[int(i + 1), float(correct[i] / max(n[i], 1.0))] for i in idx]


def anytime_accuracy(log: EvalLog) -> float:
    """Mean over evaluation times of the mean accuracy on the experiences seen by then."""
    recs = [r for r in validate_log(log) if r.grid and r.model == ""]
    starts = experience_starts(recs)
    by_time: dict[tuple[int, int], list[float]] = {}
    for r in recs:
        unseen = r.exp_eval > r.exp_trained or (r.exp_eval == r.exp_trained and r.step == starts.get(r.exp_trained))
        if not unseen:
            by_time.setdefault((r.step, r.exp_trained), []).append(r.acc)
    return float(np.mean([np.mean(v) for v in by_time.values()])) if by_time else math.nan


def summarize_online(log: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The online metrics of a per-batch log, plus the running-accuracy curve for the report."""
    return {
        "online_acc": online_accuracy(log),
        "cumulative_logloss": cumulative_logloss(log),
        "online_logloss": online_logloss(log),
        "online_batches": len(log),
        "online_curve": online_curve(log),
    }
