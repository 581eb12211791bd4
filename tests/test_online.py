"""Online continual learning: the protocol in ``fit``, label delay, hidden boundaries, stream
shapes, the prequential metrics, exact resume, and the CLI's errors."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from helpers import TIMING, tiny_stream
from perennial import api
from perennial.cli import app
from perennial.config import build_config
from perennial.errors import ConfigError, DataError
from perennial.evaluation import EvalRecord, anytime_accuracy, online_accuracy, online_curve, online_logloss
from perennial.models import build_model
from perennial.store import RunStore
from perennial.strategies import Naive, Replay, make_strategy
from perennial.streams.online import blurry, gradual, rotating
from perennial.train import Callback, TrainSettings, fit

runner = CliRunner()


def model_for(stream, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[16])


def online(**kw) -> TrainSettings:
    return TrainSettings(mode="online", batch_size=kw.pop("batch_size", 10), lr=kw.pop("lr", 0.01), **kw)


def ordered(stream):
    return replace(stream, meta={**stream.meta, "ordered": True})


def test_each_batch_is_scored_before_the_model_trains_on_it():
    s = ordered(tiny_stream())
    model = model_for(s)
    init = copy.deepcopy(model)
    r = fit(model, s, Naive(), online(lr=0.05), seed=0)
    n_batches = sum(math.ceil(len(e.train) / 10) for e in s)
    assert len(r.online_log) == n_batches and r.steps == n_batches
    assert sum(row[2] for row in r.online_log) == sum(len(e.train) for e in s)
    # the first batch is scored by the untouched initial model ...
    x, y = s[0].train.x[:10], s[0].train.y[:10]
    with torch.no_grad():
        logits = init(x, None)
    assert r.online_log[0][1] == float((logits.argmax(1) == y).sum())
    assert r.online_log[0][3] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")))
    # ... and the second by the model after exactly one step on the first (not on itself)
    one = copy.deepcopy(init)
    fit(
        one,
        replace(s, experiences=(replace(s[0], train=s[0].train.subset(torch.arange(10))),)),
        Naive(),
        online(lr=0.05),
    )
    with torch.no_grad():
        second = one(s[0].train.x[10:20], None).argmax(1) == s[0].train.y[10:20]
    assert r.online_log[1][1] == float(second.sum())


def test_online_learning_improves_prediction_within_an_experience():
    s = tiny_stream()  # shuffled within each experience
    r = fit(model_for(s), s, Naive(), online(lr=0.05), seed=0)
    first = [row for row in r.online_log if row[0] == 0]
    assert first[0][1] / first[0][2] < 0.8 and sum(r[1] for r in first[-3:]) / sum(r[2] for r in first[-3:]) > 0.9


def test_iters_per_batch_repeats_steps_but_stores_each_sample_once():
    s = tiny_stream()
    strategy = Replay(buffer_size=1000)
    r = fit(model_for(s), s, strategy, online(iters_per_batch=3), seed=0)
    n_batches = sum(math.ceil(len(e.train) / 10) for e in s)
    assert r.steps == 3 * n_batches and len(r.online_log) == n_batches
    assert len(strategy.buffer) == sum(len(e.train) for e in s)


def test_label_delay_trains_on_labels_that_arrived():
    s = ordered(tiny_stream())
    n_batches = sum(math.ceil(len(e.train) / 10) for e in s)
    seen = []

    class Spy(Callback):
        def on_step_end(self, ctx, batch, loss):
            seen.append(batch.y[: batch.n_new].clone())

    r = fit(model_for(s), s, Naive(), online(label_delay=4), seed=0, callbacks=[Spy()])
    assert r.steps == n_batches - 4 and len(r.online_log) == n_batches
    stream_y = torch.cat([e.train.y for e in s])
    assert torch.equal(torch.cat(seen), stream_y[: len(torch.cat(seen))])  # in arrival order, delayed
    with pytest.raises(ConfigError, match=r"label_delay.*no label would ever arrive"):
        fit(model_for(s), s, Naive(), online(label_delay=n_batches), seed=0)


class Boundaries(Naive):
    """Counts the boundary calls it gets."""

    def setup(self, ctx):
        self.state["calls"] = 0

    def before_experience(self, ctx):
        self.state["calls"] += 1

    def after_experience(self, ctx):
        self.state["calls"] += 1


def test_hidden_boundaries_are_never_announced():
    s = tiny_stream()
    given, hidden = Boundaries(), Boundaries()
    fit(model_for(s), s, given, online(), seed=0)
    r = fit(model_for(s), s, hidden, online(boundaries="hidden"), seed=0)
    assert given.state["calls"] == 2 * len(s) and hidden.state["calls"] == 0
    assert len(r.accuracy_matrix) == len(s)  # the evaluator still knows the experiences


def test_boundary_needing_strategies_are_refused_with_hidden_boundaries():
    s = tiny_stream()
    for spec in ("ewc", "lwf", "icarl", "replay+si"):
        with pytest.raises(ConfigError, match=r"needs experience boundaries.*er-ace.*mir"):
            fit(model_for(s), s, make_strategy(spec), online(boundaries="hidden"))
    with pytest.raises(ConfigError, match="boundaries"):  # herding stores whole experiences
        fit(model_for(s), s, Replay(policy="herding"), online(boundaries="hidden"))
    with pytest.raises(ConfigError, match="cannot run online"):
        fit(model_for(s), s, make_strategy("joint"), online())


def test_online_fields_need_online_mode():
    with pytest.raises(ValueError, match=r"also set train\.mode=online"):
        TrainSettings(label_delay=3)
    with pytest.raises(ValueError):
        TrainSettings(mode="online", iters_per_batch=0)


def test_online_metrics_are_pure_functions_of_the_log():
    log = [[0, 3, 10, 5.0], [0, 7, 10, 3.0], [1, 0, 5, 9.0]]
    before = copy.deepcopy(log)
    assert online_accuracy(log) == pytest.approx(10 / 25)
    assert online_logloss(log) == pytest.approx(17 / 25)
    assert online_curve(log) == [[1, 0.3], [2, 0.5], [3, 0.4]]
    assert log == before
    assert math.isnan(online_accuracy([]))
    with pytest.raises(ValueError):
        online_accuracy([[0, 11, 10, 1.0]])
    # anytime accuracy: at each time, mean over experiences seen by then (not the one about to start)
    ev = [
        EvalRecord(0, 0, 0, 0.1),  # start of exp 0: not seen yet
        EvalRecord(5, 0, 0, 0.9),
        EvalRecord(5, 1, 0, 0.8),  # start of exp 1: exp 0 seen, exp 1 not
        EvalRecord(5, 1, 1, 0.0),
        EvalRecord(9, 1, 0, 0.6),
        EvalRecord(9, 1, 1, 1.0),
    ]
    assert anytime_accuracy(ev) == pytest.approx((0.9 + 0.8 + 0.8) / 3)


# ------------------------------------------------------------------ stream shapes


def test_blurry_moves_the_share_to_neighbours_and_keeps_everything():
    s = tiny_stream()
    b = blurry(s, 0.2, seed=1)
    assert sum(len(e.train) for e in b) == sum(len(e.train) for e in s)
    own = [sum(int((e.train.y == c).sum()) for c in e.classes) / len(e.train) for e in b]
    assert all(0.65 < o < 0.95 for o in own)  # ~80% own classes, the rest leaked from neighbours
    far = set(b[0].train.y.tolist()) & set(s[2].classes)
    assert not far, "samples only leak to neighbouring experiences"
    assert blurry(s, 0.0) is s
    with pytest.raises(DataError, match=r"blur must be a share in \[0, 1\]"):
        blurry(s, 1.5)


def test_gradual_drift_mixes_linearly_around_boundaries():
    xs = torch.randn(400, 4)
    ys = torch.arange(2).repeat_interleave(200)
    from perennial.streams import split_by_class

    s = split_by_class(xs, ys, xs, ys, classes_per_exp=1, name="two")
    g = gradual(s, 1.0, seed=0)
    assert g.meta["ordered"]
    seq = torch.cat([e.train.y for e in g]).float()
    quarters = [float(seq[i : i + 100].mean()) for i in range(0, 400, 100)]
    assert quarters[0] < 0.2 and 0.15 < quarters[1] < 0.5 and 0.5 < quarters[2] < 0.85 and quarters[3] > 0.8
    assert sum(len(e.train) for e in g) == 400


def test_rotating_stream_is_long_and_drifts():
    x = torch.rand(60, 1, 8, 8)
    y = torch.arange(6).repeat(10)
    r = rotating(x, y, x, y, n_segments=100, n_experiences=4, segment_size=12, test_size=6)
    assert len(r) == 4 and r.meta["ordered"] and r.meta["segments"] == 100
    assert [len(e.train) for e in r] == [300] * 4 and [len(e.test) for e in r] == [150] * 4
    assert r[0].name == "rot0-86" and r[2].name == "rot180-266"
    # consecutive segments differ by a small rotation: neighbouring images correlate more than distant ones
    seg = r[0].train.x.view(25, 12, -1)
    assert r[0].train.x.shape[1:] == (1, 8, 8) and seg.shape[0] == 25


# ------------------------------------------------------------------ runs, resume, CLI


class KillAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, ctx, batch, loss):
        if ctx.step == self.step:
            raise KeyboardInterrupt


def _results(rec):
    s = rec.summary()
    drop = TIMING  # wall-clock measurements differ between runs
    return {k: v for k, v in s["metrics"].items() if k not in drop}, s["accuracy_matrix"], rec.eval_log


def test_online_resume_after_kills_is_bit_identical(tmp_path):
    """Killed mid-stream (between checkpoints, inside an incoming batch's iterations, with
    labels pending in the delay queue and a replay buffer), resumed twice: same results."""
    store = RunStore(tmp_path)
    sets = [
        "train.mode=online",
        "train.batch_size=16",
        "train.iters_per_batch=2",
        "train.label_delay=3",
        "train.boundaries=hidden",
        "strategy.buffer_size=64",
        "eval.every=10",
    ]
    cfg = build_config(benchmark="split-digits", strategy="er-ace", overrides=sets, checkpoint_every=7)
    ref = api.run(cfg, store=store, run_id="ref")
    assert ref.metrics["online_acc"] > 0.15 and ref.metrics["anytime_acc"] > 0.3  # above chance (0.1)
    with pytest.raises(KeyboardInterrupt):
        api.run(cfg, store=store, run_id="v", callbacks=[KillAt(31)])
    with pytest.raises(KeyboardInterrupt):
        api.resume(store, "v", callbacks=[KillAt(88)])
    got = api.resume(store, "v", callbacks=[KillAt(None)])
    assert _results(got) == _results(ref)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.iters_per_batch=0"], "iters_per_batch"),
        (["train.label_delay=100000"], "no label would ever arrive"),
        (["train.boundaries=hidden"], "needs experience boundaries"),
        (["benchmark.blur=1.5"], "blur"),
        (["benchmark.drift_window=0"], "drift_window"),
    ],
)
def test_cli_bad_online_input_exits_2(tmp_path, sets, message):
    args = ["run", "-b", "split-digits", "-s", "ewc", "--set", "train.mode=online", "--store", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
