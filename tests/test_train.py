from __future__ import annotations

import itertools

import pytest
import torch

from helpers import tiny_stream
from perennial.errors import DivergenceError, ScenarioError
from perennial.models import MASK_VALUE, build_model
from perennial.strategies import EWC, Batch, Context, Naive, Strategy
from perennial.strategies.ewc import _linear_layers, diagonal_fisher
from perennial.train import Callback, TrainSettings, fit, lr_multiplier
from perennial.train.loop import steps_for


def model_for(stream, hidden=(16,)):
    torch.manual_seed(0)
    return build_model(
        "mlp", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, hidden=list(hidden)
    )


def test_fit_fills_the_accuracy_matrix_and_counts_steps():
    s = tiny_stream()
    r = fit(model_for(s), s, Naive(), TrainSettings(epochs=3, batch_size=16), seed=0)
    assert len(r.accuracy_matrix) == 3 and all(len(row) == 3 for row in r.accuracy_matrix)
    assert len(r.random_init_acc) == 3
    per_epoch, total = steps_for(60, TrainSettings(epochs=3, batch_size=16))
    assert (per_epoch, total) == (4, 12)
    assert r.steps == 3 * 12
    assert r.seconds >= r.train_seconds > 0


def test_steps_override_epochs():
    s = tiny_stream()
    r = fit(model_for(s), s, Naive(), TrainSettings(steps=7, batch_size=16), seed=0)
    assert r.steps == 21


def test_multi_head_masks_other_tasks():
    s = tiny_stream("task")
    m = model_for(s)
    out = m(s[1].test.x, s[1].test.t)
    assert bool((out[:, [0, 1, 4, 5]] == MASK_VALUE).all())
    assert bool((out[:, [2, 3]] != MASK_VALUE).all())
    r = fit(m, s, Naive(), TrainSettings(epochs=5, batch_size=16, lr=0.01), seed=0)
    # with task identity, nothing is forgotten on these separable blobs
    assert min(r.accuracy_matrix[-1]) > 0.9


class Exploding(Strategy):
    name = "exploding"
    summary = "test helper"

    def loss(self, ctx, batch, logits, loss):
        return loss * (float("nan") if ctx.exp_index == 1 and ctx.step_in_experience == 2 else 1.0)


def test_non_finite_loss_stops_with_a_clear_message():
    s = tiny_stream()
    rows = []

    class Rec(Callback):
        def on_experience_end(self, ctx, acc, loss):
            rows.append(acc)

    with pytest.raises(DivergenceError) as e:
        fit(model_for(s), s, Exploding(), TrainSettings(epochs=1, batch_size=16), callbacks=[Rec()])
    msg = str(e.value)
    assert "experience 1" in msg and "step 2 of 4" in msg and "grad_clip" in msg
    assert len(rows) == 1  # the first experience's results were delivered before the failure


def test_divergence_skip_mode_skips_bad_batches():
    s = tiny_stream()
    r = fit(model_for(s), s, Exploding(), TrainSettings(epochs=1, batch_size=16, divergence="skip"))
    assert r.skipped_batches == 1 and r.steps == 3 * 4 - 1


def test_evaluation_restores_train_mode_and_does_not_touch_training_rng():
    s = tiny_stream()
    m = model_for(s)
    m.train()

    class Check(Callback):
        def on_experience_end(self, ctx, acc, loss):
            assert ctx.model.training

    fit(m, s, Naive(), TrainSettings(epochs=1, batch_size=16), callbacks=[Check()])


def test_unsupported_scenario_is_refused():
    class ClassOnly(Strategy):
        name = "class-only"
        scenarios = frozenset({"class"})

    s = tiny_stream("task")
    with pytest.raises(ScenarioError, match="task-incremental"):
        fit(model_for(s), s, ClassOnly(), TrainSettings(epochs=1))


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_schedules(kind):
    vals = [lr_multiplier(k, 100, kind, warmup=10, min_ratio=0.1) for k in range(100)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert all(0.0 < v <= 1.0 for v in vals)
    if kind != "constant":
        assert vals[-1] < 0.15 and all(a >= b - 1e-12 for a, b in itertools.pairwise(vals[10:]))
    with pytest.raises(ValueError):
        lr_multiplier(0, 10, "exponential")


def test_cosine_midpoint():
    assert lr_multiplier(50, 100, "cosine") == pytest.approx(0.5, abs=0.02)


def test_fisher_fast_path_matches_per_sample_vmap():
    for scenario in ("class", "task"):
        s = tiny_stream(scenario)
        m = model_for(s, hidden=(12, 12))
        ctx = Context(model=m, stream=s, device=torch.device("cpu"), seed=0, batch_size=8)
        params = dict(m.named_parameters())
        assert _linear_layers(m, params) is not None
        fast = diagonal_fisher(ctx, s[1].train, max_samples=None, batch_size=64, seed=0)
        import perennial.strategies.ewc as ewc_mod

        orig = ewc_mod._linear_layers
        ewc_mod._linear_layers = lambda *a: None
        try:
            slow = diagonal_fisher(ctx, s[1].train, max_samples=None, batch_size=5, seed=0)
        finally:
            ewc_mod._linear_layers = orig
        for k in fast:
            assert torch.allclose(fast[k], slow[k], rtol=1e-4, atol=1e-9), k


def test_fisher_does_not_depend_on_class_sorted_order():
    """Class-sorted data must give the same Fisher as shuffled data (the Avalanche EWC bug)."""
    s = tiny_stream()
    m = model_for(s)
    ctx = Context(model=m, stream=s, device=torch.device("cpu"), seed=0, batch_size=8)
    split = s[0].train
    order = torch.argsort(split.y, stable=True)
    sorted_split = split.subset(order)
    shuffled = split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(1)))
    f1 = diagonal_fisher(ctx, sorted_split, max_samples=None, batch_size=16, seed=0)
    f2 = diagonal_fisher(ctx, shuffled, max_samples=None, batch_size=16, seed=5)
    for k in f1:
        assert torch.allclose(f1[k], f2[k], rtol=1e-4, atol=1e-9)


def test_ewc_penalty_pulls_towards_the_anchor():
    """With a large lambda the weights stay near those after experience 0; with 0 they move freely."""
    s = tiny_stream()

    def drift(lam: float) -> float:
        snap = {}

        class Snap(Callback):
            def on_experience_end(self, ctx, acc, loss):
                snap[ctx.exp_index] = torch.cat([p.detach().flatten().clone() for p in ctx.model.parameters()])

        fit(model_for(s), s, EWC(ewc_lambda=lam), TrainSettings(epochs=5, batch_size=16, lr=0.01), callbacks=[Snap()])
        return float((snap[2] - snap[0]).norm())

    free, held = drift(0.0), drift(1e6)
    assert held < 0.5 * free, (held, free)


def test_batch_helpers():
    b = Batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 4)
    b2 = b.append(torch.ones(3, 2), torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    assert len(b2) == 7 and b2.n_new == 4 and len(b2.new()) == 4 and len(b) == 4
