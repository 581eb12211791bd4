"""Continual-evaluation metrics: pure functions of the per-step evaluation log.

The log holds one :class:`EvalRecord` per (evaluation time, evaluated experience): the model
was evaluated on experience ``exp_eval`` after ``step`` optimizer steps of the whole run,
while training on experience ``exp_trained``. Evaluation times are every N steps counted
from the start of each experience, plus each experience's start and end (``grid=True``);
the current experience is also evaluated after each of its first beta steps for the learning
curve area (``grid=False`` unless the step is also on the grid).

Definitions follow ``shared/REFERENCES.md`` (De Lange, van de Ven & Tuytelaars, "Continual
evaluation for lifelong learning: identifying the stability gap", ICLR 2023; A-GEM,
Chaudhry et al. 2019, for LCA). Functions never mutate their input, validate it, and return
``nan`` where a metric is undefined (e.g. min-ACC before training has moved past any
experience).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EvalRecord:
    """One measurement of the per-step evaluation log."""

    step: int  # optimizer steps taken so far in the whole run
    exp_trained: int  # experience being trained when the evaluation ran
    exp_eval: int  # experience evaluated
    acc: float  # accuracy on the experience's fixed evaluation subset, in [0, 1]
    loss: float | None = None  # mean cross-entropy on that subset
    grid: bool = True  # on the regular schedule (every N steps, experience start and end)
    #: which network was evaluated: "" for the run's prediction (the strategy's ``predict``);
    #: "model" for the working model and a teacher's name for a slow copy (``ctx.teachers``)
    model: str = ""


EvalLog = Sequence[EvalRecord]


def validate_log(log: Iterable[EvalRecord]) -> list[EvalRecord]:
    """Check every record and return them sorted by (step, exp_trained, exp_eval).

    Raises ``ValueError`` naming the first bad record: negative steps or experience indices,
    accuracies outside [0, 1] or non-finite, duplicated (step, exp_trained, exp_eval) keys.
    """
    out = list(log)
    seen: set[tuple[int, int, int]] = set()
    for i, r in enumerate(out):
        if not isinstance(r, EvalRecord):
            raise ValueError(f"eval log entry {i} is a {type(r).__name__}, expected an EvalRecord")
        if r.step < 0 or r.exp_trained < 0 or r.exp_eval < 0:
            raise ValueError(f"eval log entry {i} has a negative step or experience index: {r}")
        if not (isinstance(r.acc, (int, float)) and math.isfinite(r.acc) and 0.0 <= r.acc <= 1.0):
            raise ValueError(f"eval log entry {i} has accuracy {r.acc!r}; accuracies must be finite, in [0, 1]")
        key = (r.step, r.exp_trained, r.exp_eval)
        if key in seen:
            raise ValueError(f"eval log has two entries for step {r.step}, trained {r.exp_trained}, eval {r.exp_eval}")
        seen.add(key)
    return sorted(out, key=lambda r: (r.step, r.exp_trained, r.exp_eval))


def experience_starts(log: EvalLog) -> dict[int, int]:
    """Step at which training on each logged experience started (its first logged step)."""
    starts: dict[int, int] = {}
    for r in validate_log(log):
        starts[r.exp_trained] = min(starts.get(r.exp_trained, r.step), r.step)
    return dict(sorted(starts.items()))


def curve(log: EvalLog, exp: int, *, grid_only: bool = False, from_exp: int | None = None) -> tuple[np.ndarray, ...]:
    """(steps, exp_trained, acc) of experience ``exp``, in time order.

    ``from_exp`` keeps only evaluations made while training experience ``from_exp`` or later;
    ``grid_only`` keeps only the regular schedule (drops the extra LCA evaluations).
    """
    rows = [
        r
        for r in validate_log(log)
        if r.exp_eval == exp and (not grid_only or r.grid) and (from_exp is None or r.exp_trained >= from_exp)
    ]
    return (
        np.array([r.step for r in rows], dtype=np.int64),
        np.array([r.exp_trained for r in rows], dtype=np.int64),
        np.array([r.acc for r in rows], dtype=np.float64),
    )


def _n_trained(log: list[EvalRecord]) -> int:
    return max((r.exp_trained for r in log), default=-1) + 1


def min_accuracy_per_experience(log: EvalLog) -> dict[int, float]:
    """For every experience training has moved past: its minimum accuracy after that point."""
    rows = validate_log(log)
    out: dict[int, float] = {}
    for r in rows:
        if r.exp_trained > r.exp_eval:
            out[r.exp_eval] = min(out.get(r.exp_eval, math.inf), r.acc)
    return dict(sorted(out.items()))


def min_acc(log: EvalLog) -> float:
    """min-ACC: mean over earlier experiences of the minimum accuracy seen after training moved past them."""
    per = min_accuracy_per_experience(log)
    return float(np.mean(list(per.values()))) if per else math.nan


def wc_acc(log: EvalLog) -> float:
    """WC-ACC = (1/k) * acc_current + (1 - 1/k) * min-ACC, at the last logged step.

    ``k`` = experiences trained so far; ``acc_current`` = the last logged accuracy on the
    experience being trained. With one experience it is just ``acc_current``.
    """
    rows = validate_log(log)
    k = _n_trained(rows)
    current = [r for r in rows if r.exp_eval == k - 1 and r.exp_trained == k - 1]
    if not current:
        return math.nan
    acc_current = current[-1].acc
    if k == 1:
        return float(acc_current)
    m = min_acc(rows)
    return float(acc_current / k + (1.0 - 1.0 / k) * m) if math.isfinite(m) else math.nan


def _window_extreme(a: np.ndarray, w: int, sign: float) -> float:
    """Largest ``sign * (a[i] - a[j])`` with ``i < j < i + w``; 0 when fewer than two points."""
    best = 0.0
    for d in range(1, min(w, len(a))):
        best = max(best, float((sign * (a[:-d] - a[d:])).max()))
    return best


def _check_window(w: int) -> None:
    if not isinstance(w, int) or w < 2:
        raise ValueError(f"window must be an integer >= 2 (evaluation steps), got {w!r}")


def windowed_forgetting_per_experience(log: EvalLog, w: int = 10) -> dict[int, float]:
    """WF^w per experience: the largest drop ``A_i - A_j`` (i < j) within any w consecutive
    evaluation steps (of the regular schedule), from when the experience was first trained.
    Only experiences training has moved past are reported."""
    _check_window(w)
    rows = validate_log(log)
    k = _n_trained(rows)
    return {e: _window_extreme(curve(rows, e, grid_only=True, from_exp=e)[2], w, 1.0) for e in range(k - 1)}


def windowed_plasticity_per_experience(log: EvalLog, w: int = 10) -> dict[int, float]:
    """WP^w per experience: the largest rise ``A_j - A_i`` (i < j) within any w consecutive
    evaluation steps, from when the experience was first trained (every trained experience)."""
    _check_window(w)
    rows = validate_log(log)
    k = _n_trained(rows)
    return {e: _window_extreme(curve(rows, e, grid_only=True, from_exp=e)[2], w, -1.0) for e in range(k)}


def windowed_forgetting(log: EvalLog, w: int = 10) -> float:
    """WF^w averaged over the experiences training has moved past; ``nan`` if none."""
    per = windowed_forgetting_per_experience(log, w)
    return float(np.mean(list(per.values()))) if per else math.nan


def windowed_plasticity(log: EvalLog, w: int = 10) -> float:
    """WP^w averaged over every trained experience; ``nan`` for an empty log."""
    per = windowed_plasticity_per_experience(log, w)
    return float(np.mean(list(per.values()))) if per else math.nan


def learning_curve_area(log: EvalLog, beta: int = 10) -> float:
    """LCA_beta (A-GEM): mean accuracy on each experience over its first ``beta`` training
    steps (b = 0..beta, b = 0 being right before training on it starts), averaged over
    experiences."""
    if not isinstance(beta, int) or beta < 0:
        raise ValueError(f"beta must be an integer >= 0, got {beta!r}")
    rows = validate_log(log)
    starts = experience_starts(rows)
    per = []
    for e, s in starts.items():
        accs = [r.acc for r in rows if r.exp_trained == e and r.exp_eval == e and r.step - s <= beta]
        if accs:
            per.append(float(np.mean(accs)))
    return float(np.mean(per)) if per else math.nan


def stability_gaps(log: EvalLog) -> list[dict[str, Any]]:
    """The stability gap of each experience at the switch right after it.

    For experience ``e`` and the switch to ``e + 1`` (at step ``s``):

    - ``acc_before``: accuracy on ``e`` right before the switch (end of training on ``e``);
    - ``acc_min`` and ``min_after_steps``: the minimum accuracy on ``e`` while ``e + 1`` is
      trained, and how many steps after the switch it occurred;
    - ``gap = acc_before - acc_min`` (the size of the drop);
    - ``acc_end``: accuracy on ``e`` at the end of training on ``e + 1``;
    - ``recover_steps``: steps after the switch until the accuracy, after its minimum, first
      climbs back to ``acc_before - gap / 2`` (half of the drop recovered); ``None`` if that
      did not happen while ``e + 1`` was trained (no recovery). ``0`` when there was no drop.
    """
    rows = validate_log(log)
    starts = experience_starts(rows)
    out = []
    for e in sorted(starts):
        if e + 1 not in starts:
            continue
        before = [r for r in rows if r.exp_eval == e and r.exp_trained == e]
        after = [r for r in rows if r.exp_eval == e and r.exp_trained == e + 1]
        if not before or not after:
            continue
        s = starts[e + 1]
        acc_before = before[-1].acc
        i_min = int(np.argmin([r.acc for r in after]))
        acc_min = after[i_min].acc
        gap = acc_before - acc_min
        recover: int | None
        if gap <= 0:
            recover = 0
        else:
            target = acc_before - gap / 2
            recover = next((r.step - s for r in after[i_min:] if r.acc >= target), None)
        out.append(
            {
                "experience": e,
                "switch_step": s,
                "acc_before": acc_before,
                "acc_min": acc_min,
                "min_after_steps": after[i_min].step - s,
                "gap": gap,
                "acc_end": after[-1].acc,
                "recover_steps": recover,
            }
        )
    return out


def summarize_log(log: EvalLog, window: int = 10, lca_beta: int = 10) -> dict[str, Any]:
    """Every continual-evaluation metric in one dict.

    Keys: ``min_acc``, ``wc_acc``, ``wf``, ``wp`` (window ``window``), ``lca`` (``lca_beta``),
    ``stability_gap`` (mean gap over switches), ``gap_recover_steps`` (mean over the switches
    that recovered half of their drop; ``nan`` if none did), ``gap_recovered`` (share of
    switches that did), ``stability_gaps`` (the per-experience list of :func:`stability_gaps`)
    and ``eval_points`` (number of records).
    """
    rows = validate_log(log)
    gaps = stability_gaps(rows)
    recovered = [g["recover_steps"] for g in gaps if g["recover_steps"] is not None]
    return {
        "min_acc": min_acc(rows),
        "wc_acc": wc_acc(rows),
        "wf": windowed_forgetting(rows, window),
        "wp": windowed_plasticity(rows, window),
        "lca": learning_curve_area(rows, lca_beta),
        "stability_gap": float(np.mean([g["gap"] for g in gaps])) if gaps else math.nan,
        "gap_recover_steps": float(np.mean(recovered)) if recovered else math.nan,
        "gap_recovered": len(recovered) / len(gaps) if gaps else math.nan,
        "stability_gaps": gaps,
        "eval_points": len(rows),
    }


#: scalar keys of :func:`summarize_log` (what tables and comparisons show)
CONTINUAL_METRICS = ("min_acc", "wc_acc", "wf", "wp", "lca", "stability_gap", "gap_recover_steps")
