from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from perennial.evaluation import metrics as M

R3 = [
    [0.9, 0.1, 0.2],
    [0.5, 0.8, 0.1],
    [0.3, 0.6, 0.7],
]


def test_hand_computed_values():
    assert M.average_accuracy(R3) == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert M.average_accuracy(R3, 0) == pytest.approx(0.9)
    assert M.average_accuracy(R3, 1) == pytest.approx((0.5 + 0.8) / 2)
    assert M.average_incremental_accuracy(R3) == pytest.approx((0.9 + 0.65 + 1.6 / 3) / 3)
    assert M.backward_transfer(R3) == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)
    # forgetting, max-minus-last: exp0 max(0.9, 0.5) - 0.3 = 0.6; exp1 max(0.8) - 0.6 = 0.2
    assert M.forgetting(R3) == pytest.approx(0.4)
    assert M.forgetting(R3, 1) == pytest.approx(0.4)
    assert M.learning_accuracy(R3) == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    # FWT = mean(R[0,1] - b1, R[1,2] - b2)
    assert M.forward_transfer(R3, [0.1, 0.1, 0.1]) == pytest.approx(((0.1 - 0.1) + (0.1 - 0.1)) / 2)
    assert M.forward_transfer(R3, [0.0, 0.05, 0.0]) == pytest.approx(((0.1 - 0.05) + (0.1 - 0.0)) / 2)


def test_forgetting_is_max_minus_last_not_first_minus_last():
    # exp0 rises after it was learned (0.5 -> 0.9) then drops to 0.4: max-minus-last = 0.5
    R = [[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.8, 0.9]]
    assert M.forgetting_per_experience(R)[0] == pytest.approx(0.5)
    assert M.backward_transfer(R) == pytest.approx(((0.4 - 0.5) + 0.0) / 2)


def test_partial_matrix_uses_last_row():
    R = np.array(R3)[:2]
    assert M.final_accuracy(R) == pytest.approx(0.65)
    assert M.backward_transfer(R) == pytest.approx(0.5 - 0.9)


def _masked(R, keep):
    """``R`` with the cells ``keep(i, j)`` rejects replaced by None (not measured)."""
    return [[v if keep(i, j) else None for j, v in enumerate(row)] for i, row in enumerate(R)]


@pytest.mark.parametrize("policy", ["seen+next", "seen"])
def test_unmeasured_cells_leave_the_metrics_that_do_not_need_them_unchanged(policy):
    rng = np.random.default_rng(0)
    full = rng.uniform(0, 1, size=(6, 6)).tolist()
    b = rng.uniform(0, 0.2, size=6).tolist()
    ahead = 1 if policy == "seen+next" else 0
    part = _masked(full, lambda i, j: j <= i + ahead)
    assert sum(v is None for row in part for v in row) > 0
    whole, partial = M.summarize(full, b), M.summarize(part, b)
    for key in ("acc", "avg_inc_acc", "bwt", "forgetting", "learning_acc"):
        assert partial[key] == pytest.approx(whole[key], abs=1e-12), key
    if policy == "seen+next":
        assert partial["fwt"] == pytest.approx(whole["fwt"], abs=1e-12)
    else:  # forward transfer needs R[i-1, i], which "seen" does not measure
        assert math.isnan(partial["fwt"])
    # stopped early: the same holds for every prefix of rows
    for rows in range(1, 6):
        assert M.final_accuracy(part[:rows]) == pytest.approx(M.final_accuracy(full[:rows]))


def test_a_metric_that_needs_an_unmeasured_cell_is_nan_not_a_wrong_number():
    R = [[0.9, None, None], [None, 0.8, None], [0.3, 0.6, 0.7]]  # R[1, 0] missing
    assert math.isnan(M.forgetting(R))
    assert math.isnan(M.average_accuracy(R, 1))
    assert M.final_accuracy(R) == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert M.backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)


def test_single_row_undefined_values_are_nan():
    R = [[0.9, 0.1]]
    assert math.isnan(M.backward_transfer(R))
    assert math.isnan(M.forgetting(R))
    assert math.isnan(M.forward_transfer(R, [0.1, 0.1]))
    assert M.final_accuracy(R) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "bad",
    [
        [0.5, 0.4],
        [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
        [[float("inf"), 0.1], [0.1, 0.1]],
        [[0.1, "a"]],
        [[0.1], [0.1, 0.2]],
        np.zeros((0, 3)),
    ],
)
def test_shape_and_value_validation(bad):
    with pytest.raises(ValueError):
        M.summarize(bad)


def test_fwt_needs_one_baseline_per_experience():
    with pytest.raises(ValueError, match="one value per experience"):
        M.forward_transfer(R3, [0.1, 0.1])


def matrices():
    return st.integers(1, 6).flatmap(
        lambda t: st.tuples(
            st.integers(1, t),
            arrays(np.float64, (t, t), elements=st.floats(0, 1, allow_nan=False)),
        ).map(lambda p: p[1][: p[0]])
    )


@settings(max_examples=200, deadline=None)
@given(matrices())
def test_properties(R):
    before = R.copy()
    s = M.summarize(R, np.zeros(R.shape[1]))
    assert np.array_equal(R, before), "metrics must not mutate their input"
    assert 0.0 <= s["acc"] <= 1.0
    assert 0.0 <= s["avg_inc_acc"] <= 1.0
    assert 0.0 <= s["learning_acc"] <= 1.0
    if R.shape[0] > 1:
        # max over l >= j includes l = j, so forgetting is at least minus BWT
        assert s["forgetting"] >= -s["bwt"] - 1e-12
        assert -1.0 <= s["bwt"] <= 1.0
    else:
        assert math.isnan(s["bwt"]) and math.isnan(s["forgetting"])


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 6), elements=st.floats(0, 1)))
def test_no_change_means_no_forgetting(col_values):
    T = len(col_values)
    R = np.tile(col_values, (T, 1))  # every row identical: nothing changes after learning
    assert M.forgetting(R) == 0.0 or T == 1
    if T > 1:
        assert M.backward_transfer(R) == pytest.approx(0.0)
