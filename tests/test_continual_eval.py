"""The continual evaluator: its schedule, its fixed seeded subsets, and that it never changes training."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_stream
from perennial import api
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.models import build_model
from perennial.store import RunStore
from perennial.strategies import Naive, Replay
from perennial.train import Callback, ContinualEvaluator, TrainSettings, evaluate_split, fit

SETTINGS = TrainSettings(epochs=5, batch_size=16)  # tiny stream: 60 samples -> 4 steps/epoch, 20 per experience


def model_for(stream, dropout=0.0):
    torch.manual_seed(0)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[16], dropout=dropout)


def train(stream, strategy, callbacks=(), dropout=0.5):
    model = model_for(stream, dropout)
    result = fit(model, stream, strategy, SETTINGS, seed=3, callbacks=callbacks)
    return model, result


@pytest.mark.parametrize("make_strategy", [Naive, lambda: Replay(buffer_size=20)])
def test_training_is_bitwise_unchanged(make_strategy):
    """Dropout draws from the global RNG during training: any RNG use by the evaluator would shift it."""
    s = tiny_stream()
    m0, r0 = train(s, make_strategy())
    strategy = make_strategy()
    ev = ContinualEvaluator(strategy, every=3, budget=7, include_next=True, lca_beta=4)
    m1, r1 = train(s, strategy, [ev])
    assert r1.accuracy_matrix == r0.accuracy_matrix and r1.loss_matrix == r0.loss_matrix
    for (n, a), b in zip(m0.state_dict().items(), m1.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert len(ev.log) > 0 and ev.seconds > 0


def test_train_mode_restored_and_global_rng_untouched():
    s = tiny_stream()
    ev = ContinualEvaluator(Naive(), every=1, budget=5)
    seen = []

    class Check(Callback):
        def on_step_end(self, ctx, batch, loss):
            state = torch.get_rng_state()
            ev._evaluate(ctx, (0,), grid=True)  # evaluating once more must leave no trace
            seen.append((ctx.model.training, torch.equal(state, torch.get_rng_state())))

    train(s, Naive(), [ev, Check()])
    assert seen and all(training and same_rng for training, same_rng in seen)


def test_schedule():
    """b = steps into the experience: b=0 (current only), multiples of `every` and the end (all seen,
    plus the next with include_next), and b <= lca_beta (current only, off the grid)."""
    s = tiny_stream()
    ev = ContinualEvaluator(Naive(), every=6, budget=1000, include_next=True, lca_beta=2)
    train(s, Naive(), [ev], dropout=0.0)
    keys = {(r.step, r.exp_trained, r.exp_eval, r.grid) for r in ev.log}
    expected = set()
    for k in range(3):
        s0 = 20 * k
        expected.add((s0, k, k, True))
        for b in (1, 2):
            expected.add((s0 + b, k, k, False))
        for b in (6, 12, 18, 20):
            expected |= {(s0 + b, k, e, True) for e in range(min(k + 1, 2) + 1)}
    assert keys == expected


def test_an_evaluator_joining_midway_measures_the_same():
    """As in a fit resumed from a checkpoint: no on_fit_start, first call in the middle of an experience."""
    s = tiny_stream()
    full = ContinualEvaluator(Naive(), every=3, budget=7, lca_beta=2)
    late = ContinualEvaluator(Naive(), every=3, budget=7, lca_beta=2)

    class FromStep25(Callback):  # experience 1 starts at step 20
        def on_experience_start(self, ctx):
            if ctx.step >= 25:
                late.on_experience_start(ctx)

        def on_step_end(self, ctx, batch, loss):
            if ctx.step >= 25:
                late.on_step_end(ctx, batch, loss)

        def on_experience_end(self, ctx, acc, loss):
            if ctx.step >= 25:
                late.on_experience_end(ctx, acc, loss)

    train(s, Naive(), [full, FromStep25()])
    assert late.log == [r for r in full.log if r.step >= 25]


def test_subsets_are_fixed_seeded_and_batched_evaluation_matches_evaluate_split():
    s = tiny_stream()  # 20 test samples per experience
    model = model_for(s)
    ev = ContinualEvaluator(Naive(), every=5, budget=7)
    from perennial.strategies import Context

    ctx = Context(model=model, stream=s, device=torch.device("cpu"), seed=3, batch_size=16)
    ev.on_fit_start(ctx, [], [])
    first = [sub.x.clone() for sub in ev._subsets]
    ev.on_fit_start(ctx, [], [])
    assert all(torch.equal(a, b.x) for a, b in zip(first, ev._subsets, strict=True))
    assert [len(sub) for sub in ev._subsets] == [7, 7, 7]
    other = ContinualEvaluator(Naive(), every=5, budget=7)
    other.on_fit_start(Context(model=model, stream=s, device=torch.device("cpu"), seed=4, batch_size=16), [], [])
    assert not torch.equal(other._subsets[0].x, first[0])
    # one concatenated pass over three experiences == three separate evaluations
    ctx.experience = s[2]
    ev.batch_size = 5  # chunks straddle experience boundaries
    ev._evaluate(ctx, (0, 1, 2), grid=True)
    for r in ev.log:
        acc, loss = evaluate_split(ctx, Naive(), ev._subsets[r.exp_eval], 1024)
        assert r.acc == pytest.approx(acc) and r.loss == pytest.approx(loss)


def test_run_records_the_log_in_the_store_and_metrics(tmp_path):
    cfg = build_config(
        benchmark="split-digits", overrides=["train.epochs=1", "eval.lca_beta=3"], eval_every=4, eval_budget=50
    )
    st = RunStore(tmp_path)
    rec = api.run(cfg, store=st, run_id="r")
    log = st.eval_log("r")
    assert log == rec.eval_log and len(log) > 20
    assert {r.exp_eval for r in log} == set(range(5))
    assert rec.experience_names == ["exp0[0+1]", "exp1[2+3]", "exp2[4+5]", "exp3[6+7]", "exp4[8+9]"]
    summary = rec.summary()["metrics"]
    for key in ("min_acc", "wc_acc", "wf", "wp", "lca", "stability_gap", "stability_gaps", "continual_eval_seconds"):
        assert key in summary
    assert summary["min_acc"] == rec.metrics["min_acc"]
    fresh = api.run(cfg)  # no store: the same log and metrics
    assert fresh.eval_log == log and fresh.summary()["metrics"]["min_acc"] == summary["min_acc"]
    # the resume helper: rows after a step go, rows at it stay
    cut = log[len(log) // 2].step
    removed = st.delete_eval_after("r", cut)
    assert removed == sum(r.step > cut for r in log) and max(r.step for r in st.eval_log("r")) == cut
    st.delete("r")
    assert st.eval_log("r") == []


def test_eval_off_by_default_and_config_errors():
    cfg = build_config(benchmark="split-digits")
    assert cfg.eval.every is None and cfg.eval.budget == 300
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["eval.every=0", "eval.budgte=5", "eval.window=1"])
    text = str(e.value)
    assert "eval.every" in text and "eval.budgte" in text and "budget" in text and "eval.window" in text
    with pytest.raises(ConfigError, match="eval"):
        build_config({"eval": 5})
