"""Timescales: EMA copies, per-group learning rates, per-phase multipliers, config, class stats."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import tiny_stream
from perennial.cli import app
from perennial.config import build_config
from perennial.errors import ConfigError, DataError, ScenarioError
from perennial.memory import ClassStats
from perennial.models import build_model
from perennial.models.ema import EMA
from perennial.strategies import (
    SLCA,
    Batch,
    ClsER,
    Context,
    EMATeacher,
    FirstSession,
    Naive,
    SimpleCIL,
    Strategy,
    Teachers,
    compose,
)
from perennial.streams import build_benchmark, split_by_class
from perennial.streams.scenarios import class_groups
from perennial.train import Callback, Timescales, TrainSettings, fit, make_optimizer
from perennial.train.timescales import apply_lr_scales, named_groups

SETTINGS = TrainSettings(epochs=2, batch_size=16, lr=0.01)


def model_for(stream, hidden=(16,), seed=0):
    torch.manual_seed(seed)
    return build_model(
        "mlp", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, hidden=list(hidden)
    )


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- EMA


def perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_ema_matches_the_formula_with_warmup():
    s = tiny_stream()
    model = model_for(s)
    ema = EMA(model, {"slow": 0.9, "fast": 0.5})
    expected = {n: [p.detach().clone() for p in model.parameters()] for n in ("slow", "fast")}
    for step in range(1, 6):
        perturb(model, step)
        ema.update(model)
        for name, decay in (("slow", 0.9), ("fast", 0.5)):
            a = min(decay, 1 - 1 / (step + 1))
            expected[name] = [
                a * e + (1 - a) * p.detach() for e, p in zip(expected[name], model.parameters(), strict=True)
            ]
    for name in ("slow", "fast"):
        for e, p in zip(expected[name], ema[name].parameters(), strict=True):
            torch.testing.assert_close(p, e)
    # copies are frozen, in eval mode, and full models usable for prediction
    assert all(not p.requires_grad for p in ema["slow"].parameters()) and not ema["slow"].training
    assert ema["slow"](s[0].test.x).shape == (len(s[0].test.x), s.n_classes)


def test_ema_without_warmup_and_decay_zero_copies_the_model():
    s = tiny_stream()
    model = model_for(s)
    ema = EMA(model, {"same": 0.0, "frozen_ish": 0.99}, warmup=False)
    init = [p.detach().clone() for p in model.parameters()]
    perturb(model, 1)
    ema.update(model)
    for c, p in zip(ema["same"].parameters(), model.parameters(), strict=True):
        assert torch.equal(c, p)
    for c, p, i in zip(ema["frozen_ish"].parameters(), model.parameters(), init, strict=True):
        torch.testing.assert_close(c, 0.99 * i + 0.01 * p)


def test_ema_averages_float_buffers_and_copies_integer_ones():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, {"s": 0.5}, warmup=False)
    model.train()
    model(torch.randn(8, 3))  # updates running stats and num_batches_tracked
    ema.update(model)
    bn, bn_ema = model[1], ema["s"][1]
    torch.testing.assert_close(bn_ema.running_mean, 0.5 * bn.running_mean)
    assert int(bn_ema.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_stochastic_updates_follow_their_probability_and_seed():
    model = torch.nn.Linear(2, 2)
    counts = {"often": 0, "rarely": 0, "always": 0}
    ema = EMA(model, {"often": 0.9, "rarely": 0.9, "always": 0.9}, update_prob={"often": 0.9, "rarely": 0.2}, seed=3)
    for _ in range(1000):
        for name in ema.update(model):
            counts[name] += 1
    assert counts["always"] == 1000
    assert 850 < counts["often"] < 950 and 150 < counts["rarely"] < 250

    def make():
        return EMA(model, {"a": 0.9, "b": 0.9}, update_prob={"a": 0.5, "b": 0.5}, seed=11)

    first, second = make(), make()
    assert [first.update(model) for _ in range(50)] == [second.update(model) for _ in range(50)]


def test_ema_state_round_trip_continues_identically():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    kw = {"update_prob": {"p": 0.5}, "seed": 7}
    ema = EMA(model, {"p": 0.9, "s": 0.99}, **kw)
    for k in range(5):
        perturb(model, k)
        ema.update(model)
    saved = roundtrip(ema.state_dict())
    fresh = EMA(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)), {"p": 0.9, "s": 0.99}, **kw
    )
    fresh.load_state_dict(saved)
    for k in range(5, 12):
        perturb(model, k)
        assert ema.update(model) == fresh.update(model)
    for name in ("p", "s"):
        assert same(snapshot(ema[name]), snapshot(fresh[name]))
    with pytest.raises(ValueError, match="decays"):
        EMA(model, {"p": 0.5, "s": 0.99}, **kw).load_state_dict(saved)


@pytest.mark.parametrize(
    "decays, match",
    [({"s": 1.0}, r"\[0, 1\)"), ({"s": -0.1}, r"\[0, 1\)"), ({"": 0.5}, "non-empty"), ({}, "at least one")],
)
def test_ema_rejects_bad_decays(decays, match):
    with pytest.raises(ValueError, match=match):
        EMA(torch.nn.Linear(2, 2), decays)


def test_ema_reset_copies_current_weights():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, {"s": 0.99})
    perturb(model, 1)
    ema.reset(model)
    assert same(snapshot(ema["s"]), snapshot(model))


# --------------------------------------------------------------- groups and multipliers


def test_param_groups_split_backbone_and_head():
    s = tiny_stream()
    model = model_for(s)
    groups = named_groups(model)
    assert [len(groups[g]) for g in ("backbone", "head", "other")] == [2, 2, 0]
    opt = make_optimizer(model, SETTINGS, Timescales(backbone_lr=0.1, head_lr=2.0))
    assert [(g["name"], g["lr_scale"]) for g in opt.param_groups] == [("backbone", 0.1), ("head", 2.0)]


def test_uniform_multipliers_equal_a_scaled_learning_rate():
    """SGD with every group at 0.5x is exactly SGD at half the learning rate."""
    s = tiny_stream()
    sgd = {"optimizer": "sgd", "momentum": 0.9, "epochs": 2, "batch_size": 16}
    m1, m2 = model_for(s), model_for(s)
    fit(m1, s, Naive(), TrainSettings(lr=0.02, **sgd), timescales=Timescales(backbone_lr=0.5, head_lr=0.5))
    fit(m2, s, Naive(), TrainSettings(lr=0.01, **sgd))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_zero_multiplier_freezes_exactly_that_group(optimizer):
    s = tiny_stream()
    model = model_for(s)
    body, head = snapshot(model.body), snapshot(model.head)
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.01, optimizer=optimizer, weight_decay=0.1, momentum=0.0)
    fit(model, s, Naive(), settings, timescales=Timescales(backbone_lr=0.0))
    assert same(body, snapshot(model.body))
    assert not same(head, snapshot(model.head))


def test_default_timescales_change_nothing():
    s = tiny_stream()
    m1, m2 = model_for(s), model_for(s)
    r1 = fit(m1, s, Naive(), SETTINGS)
    r2 = fit(m2, s, Naive(), SETTINGS, timescales=Timescales())
    assert r1.accuracy_matrix == r2.accuracy_matrix and same(snapshot(m1), snapshot(m2))


def test_multipliers_need_a_body_and_a_head():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no such part"):
        make_optimizer(model, SETTINGS, Timescales(backbone_lr=0.1))
    make_optimizer(model, SETTINGS, Timescales())  # defaults work for any module


class FreezeAfterFirst(Strategy):
    name = "freeze-after-first"
    summary = "test helper"

    def lr_scales(self, ctx):
        return {} if ctx.exp_index == 0 else {"backbone": 0.0}


class Snapshots(Callback):
    def __init__(self):
        self.body: list[dict[str, torch.Tensor]] = []
        self.head: list[dict[str, torch.Tensor]] = []

    def on_experience_end(self, ctx, acc, loss):
        self.body.append(snapshot(ctx.model.body))
        self.head.append(snapshot(ctx.model.head))


def test_strategy_multipliers_apply_per_phase():
    s = tiny_stream()
    snaps = Snapshots()
    fit(model_for(s), s, FreezeAfterFirst(), SETTINGS, callbacks=[snaps])
    assert same(snaps.body[0], snaps.body[1]) and same(snaps.body[1], snaps.body[2])
    assert not same(snaps.head[0], snaps.head[1])


def test_composed_multipliers_multiply_with_the_configured_ones():
    class Half(Strategy):
        name = "half"
        summary = "test helper"

        def lr_scales(self, ctx):
            return {"backbone": 0.5, "head": 0.5}

    class Quarter(Half):
        name = "quarter"

    s = tiny_stream()
    combo = compose(Half(), Quarter())
    ctx = Context(model=model_for(s), stream=s, device=torch.device("cpu"), seed=0, batch_size=16)
    assert combo.lr_scales(ctx) == {"backbone": 0.25, "head": 0.25}
    opt = make_optimizer(ctx.model, SETTINGS, Timescales(backbone_lr=0.1))
    apply_lr_scales(opt, combo.lr_scales(ctx))
    assert [g["lr_scale"] for g in opt.param_groups] == [0.025, 0.25]
    with pytest.raises(ValueError, match="unknown parameter groups"):
        apply_lr_scales(opt, {"neck": 0.5})


# --------------------------------------------------------------------------- teachers


def test_configured_teachers_are_kept_and_used_for_prediction():
    s = tiny_stream()
    seen: dict[str, torch.nn.Module] = {}

    class Grab(Callback):
        def on_fit_start(self, ctx, acc, loss):
            seen.update(ctx.teachers)

    ts = Timescales(teachers={"stable": 0.99, "plastic": 0.5}, predict_with="stable")
    model = model_for(s)
    r = fit(model, s, Naive(), SETTINGS, timescales=ts, callbacks=[Grab()])
    assert set(seen) == {"stable", "plastic"}
    # the reported accuracy is the stable copy's, not the model's
    last = s[-1].test
    stable_acc = (seen["stable"](last.x).argmax(1) == last.y).float().mean().item()
    model_acc = (model(last.x).argmax(1) == last.y).float().mean().item()
    assert r.accuracy_matrix[-1][-1] == pytest.approx(stable_acc)
    assert stable_acc != model_acc
    # deterministic, and without predict_with the model predicts again
    r2 = fit(model_for(s), s, Naive(), SETTINGS, timescales=ts)
    assert r.accuracy_matrix == r2.accuracy_matrix
    r3 = fit(model_for(s), s, Naive(), SETTINGS, timescales=Timescales(teachers={"stable": 0.99}))
    r0 = fit(model_for(s), s, Naive(), SETTINGS)
    assert r3.accuracy_matrix == r0.accuracy_matrix


def test_teachers_state_round_trips_through_weights_only_load():
    s = tiny_stream()
    strategy = compose(Teachers(decays={"stable": 0.9}, predict_with="stable"), Naive())
    model = model_for(s)
    fit(model, s, strategy, SETTINGS)
    fresh = compose(Teachers(decays={"stable": 0.9}, predict_with="stable"), Naive())
    ctx = Context(model=model, stream=s, device=torch.device("cpu"), seed=0, batch_size=16)
    fresh.setup(ctx)
    fresh.load_state_dict(roundtrip(strategy.state_dict()))
    x, t = s[0].test.x, s[0].test.t
    assert torch.equal(strategy.predict(ctx, x, t), fresh.predict(ctx, x, t))
    with pytest.raises(ValueError, match="not a teacher"):
        Teachers(decays={"stable": 0.9}, predict_with="fast")


def test_strategies_register_their_slow_copies():
    s = tiny_stream()
    ctx = Context(model=model_for(s), stream=s, device=torch.device("cpu"), seed=0, batch_size=16)
    ClsER(buffer_size=10).setup(ctx)
    EMATeacher().setup(ctx)
    assert set(ctx.teachers) == {"cls-er.plastic", "cls-er.stable", "ema-teacher"}
    with pytest.raises(ValueError, match="already registered"):
        EMATeacher().setup(ctx)


class Fixed(torch.nn.Module):
    """A stand-in model that returns fixed logits."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, t=None):
        return self.out


def test_cls_er_distils_towards_the_more_confident_memory():
    s = tiny_stream()
    ctx = Context(model=model_for(s), stream=s, device=torch.device("cpu"), seed=0, batch_size=16)
    st = ClsER(buffer_size=10, reg_weight=1.0)
    st.setup(ctx)
    x, y, t = s[0].train.x[:4], s[0].train.y[:4], s[0].train.t[:4]
    sure = 5.0 * torch.nn.functional.one_hot(y, s.n_classes).float()
    unsure = torch.zeros(4, s.n_classes)
    first_two = (torch.arange(4) < 2)[:, None]
    plastic = torch.where(first_two, sure, unsure)  # the plastic model is sure of rows 0-1
    stable = torch.where(first_two, unsure, sure + 1.0)  # the stable model of rows 2-3
    st.state["ema"].copies.update(plastic=Fixed(plastic), stable=Fixed(stable))
    batch = Batch(x[:1], y[:1], t[:1], 1).append(x, y, t)  # one new row, four replayed rows
    logits = torch.zeros(5, s.n_classes)
    got = st.loss(ctx, batch, logits, torch.zeros(()))
    target = torch.cat([plastic[:2], stable[2:]])
    assert got.item() == pytest.approx(torch.nn.functional.mse_loss(logits[1:], target).item())
    # no replayed rows, no consistency term
    assert st.loss(ctx, Batch(x, y, t, 4), logits[:4], torch.zeros(())).item() == 0.0


# ------------------------------------------------------------------- prototype methods


@pytest.mark.parametrize("cls", [SimpleCIL, FirstSession])
def test_prototype_methods_train_only_on_the_first_experience(cls):
    s = tiny_stream()
    snaps = Snapshots()
    r = fit(model_for(s), s, cls(), SETTINGS, callbacks=[snaps])
    assert r.steps == 2 * 4  # two epochs of the first experience only
    assert same(snaps.body[0], snaps.body[2]) and same(snaps.head[0], snaps.head[2])
    assert min(r.accuracy_matrix[-1]) > 0.8  # the blobs stay separable in the frozen features


def test_simplecil_without_adaptation_trains_nothing():
    s = tiny_stream()
    r = fit(model_for(s), s, SimpleCIL(adapt_first=False), SETTINGS)
    assert r.steps == 0


def test_slca_slows_the_backbone_after_the_first_experience():
    s = tiny_stream()
    snaps = Snapshots()
    fit(model_for(s), s, SLCA(backbone_lr=0.0, ca_samples=16, ca_epochs=2), SETTINGS, callbacks=[snaps])
    assert same(snaps.body[0], snaps.body[2])
    assert not same(snaps.head[0], snaps.head[2])
    snaps = Snapshots()
    fit(model_for(s), s, SLCA(ca_samples=16, ca_epochs=2), SETTINGS, callbacks=[snaps])
    assert not same(snaps.body[0], snaps.body[2])


def test_slca_alignment_leaves_the_model_alone_and_predicts_with_its_head():
    s = tiny_stream()
    model = model_for(s)
    st = SLCA(ca_samples=32, ca_epochs=3)
    r = fit(model, s, st, TrainSettings(epochs=3, batch_size=16, lr=0.01))
    assert not torch.equal(st.state["head"].linear.weight, model.head.linear.weight)
    assert min(r.accuracy_matrix[-1]) > 0.8


# ------------------------------------------------------------------- class statistics


def test_class_stats_are_exact_and_independent_of_batching():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = torch.arange(3).repeat(20)
    a = ClassStats(4, 5, "per_class")
    a.update(x, y)
    b = ClassStats(4, 5, "per_class")
    for i in range(0, 60, 7):
        b.update(x[i : i + 7], y[i : i + 7])
    torch.testing.assert_close(a.class_covariances(), b.class_covariances())
    for c in range(3):
        xc = x[y == c].double()
        torch.testing.assert_close(a.means()[c], xc.mean(0))
        torch.testing.assert_close(a.class_covariances()[c], torch.cov(xc.T))
    assert a.seen.tolist() == [True, True, True, False]
    p = ClassStats(4, 5, "pooled")
    p.update(x, y)
    centred = torch.cat([x[y == c].double() - x[y == c].double().mean(0) for c in range(3)])
    torch.testing.assert_close(p.pooled_covariance(), centred.T @ centred / (60 - 3))
    q = ClassStats(4, 5, "pooled")
    q.load_state_dict(roundtrip(p.state_dict()))
    torch.testing.assert_close(q.pooled_covariance(), p.pooled_covariance())
    with pytest.raises(ValueError, match="labels"):
        a.update(x[:2], torch.tensor([0, 9]))


# ------------------------------------------------------------------ big first experience


def test_first_classes_alias_builds_a_big_first_experience():
    x = torch.randn(100, 3)
    y = torch.arange(10).repeat(10)
    s = split_by_class(x, y, x, y, classes_per_exp=1, first_classes=5)
    assert [e.classes for e in s] == [(0, 1, 2, 3, 4), (5,), (6,), (7,), (8,), (9,)]
    assert class_groups(range(10), 5, first_classes=5) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(DataError, match="not both"):
        class_groups(range(10), [5, 5], first_classes=5)
    with pytest.raises(DataError, match="between 1 and 9"):
        class_groups(range(10), 1, first_classes=10)
    with pytest.raises(DataError, match="divisor of 5"):
        class_groups(range(10), 2, first_classes=5)


def test_benchmark_big_first_experience_end_to_end():
    alias = build_benchmark("split-mnist", first_classes=5)
    listed = build_benchmark("split-mnist", classes_per_exp=[5, 1, 1, 1, 1, 1])
    assert [e.classes for e in alias] == [e.classes for e in listed] == [(0, 1, 2, 3, 4), (5,), (6,), (7,), (8,), (9,)]
    assert len(alias[0].train) == 5 * 400 and len(alias[1].train) == 400
    two = build_benchmark("split-digits", first_classes=4, n_experiences=4)
    assert [len(e.classes) for e in two] == [4, 2, 2, 2]
    with pytest.raises(ScenarioError, match="first_classes"):
        build_benchmark("permuted-mnist", first_classes=5)
    with pytest.raises(ScenarioError, match="equal experiences"):
        build_benchmark("split-mnist", first_classes=5, n_experiences=3)


# ------------------------------------------------------------------------------ config


def test_timescales_config_section():
    cfg = build_config(
        {"timescales": {"backbone_lr": 0.01, "teachers": {"stable": 0.999, "plastic": 0.9}, "predict_with": "stable"}},
        ["benchmark.first_classes=5"],
    )
    assert cfg.timescales.scales() == {"backbone": 0.01, "head": 1.0}
    assert cfg.timescales.teachers == {"stable": 0.999, "plastic": 0.9}
    assert cfg.benchmark.first_classes == 5
    assert cfg.to_dict()["timescales"]["predict_with"] == "stable"


def test_timescales_config_errors_are_reported_together():
    with pytest.raises(ConfigError) as e:
        build_config(
            overrides=[
                "timescales.backbone_lr=-1",
                "timescales.head_rate=2",
                'timescales.teachers={"stable": 1.5}',
                "benchmark.first_classes=0",
            ]
        )
    fields = [f for f, _ in e.value.problems]
    text = str(e.value)
    assert "timescales.backbone_lr" in fields and "benchmark.first_classes" in fields
    assert "head_lr" in text  # the suggestion for the misspelt key
    with pytest.raises(ConfigError, match="predict_with='fast' is not a teacher"):
        build_config(overrides=["timescales.predict_with=fast"])
    with pytest.raises(ConfigError, match="must be a table"):
        build_config({"timescales": 3})


def test_cli_reports_timescale_problems_without_a_traceback(tmp_path):
    r = CliRunner().invoke(
        app, ["run", "-b", "split-digits", "--set", "timescales.predict_with=stable", "--store", str(tmp_path)]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "timescales" in r.output and "stable" in r.output
    r = CliRunner().invoke(
        app,
        ["run", "-b", "split-digits", "--set", "benchmark.classes_per_exp=[5,1]", "--store", str(tmp_path), "-q"],
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "sum to the number of classes (10)" in r.output


def test_first_classes_and_a_list_of_sizes_conflict():
    with pytest.raises(ConfigError, match="not both"):
        build_config(overrides=["benchmark.first_classes=5", "benchmark.classes_per_exp=[5,5]"])


def test_a_teacher_with_decay_zero_predicts_exactly_like_the_model():
    s = tiny_stream()
    r0 = fit(model_for(s), s, Naive(), SETTINGS)
    r1 = fit(model_for(s), s, Naive(), SETTINGS, timescales=Timescales(teachers={"same": 0.0}, predict_with="same"))
    assert r1.accuracy_matrix == r0.accuracy_matrix and r1.loss_matrix == r0.loss_matrix


def test_example_config_runs_from_the_cli(tmp_path):
    out = tmp_path / "run.json"
    r = CliRunner().invoke(
        app,
        [
            "run",
            "--config",
            str(Path(__file__).resolve().parents[1] / "examples" / "fast_slow.toml"),
            "--set",
            "train.epochs=5",  # 35 steps per experience: a copy at decay 0.98 has caught up by then
            "--store",
            str(tmp_path),
            "--json",
            str(out),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["config"]["timescales"]["predict_with"] == "stable"
    assert d["metrics"]["acc"] > 0.5  # measured 0.65 (chance: 0.1)


# ------------------------------------------------------- continual evaluation of every timescale
def test_continual_evaluation_measures_the_model_and_each_slow_copy():
    from perennial.train.continual import ContinualEvaluator

    s = tiny_stream()
    ts = Timescales(teachers={"same": 0.0, "slow": 0.9}, predict_with="same")
    ev = ContinualEvaluator(Naive(), every=3, lca_beta=2)
    fit(model_for(s), s, Naive(), SETTINGS, timescales=ts, callbacks=[ev])
    by = {}
    for r in ev.model_log:
        by.setdefault(r.model, {})[(r.step, r.exp_trained, r.exp_eval)] = r.acc
    assert set(by) == {"model", "same", "slow"}
    assert by["same"] == by["model"]  # decay 0: the copy is the model
    assert by["slow"] != by["model"]  # a slow copy lags behind
    # the log of the run's prediction uses predict_with (the run's strategy, teachers included)
    main = {(r.step, r.exp_trained, r.exp_eval): r.acc for r in ev.log if r.grid}
    assert main == by["model"]
    assert all(r.grid for r in ev.model_log) and any(not r.grid for r in ev.log)  # LCA points: prediction only


def test_timescales_curves_are_stored_and_plotted_in_the_report(tmp_path):
    from perennial import api
    from perennial.report import write_report
    from perennial.store import RunStore

    store = RunStore(tmp_path)
    cfg = build_config(benchmark="split-digits", strategy="cls-er", overrides=["train.epochs=1", "eval.every=4"])
    rec = api.run(cfg, store=store, run_id="c")
    got = store.get("c")
    assert got.model_log == rec.model_log and {r.model for r in got.model_log} == {
        "model",
        "cls-er.plastic",
        "cls-er.stable",
    }
    assert got.eval_log == rec.eval_log and all(not r.model for r in got.eval_log)
    html = write_report(store, ["c"], tmp_path / "rep").read_text()
    assert (
        "its slow copies" in html and (tmp_path / "rep" / "cls-er-split-digits-class-timescales.png").stat().st_size > 0
    )
    off = build_config(
        benchmark="split-digits",
        strategy="cls-er",
        overrides=["train.epochs=1", "eval.every=4", "eval.timescales=false"],
    )
    assert not api.run(off, store=store, run_id="d").model_log
    assert store.delete_eval_after("c", 0) > 0  # as on a resume from a checkpoint at step 0
    assert store.model_log("c") and all(r.step == 0 for r in store.model_log("c"))
