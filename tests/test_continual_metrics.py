"""Continual-evaluation metrics (pure functions of the per-step log), checked by hand and by properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perennial.evaluation import (
    EvalRecord,
    learning_curve_area,
    min_acc,
    stability_gaps,
    summarize_log,
    validate_log,
    wc_acc,
    windowed_forgetting,
    windowed_plasticity,
)


def R(step, trained, ev, acc, grid=True):
    return EvalRecord(step, trained, ev, acc, None, grid)


# Two experiences, evaluated every 5 steps; experience 1 starts at step 10.
LOG = [
    R(0, 0, 0, 0.0),
    R(1, 0, 0, 0.5, grid=False),  # an extra LCA point (b = 1)
    R(5, 0, 0, 0.8),
    R(10, 0, 0, 0.9),  # end of experience 0
    R(10, 1, 1, 0.0),  # start of experience 1 (b = 0)
    R(15, 1, 0, 0.3),
    R(15, 1, 1, 0.7),
    R(20, 1, 0, 0.6),
    R(20, 1, 1, 0.8),
    R(25, 1, 0, 0.7),
    R(25, 1, 1, 0.9),
]


def test_hand_computed_values():
    assert min_acc(LOG) == pytest.approx(0.3)
    assert wc_acc(LOG) == pytest.approx(0.5 * 0.9 + 0.5 * 0.3)
    # experience 0 on the regular schedule: 0, .8, .9, .3, .6, .7 -> largest drop .9 -> .3
    assert windowed_forgetting(LOG, 2) == pytest.approx(0.6)
    # rises: experience 0 .8 (w=2) / .9 (w=4); experience 1 (0, .7, .8, .9): .7 / .9
    assert windowed_plasticity(LOG, 2) == pytest.approx((0.8 + 0.7) / 2)
    assert windowed_plasticity(LOG, 4) == pytest.approx(0.9)
    # LCA_5: experience 0 at b=0,1,5 -> (0 + .5 + .8)/3; experience 1 at b=0,5 -> .35
    assert learning_curve_area(LOG, 5) == pytest.approx(((0.0 + 0.5 + 0.8) / 3 + 0.35) / 2)
    (gap,) = stability_gaps(LOG)
    assert gap["experience"] == 0 and gap["switch_step"] == 10
    assert gap["acc_before"] == 0.9 and gap["acc_min"] == 0.3 and gap["gap"] == pytest.approx(0.6)
    assert gap["min_after_steps"] == 5 and gap["acc_end"] == 0.7
    assert gap["recover_steps"] == 10  # back to >= .9 - .6/2 = .6 at step 20


def test_no_recovery_and_no_drop():
    never = [R(0, 0, 0, 0.0), R(10, 0, 0, 1.0), R(10, 1, 1, 0.0), R(15, 1, 0, 0.1), R(20, 1, 0, 0.2)]
    (g,) = stability_gaps(never)
    assert g["gap"] == pytest.approx(0.9) and g["recover_steps"] is None
    s = summarize_log(never)
    assert s["gap_recovered"] == 0.0 and math.isnan(s["gap_recover_steps"])
    flat = [R(0, 0, 0, 0.0), R(10, 0, 0, 0.8), R(10, 1, 1, 0.0), R(15, 1, 0, 0.9)]
    (g,) = stability_gaps(flat)
    assert g["gap"] == pytest.approx(-0.1) and g["recover_steps"] == 0


def test_undefined_with_one_experience():
    one = [R(0, 0, 0, 0.0), R(5, 0, 0, 0.7)]
    assert math.isnan(min_acc(one)) and math.isnan(windowed_forgetting(one))
    assert wc_acc(one) == 0.7 and stability_gaps(one) == []
    s = summarize_log(one)
    assert math.isnan(s["stability_gap"]) and s["eval_points"] == 2
    assert math.isnan(min_acc([]))


def test_invalid_logs_are_rejected():
    with pytest.raises(ValueError, match="accuracy"):
        validate_log([R(0, 0, 0, 1.5)])
    with pytest.raises(ValueError, match="accuracy"):
        validate_log([R(0, 0, 0, float("nan"))])
    with pytest.raises(ValueError, match="two entries"):
        validate_log([R(0, 0, 0, 0.5), R(0, 0, 0, 0.6)])
    with pytest.raises(ValueError, match="negative"):
        validate_log([R(-1, 0, 0, 0.5)])
    with pytest.raises(ValueError, match="EvalRecord"):
        validate_log([(0, 0, 0, 0.5)])
    with pytest.raises(ValueError, match="window"):
        windowed_forgetting(LOG, 1)
    with pytest.raises(ValueError, match="beta"):
        learning_curve_area(LOG, -1)


def test_order_of_the_log_does_not_matter_and_input_is_not_mutated():
    shuffled = list(reversed(LOG))
    before = list(shuffled)
    a, b = summarize_log(LOG, 3, 5), summarize_log(shuffled, 3, 5)
    assert a == b
    assert shuffled == before


@st.composite
def logs(draw):
    """A log on a regular schedule: T experiences of S steps, evaluated every E steps."""
    T = draw(st.integers(1, 4))
    S = draw(st.integers(1, 12))
    E = draw(st.integers(1, 4))
    acc = st.floats(0.0, 1.0, allow_nan=False)
    out = []
    for k in range(T):
        s0 = k * S
        out.append(R(s0, k, k, draw(acc)))
        for b in range(1, S + 1):
            if b % E == 0 or b == S:
                out += [R(s0 + b, k, e, draw(acc)) for e in range(k + 1)]
    return out


@settings(max_examples=60, deadline=None)
@given(logs(), st.integers(2, 6))
def test_properties(log, w):
    s = summarize_log(log, window=w, lca_beta=3)
    n_trained = max(r.exp_trained for r in log) + 1
    if n_trained > 1:
        assert 0.0 <= s["min_acc"] <= 1.0
        # the minimum after moving past an experience is at most its final accuracy
        finals = {r.exp_eval: r.acc for r in validate_log(log) if r.exp_trained > r.exp_eval}
        assert s["min_acc"] <= sum(finals.values()) / len(finals) + 1e-12
        assert 0.0 <= s["wf"] <= 1.0
        assert windowed_forgetting(log, w + 1) >= s["wf"] - 1e-12  # a wider window sees at least as much
        for g in s["stability_gaps"]:
            assert g["gap"] >= g["acc_before"] - g["acc_end"] - 1e-12
            assert g["recover_steps"] is None or g["recover_steps"] >= 0
    else:
        assert math.isnan(s["min_acc"])
    assert 0.0 <= s["wp"] <= 1.0 and windowed_plasticity(log, w + 1) >= s["wp"] - 1e-12
    assert 0.0 <= s["lca"] <= 1.0
    assert 0.0 <= s["wc_acc"] <= 1.0 or math.isnan(s["wc_acc"])
