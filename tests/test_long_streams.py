"""Long streams: evaluation policy after each experience, EWC's merged penalty at constant cost."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from helpers import make_blobs
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.evaluation import summarize
from perennial.models import build_model
from perennial.strategies import EWC
from perennial.strategies.ewc import STIFF_AFTER, diagonal_fisher, merge_quadratic
from perennial.streams import Stream, split_by_class
from perennial.train import Callback, EvalPolicy, TrainSettings, fit

SETTINGS = TrainSettings(epochs=2, batch_size=16, lr=0.01)


def model_for(stream: Stream, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[16])


def long_stream(n_exp: int = 6) -> Stream:
    xtr, ytr = make_blobs(20, 2 * n_exp, seed=3)
    xte, yte = make_blobs(8, 2 * n_exp, seed=3, sample_seed=103)
    return split_by_class(xtr, ytr, xte, yte, classes_per_exp=2, scenario="class", name="long")


# ------------------------------------------------------------------ evaluation policy
class Counter(Callback):
    def __init__(self) -> None:
        self.rows: list[list[bool]] = []

    def on_experience_end(self, ctx, acc, loss):
        self.rows.append([a is not None for a in acc])


def expected_cells(policy: str, n: int) -> list[list[bool]]:
    if policy == "current+next":  # the diagonal and the next experience; the last row complete
        return [[i == n - 1 or i <= j <= i + 1 for j in range(n)] for i in range(n)]
    ahead = {"all": n, "seen": 0, "seen+next": 1}[policy]
    return [[j <= i + ahead for j in range(n)] for i in range(n)]


@pytest.mark.parametrize("policy", ["all", "seen", "seen+next", "current+next"])
def test_policy_measures_exactly_its_cells_and_the_measured_ones_do_not_change(policy):
    s = long_stream(5)
    ref = fit(model_for(s), s, EWC(), SETTINGS, seed=1, eval_policy=EvalPolicy("all"))
    c = Counter()
    r = fit(model_for(s), s, EWC(), SETTINGS, seed=1, callbacks=[c], eval_policy=EvalPolicy(policy))
    expected = expected_cells(policy, 5)
    assert c.rows == expected
    assert [[v is not None for v in row] for row in r.accuracy_matrix] == expected
    assert [[v is not None for v in row] for row in r.loss_matrix] == expected
    # evaluation never changes training: every measured cell equals the full run's
    for i in range(5):
        for j in range(5):
            if expected[i][j]:
                assert r.accuracy_matrix[i][j] == ref.accuracy_matrix[i][j]
    assert r.random_init_acc == ref.random_init_acc  # the initial model: always every experience
    full, part = summarize(ref.accuracy_matrix, ref.random_init_acc), summarize(r.accuracy_matrix, r.random_init_acc)
    needs_rows = ("avg_inc_acc", "forgetting")  # every earlier row of each column
    for k in ("acc", "avg_inc_acc", "bwt", "forgetting", "learning_acc"):
        if policy == "current+next" and k in needs_rows:
            assert math.isnan(part[k]), k  # undefined, never a number made of a partial matrix
        else:
            assert part[k] == pytest.approx(full[k])
    if policy == "seen":
        assert math.isnan(part["fwt"])
    else:
        assert part["fwt"] == pytest.approx(full["fwt"])


def test_default_policy_is_seen_plus_next_and_is_cheaper_than_all():
    s = long_stream(6)
    default = fit(model_for(s), s, EWC(), SETTINGS, seed=0)
    measured = sum(v is not None for row in default.accuracy_matrix for v in row)
    assert measured == sum(min(i + 2, 6) for i in range(6))  # 26 of 36 cells


def test_sample_cap_is_a_fixed_seeded_subset():
    s = long_stream(3)  # 16 test samples per experience
    a = fit(model_for(s), s, EWC(), SETTINGS, seed=0, eval_policy=EvalPolicy("all", max_samples=5))
    b = fit(model_for(s), s, EWC(), SETTINGS, seed=0, eval_policy=EvalPolicy("all", max_samples=5))
    full = fit(model_for(s), s, EWC(), SETTINGS, seed=0, eval_policy=EvalPolicy("all"))
    assert a.accuracy_matrix == b.accuracy_matrix
    cells = [v for row in a.accuracy_matrix for v in row]
    assert all(abs(v * 5 - round(v * 5)) < 1e-9 for v in cells)  # accuracies out of 5 samples
    assert cells != [v for row in full.accuracy_matrix for v in row]


def test_policy_errors_name_the_field():
    with pytest.raises(ValueError, match="after_experience"):
        EvalPolicy("some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["eval.after_experience=everything", "eval.after_experience_samples=0"])
    fields = [f for f, _ in e.value.problems]
    assert "eval.after_experience" in fields and "eval.after_experience_samples" in fields


def test_store_round_trips_unmeasured_cells(tmp_path):
    from perennial import api
    from perennial.store import RunStore

    store = RunStore(tmp_path)
    cfg = build_config(benchmark="split-digits", overrides=["train.epochs=1", "eval.after_experience=seen"])
    rec = api.run(cfg, store=store, run_id="r")
    got = store.get("r")
    assert got.accuracy_matrix == rec.accuracy_matrix
    assert got.accuracy_matrix[0][1:] == [None] * 4 and None not in got.accuracy_matrix[-1]
    assert got.metrics["fwt"] is None or math.isnan(got.metrics["fwt"])
    assert got.metrics["acc"] == pytest.approx(sum(got.accuracy_matrix[-1]) / 5)


# ---------------------------------------------------------------------- EWC merged penalty
def _separate(fishers, anchors, theta):
    return sum((f * (theta - a).pow(2)).sum() for f, a in zip(fishers, anchors, strict=True))


def test_merged_quadratic_equals_the_sum_of_penalties_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    shape = (7, 5)
    fishers = [torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) > 0.3) for _ in range(40)]
    anchors = [torch.randn(shape, generator=g) for _ in range(40)]
    f, a, const = {"w": fishers[0]}, {"w": anchors[0]}, 0.0
    for fk, ak in zip(fishers[1:], anchors[1:], strict=True):
        f, a, c = merge_quadratic(f, a, {"w": fk}, {"w": ak})
        const += c
    theta = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    ref = _separate([x.double() for x in fishers], [x.double() for x in anchors], theta)
    (ref_grad,) = torch.autograd.grad(ref, theta)
    theta2 = theta.detach().float().requires_grad_(True)
    merged = (f["w"] * (theta2 - a["w"]).pow(2)).sum() + const
    (grad,) = torch.autograd.grad(merged, theta2)
    assert float(merged.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-4, atol=1e-5)
    assert f["w"].shape == shape and a["w"].dtype == torch.float32  # one term, whatever the count


class SeparateEWC(EWC):
    """The textbook separate-penalty EWC: one term per past experience (the reference)."""

    def after_experience(self, ctx):
        fisher = diagonal_fisher(
            ctx,
            ctx.experience.train,
            max_samples=self.fisher_samples,
            batch_size=self.fisher_batch_size,
            seed=ctx.seed_for(self.name, ctx.exp_index),
        )
        anchor = {k: p.detach().clone() for k, p in ctx.model.named_parameters() if k in fisher}
        self.state["penalties"].append({"fisher": fisher, "anchor": anchor})

    def loss(self, ctx, batch, logits, loss):
        pens = self.state["penalties"]
        if not pens:
            return loss
        total = loss.new_zeros(())
        for name, p in ctx.model.named_parameters():
            for pen in pens:
                total = total + (pen["fisher"][name] * (p - pen["anchor"][name]).pow(2)).sum()
        return loss + 0.5 * self.ewc_lambda * total


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, ctx, batch, loss):
        self.losses.append(float(loss.detach()))


def test_ewc_matches_the_separate_penalties_at_constant_state_size():
    s = long_stream(6)
    ref_cb, new_cb = Losses(), Losses()
    ref_s, new_s = SeparateEWC(ewc_lambda=1e4), EWC(ewc_lambda=1e4)
    ref = fit(model_for(s), s, ref_s, SETTINGS, seed=0, callbacks=[ref_cb], eval_policy=EvalPolicy("all"))
    new = fit(model_for(s), s, new_s, SETTINGS, seed=0, callbacks=[new_cb], eval_policy=EvalPolicy("all"))
    assert len(ref_s.state["penalties"]) == 6 and len(new_s.state["penalties"]) == 1
    assert len(ref_cb.losses) == len(new_cb.losses)
    # the penalty is part of the loss: same values step by step, to float tolerance
    assert max(abs(a - b) / max(abs(a), 1e-3) for a, b in zip(ref_cb.losses, new_cb.losses, strict=True)) < 1e-3
    for r1, r2 in zip(ref.accuracy_matrix, new.accuracy_matrix, strict=True):
        assert r1 == pytest.approx(r2, abs=0.02)  # at most one test sample of 48 flips


def test_summed_penalty_warns_on_long_streams_and_mean_scale_stays_constant():
    s = long_stream(STIFF_AFTER + 1)
    small = TrainSettings(steps=1, batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model_for(s), s, EWC(fisher_samples=8), small, seed=0)
    assert any("scale=mean" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summed, mean = EWC(fisher_samples=8), EWC(fisher_samples=8, scale="mean")
        fit(model_for(s), s, mean, small, seed=0)
    assert not any("scale=mean" in str(w.message) for w in caught)
    # the mean penalty is the summed one divided by the number of experiences consolidated
    fit(model_for(s), s, summed, small, seed=0)
    as_mean = EWC(fisher_samples=8, scale="mean")
    as_mean.load_state_dict(summed.state_dict())
    from perennial.strategies import Context

    ctx = Context(model=model_for(s), stream=s, device=torch.device("cpu"), seed=0, batch_size=8)
    zero = torch.zeros(())
    p_sum = float(summed.loss(ctx, None, None, zero))
    p_mean = float(as_mean.loss(ctx, None, None, zero))
    assert p_sum > 0 and p_mean == pytest.approx(p_sum / (STIFF_AFTER + 1))
    assert mean.state["count"] == STIFF_AFTER + 1 and len(mean.state["penalties"]) == 1
