"""Continual-learning metrics as pure functions of an accuracy matrix.

``R[i, j]`` is the score on experience ``j`` after training on experiences ``0..i``.
``R`` has ``k + 1`` rows (experiences trained so far; a finished run has ``T``) and ``T``
columns (every experience, seen or not). Functions never mutate their input, validate its
shape, and report values for the *last* row unless told otherwise. Undefined values (e.g.
BWT after a single experience) are ``nan``. Definitions follow ``shared/REFERENCES.md``.

Cells that were not measured (``fit``'s evaluation policy measures the seen experiences and
the next one by default, see :class:`perennial.train.EvalPolicy`) are ``None`` (or ``nan``);
a metric that needs such a cell is ``nan``, one that does not is unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Matrix = np.ndarray | Sequence[Sequence[float]]


def as_matrix(R: Matrix) -> np.ndarray:
    """Validate and copy ``R`` to a float64 array of shape (rows, T) with 1 <= rows <= T;
    unmeasured cells (``None``) become ``nan``."""
    try:
        a = np.array(R, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"accuracy matrix must be rows of numbers (None: not measured): {e}") from None
    if a.ndim != 2:
        raise ValueError(
            f"accuracy matrix must be 2-D (rows = experiences trained, cols = experiences), got {a.ndim}-D"
        )
    rows, cols = a.shape
    if rows < 1 or rows > cols:
        raise ValueError(f"accuracy matrix must have 1 <= rows <= columns, got shape {a.shape}")
    if np.isinf(a).any():
        raise ValueError("accuracy matrix contains inf")
    return a


def _row(a: np.ndarray, k: int | None) -> int:
    last = a.shape[0] - 1
    if k is None:
        return last
    if not 0 <= k <= last:
        raise ValueError(f"k must be in [0, {last}], got {k}")
    return k


def average_accuracy(R: Matrix, k: int | None = None) -> float:
    """``A_k = mean_{j<=k} R[k, j]``: mean accuracy over the experiences seen so far."""
    a = as_matrix(R)
    k = _row(a, k)
    return float(a[k, : k + 1].mean())


def final_accuracy(R: Matrix) -> float:
    """``A`` after the last trained experience (``ACC``)."""
    return average_accuracy(R)


def average_incremental_accuracy(R: Matrix) -> float:
    """Mean of ``A_k`` over every trained experience ``k`` (Rebuffi et al., iCaRL)."""
    a = as_matrix(R)
    return float(np.mean([a[k, : k + 1].mean() for k in range(a.shape[0])]))


def backward_transfer(R: Matrix) -> float:
    """``BWT = mean_{i<k} (R[k, i] - R[i, i])`` (Lopez-Paz & Ranzato 2017); negative = forgetting."""
    a = as_matrix(R)
    k = a.shape[0] - 1
    if k == 0:
        return math.nan
    return float(np.mean(a[k, :k] - np.diag(a)[:k]))


def forward_transfer(R: Matrix, random_init: Sequence[float] | np.ndarray) -> float:
    """``FWT = mean_{1<=i<=k} (R[i-1, i] - b_i)``, ``b`` = accuracy of the randomly initialised model."""
    a = as_matrix(R)
    b = np.asarray(random_init, dtype=np.float64)
    if b.shape != (a.shape[1],):
        raise ValueError(f"random_init must have one value per experience ({a.shape[1]}), got shape {b.shape}")
    k = a.shape[0] - 1
    if k == 0 or a.shape[1] < 2:
        return math.nan
    idx = np.arange(1, k + 1)
    return float(np.mean(a[idx - 1, idx] - b[idx]))


def forgetting_per_experience(R: Matrix, k: int | None = None) -> np.ndarray:
    """``f_{k,j} = max_{j<=l<k} R[l, j] - R[k, j]`` for every ``j < k`` (Chaudhry et al. 2018).

    This is max-minus-last. (Avalanche's "forgetting" is first-minus-last: ``R[j, j] - R[k, j]``.)
    """
    a = as_matrix(R)
    k = _row(a, k)
    return np.array([a[j:k, j].max() - a[k, j] for j in range(k)], dtype=np.float64)


def forgetting(R: Matrix, k: int | None = None) -> float:
    """``F_k = mean_{j<k} f_{k,j}`` (max-minus-last); ``nan`` when ``k == 0``."""
    f = forgetting_per_experience(R, k)
    return float(f.mean()) if f.size else math.nan


def learning_accuracy(R: Matrix) -> float:
    """Plasticity: ``mean_i R[i, i]`` over the trained experiences."""
    a = as_matrix(R)
    return float(np.diag(a).mean())


def intransigence(R: Matrix, joint_accuracy: Sequence[float] | np.ndarray) -> float:
    """``mean_k (joint_k - R[k, k])``; ``joint_k`` = accuracy of a jointly trained model on experience k."""
    a = as_matrix(R)
    j = np.asarray(joint_accuracy, dtype=np.float64)[: a.shape[0]]
    return float(np.mean(j - np.diag(a)))


def summarize(R: Matrix, random_init: Sequence[float] | np.ndarray | None = None) -> dict[str, float]:
    """Every matrix metric in one dict (keys: acc, avg_inc_acc, bwt, fwt, forgetting, learning_acc)."""
    out = {
        "acc": final_accuracy(R),
        "avg_inc_acc": average_incremental_accuracy(R),
        "bwt": backward_transfer(R),
        "forgetting": forgetting(R),
        "learning_acc": learning_accuracy(R),
    }
    out["fwt"] = forward_transfer(R, random_init) if random_init is not None else math.nan
    return out
