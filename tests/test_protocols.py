"""--protocol presets: a config layer above the benchmark defaults, below file, --set and flags."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perennial.cli import app
from perennial.config import build_config
from perennial.errors import ConfigError
from perennial.protocols import PROTOCOLS

runner = CliRunner()


def test_vandeven_preset_sets_the_published_protocol():
    cfg = build_config(protocol="vandeven-split-mnist-task", strategy="replay")
    assert (cfg.benchmark.name, cfg.benchmark.scenario) == ("split-mnist", "task")
    assert cfg.model.params()["hidden"] == [400, 400]
    t = cfg.train
    assert (t.steps, t.batch_size, t.optimizer, t.lr) == (2000, 128, "adam", 1e-3)
    assert cfg.strategy.params() == {"buffer_size": 1000, "policy": "class_balanced"}
    for scenario in ("domain", "class"):
        assert build_config(protocol=f"vandeven-split-mnist-{scenario}").benchmark.scenario == scenario


def test_memory_settings_reach_only_the_strategies_that_have_a_memory():
    assert build_config(protocol="vandeven-split-mnist-class", strategy="naive").strategy.params() == {}
    assert build_config(protocol="vandeven-split-mnist-class", strategy="ewc").strategy.params() == {}
    agem = build_config(protocol="vandeven-split-mnist-class", strategy="agem").strategy.params()
    assert agem["buffer_size"] == 1000
    both = build_config(protocol="vandeven-split-mnist-class", strategy="replay+lwf").strategy.params()
    assert both == {"buffer_size": 1000, "policy": "class_balanced"}
    two = build_config(protocol="vandeven-split-mnist-class", strategy="replay+der").strategy.params()
    assert two["replay.buffer_size"] == two["der.buffer_size"] == 1000
    # herding keeps its own selection (the preset's class_balanced is for reservoir memories)
    icarl = build_config(protocol="vandeven-split-mnist-class", strategy="icarl").strategy.params()
    assert icarl == {"buffer_size": 1000}


def test_preset_is_a_layer_that_file_set_and_flags_override(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("[train]\nbatch_size = 64\n[strategy]\nbuffer_size = 200\n")
    cfg = build_config(
        file,
        ["train.steps=7"],
        protocol="vandeven-split-mnist-task",
        strategy="replay",
        scenario="class",
    )
    assert cfg.train.steps == 7 and cfg.train.batch_size == 64 and cfg.train.lr == 1e-3
    assert cfg.strategy.params()["buffer_size"] == 200 and cfg.benchmark.scenario == "class"
    # above the benchmark defaults: the preset's steps win over split-mnist's 20 epochs
    assert build_config(protocol="vandeven-split-mnist-task").train.steps == 2000


def test_greydanus_preset():
    cfg = build_config(protocol="greydanus-mnist1d")
    assert cfg.benchmark.name == "split-mnist1d" and cfg.model.params()["hidden"] == [256, 256]
    t = cfg.train
    assert (t.steps, t.batch_size, t.lr, t.weight_decay) == (1600, 100, 1e-2, 0.0)


def test_unknown_protocol_is_a_config_error_with_suggestions():
    with pytest.raises(ConfigError) as e:
        build_config(protocol="vandeven-split-mnist-cls")
    (field, msg) = e.value.problems[0]
    assert field == "--protocol" and "vandeven-split-mnist-class" in msg


def test_cli_lists_protocols_with_source_and_runs_them(tmp_path):
    r = runner.invoke(app, ["list", "protocols", "-v"])
    assert r.exit_code == 0
    for name in PROTOCOLS.names():
        assert name in r.output
    assert r.output.count("source:") == len(PROTOCOLS.names())
    r = runner.invoke(app, ["run", "--protocol", "nope", "--dry-run"])
    assert r.exit_code == 2 and "unknown protocol" in r.output
    r = runner.invoke(app, ["run", "--protocol", "vandeven-split-mnist-class", "-s", "agem", "--dry-run"])
    assert r.exit_code == 0 and "buffer_size=1000" in r.output
    out = tmp_path / "c.json"
    r = runner.invoke(
        app,
        [
            "compare",
            "--protocol",
            "vandeven-split-mnist-task",
            "--strategies",
            "naive,replay",
            "--seeds",
            "1",
            "--set",
            "train.steps=2",
            "--store",
            str(tmp_path / "runs"),
            "--json",
            str(out),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["results"]
    assert [row["scenario"] for row in rows] == ["task", "task"]
