"""Language-modelling metrics as pure functions of a validation-loss matrix.

``L[i, j]`` is the mean per-token cross-entropy (nats) on domain ``j``'s validation text after
training on domains ``0..i`` (lower is better); perplexity is ``exp(L)``. Definitions mirror
the accuracy metrics with the sign turned around:

- forgetting of domain ``j`` after phase ``k``: ``L[k, j] - min_{j<=l<k} L[l, j]``, the rise of
  its loss above the best it had since it was trained (Chaudhry-style max-minus-last on loss);
- adaptation in phase ``i >= 1``: ``L[i-1, i] - L[i, i]``, how much the phase lowered the loss
  of its own (new) domain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from perennial.evaluation.metrics import Matrix, _row, as_matrix


def loss_forgetting_per_experience(L: Matrix, k: int | None = None) -> np.ndarray:
    """``f_{k,j} = L[k, j] - min_{j<=l<k} L[l, j]`` for every ``j < k`` (nats)."""
    a = as_matrix(L)
    k = _row(a, k)
    return np.array([a[k, j] - a[j:k, j].min() for j in range(k)], dtype=np.float64)


def loss_forgetting(L: Matrix, k: int | None = None) -> float:
    """Mean loss-based forgetting over the domains before ``k``; ``nan`` when ``k == 0``."""
    f = loss_forgetting_per_experience(L, k)
    return float(f.mean()) if f.size else math.nan


def adaptation_per_experience(L: Matrix) -> np.ndarray:
    """``a_i = L[i-1, i] - L[i, i]`` for every trained phase ``i >= 1`` (nats; larger = more adaptation)."""
    a = as_matrix(L)
    return np.array([a[i - 1, i] - a[i, i] for i in range(1, a.shape[0])], dtype=np.float64)


def adaptation(L: Matrix) -> float:
    """Mean adaptation over the continued phases; ``nan`` with a single phase."""
    ad = adaptation_per_experience(L)
    return float(ad.mean()) if ad.size else math.nan


def average_loss(L: Matrix, k: int | None = None) -> float:
    """``mean_{j<=k} L[k, j]``: the validation loss over the domains seen so far."""
    a = as_matrix(L)
    k = _row(a, k)
    return float(a[k, : k + 1].mean())


def perplexity(loss: float) -> float:
    """``exp(loss)`` (loss in nats per token)."""
    return float(math.exp(loss))


def lm_summary(
    L: Matrix, R: Matrix | None = None, initial_loss: Sequence[float] | np.ndarray | None = None
) -> dict[str, float]:
    """Every LM metric in one dict.

    ``loss`` (mean validation loss over the seen domains after the last phase), ``perplexity``
    (``exp(loss)``), ``forgetting`` (loss-based, above), ``forgetting_first`` (of domain 0),
    ``adaptation``, ``learning_loss`` (mean ``L[i, i]``), ``initial_loss`` (the untrained
    model's mean loss) and, given the next-token accuracy matrix ``R``, ``acc``.
    """
    a = as_matrix(L)
    k = a.shape[0] - 1
    f = loss_forgetting_per_experience(a)
    out = {
        "loss": average_loss(a),
        "perplexity": perplexity(average_loss(a)),
        "forgetting": float(f.mean()) if f.size else math.nan,
        "forgetting_first": float(f[0]) if f.size else math.nan,
        "adaptation": adaptation(a),
        "learning_loss": float(np.diag(a).mean()),
        "initial_loss": float(np.mean(initial_loss)) if initial_loss is not None and len(initial_loss) else math.nan,
    }
    if R is not None:
        r = as_matrix(R)
        out["acc"] = float(r[k, : k + 1].mean())
    return out
