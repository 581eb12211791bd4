"""perennial tune: search spaces, and protocols that keep the reported stream's test data out of tuning."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_stream
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.scale.tune import check_space, parse_space, score_trial, tuning_stream


def test_space_specs_parse_and_bad_ones_are_all_reported():
    dims = parse_space(["train.lr=loguniform:1e-4:1e-2", "strategy.buffer_size=choice:100,200", "train.epochs=int:1:3"])
    assert [(d.key, d.kind, d.values) for d in dims] == [
        ("train.lr", "loguniform", (1e-4, 1e-2)),
        ("strategy.buffer_size", "choice", (100, 200)),
        ("train.epochs", "int", (1, 3)),
    ]
    with pytest.raises(ConfigError) as e:
        parse_space(["train.lr=loguniform:0:1", "x", "train.lr=normal:1:2", "a=choice:"])
    assert len(e.value.problems) == 4


def test_space_keys_are_checked_against_the_config_before_any_trial():
    base = build_config(strategy="replay", benchmark="split-digits").to_dict()
    check_space(base, parse_space(["train.lr=loguniform:1e-4:1e-2", "strategy.buffer_size=choice:100,200"]))
    with pytest.raises(ConfigError) as e:
        check_space(base, parse_space(["strategy.bufer_size=choice:1,2", "train.epochs=int:0:2"]))
    text = str(e.value)
    assert "bufer_size" in text and "train.epochs" in text


def test_first_k_protocol_sees_only_the_first_k_experiences():
    s = tiny_stream()
    t = tuning_stream(s, "first-k", 2, 0.1, 0)
    assert [e.index for e in t] == [0, 1]
    assert t.experiences[0].test is s.experiences[0].test


def test_validation_protocol_scores_on_held_out_training_data_never_test_data():
    s = tiny_stream()
    t = tuning_stream(s, "validation", 0, 0.2, 0)
    for a, b in zip(s, t, strict=True):
        rows = {tuple(r.tolist()) for r in a.train.x}
        val = {tuple(r.tolist()) for r in b.test.x}
        train = {tuple(r.tolist()) for r in b.train.x}
        assert val <= rows and train <= rows and not val & train
        assert len(b.test) == round(0.2 * len(a.train))
        assert not val & {tuple(r.tolist()) for r in a.test.x}
    assert torch.equal(tuning_stream(s, "validation", 0, 0.2, 0).experiences[1].test.x, t.experiences[1].test.x)


def test_a_trial_under_first_k_trains_on_k_experiences_only():
    base = build_config(strategy="naive", benchmark="split-digits", overrides=["train.epochs=1"]).to_dict()
    m = score_trial(base, {"train.lr": 1e-3}, "first-k", 2, 0.1)
    full_steps = score_trial(base, {"train.lr": 1e-3}, "first-k", 4, 0.1)["steps"]
    assert m["steps"] * 2 == full_steps  # split-digits experiences have equal sizes
    assert 0.0 <= m["acc"] <= 1.0


@pytest.mark.slow
def test_tune_runs_trials_on_ray_then_the_best_on_the_full_stream_with_fresh_seeds(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("optuna")
    import json

    from typer.testing import CliRunner

    from perennial.cli import app
    from perennial.store import RunStore

    r = CliRunner().invoke(
        app,
        [
            "tune", "-b", "split-digits", "-s", "replay", "--set", "train.epochs=1",
            "--space", "train.lr=loguniform:1e-4:1e-2", "--space", "strategy.buffer_size=choice:50,100",
            "--trials", "3", "--workers", "2", "--final-seeds", "2", "--k", "2",
            "--store", str(tmp_path / "s"), "--out", str(tmp_path / "out"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert res["protocol"] == "first-k" and "first 2 of 5 experiences" in res["protocol_text"]
    assert len(res["trials"]) == 3 and all("acc" in t for t in res["trials"])
    best = max(res["trials"], key=lambda t: t["acc"])
    assert res["best_params"] == best["params"]
    assert res["best_config"]["train"]["lr"] == pytest.approx(best["params"]["train.lr"])
    assert res["final_seeds"] == [1, 2]  # never the tuning seed 0
    runs = RunStore(tmp_path / "s").list()
    assert sorted(x.seed for x in runs) == [1, 2] and all(x.status == "finished" for x in runs)
    assert all(x.n_experiences == 5 for x in runs)  # the final runs see the whole stream
    assert "protocol first-k" in r.output
