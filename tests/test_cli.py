from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perennial.cli import app

runner = CliRunner()
FAST = ["--set", "train.epochs=1", "-b", "split-digits"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_run_json_summary_and_store(tmp_path):
    out = tmp_path / "out.json"
    r = invoke(
        "run",
        *FAST,
        "-s",
        "replay",
        "--set",
        "strategy.buffer_size=50",
        "--store",
        str(tmp_path / "st"),
        "--run-id",
        "r1",
        "--json",
        str(out),
        "-q",
    )
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    for key in ("run_id", "benchmark", "scenario", "strategy", "seed", "accuracy_matrix", "metrics", "seconds"):
        assert key in d
    for key in ("acc", "bwt", "forgetting", "learning_acc", "fwt", "avg_inc_acc"):
        assert key in d["metrics"]
    assert d["run_id"] == "r1" and d["strategy"] == "replay" and d["scenario"] == "class"
    assert len(d["accuracy_matrix"]) == 5 and d["config"]["strategy"]["buffer_size"] == 50

    # stored: runs lists it, show prints it, show --json gives the same summary
    r = invoke("runs", "--store", str(tmp_path / "st"))
    assert r.exit_code == 0 and "r1" in r.output
    r = invoke("show", "r1", "--store", str(tmp_path / "st"))
    assert r.exit_code == 0 and "accuracy" in r.output
    show_json = tmp_path / "show.json"
    invoke("show", "r1", "--store", str(tmp_path / "st"), "--json", str(show_json))
    assert json.loads(show_json.read_text())["accuracy_matrix"] == d["accuracy_matrix"]

    # the same run id again is refused (nothing is overwritten silently)
    r = invoke("run", *FAST, "--store", str(tmp_path / "st"), "--run-id", "r1", "-q")
    assert r.exit_code != 0 and "already exists" in r.output


def test_run_prints_tables(tmp_path):
    r = invoke("run", *FAST, "--store", str(tmp_path))
    assert r.exit_code == 0
    assert "accuracy (%)" in r.output and "forgetting" in r.output and "R[i,i]" in r.output


def test_compare_json(tmp_path):
    out = tmp_path / "cmp.json"
    r = invoke(
        "compare",
        *FAST,
        "--strategies",
        "naive,replay+ewc",
        "--seeds",
        "2",
        "--store",
        str(tmp_path),
        "--json",
        str(out),
    )
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    rows = {row["strategy"]: row for row in d["results"]}
    assert set(rows) == {"naive", "replay+ewc"}
    for row in rows.values():
        assert row["n"] == 2 and row["seeds"] == [0, 1]
        assert 0 <= row["acc_mean"] <= 1 and row["acc_sem"] is not None
    assert len(d["run_ids"]) == 4


def test_list_commands():
    r = invoke("list", "strategies")
    names = r.output.split()
    assert {"naive", "joint", "cumulative", "replay", "ewc", "online-ewc", "lwf"} <= set(names)
    r = invoke("list", "benchmarks")
    assert r.output.split() == [
        "digits-c",
        "hf",
        "image-folder",
        "imagenet-r",
        "mnist-c",
        "npz-dir",
        "permuted-mnist",
        "rotating-digits",
        "split-cifar10",
        "split-cifar100",
        "split-digits",
        "split-mnist",
        "split-mnist1d",
        "split-tinyimagenet",
        "text-domains",
    ]
    assert {"mlp", "cnn", "gpt", "tiny-gpt", "cnn-bn", "resnet"} <= set(invoke("list", "models").output.split())
    assert invoke("list", "methods").output.split() == [
        "bn",
        "cotta",
        "eata",
        "lame",
        "rdumb",
        "rmt",
        "sar",
        "source",
        "tent",
    ]


def test_list_strategies_shows_every_registered_name_and_its_scenarios():
    from perennial.strategies import STRATEGIES

    assert invoke("list", "strategies").output.split() == STRATEGIES.names()
    lines = {ln.split()[0]: ln for ln in invoke("list", "strategies", "-v").output.splitlines()}
    assert set(lines) == set(STRATEGIES.names())
    assert "[class]" in lines["icarl"] and "[class,domain,task]" in lines["gem"]
    assert "+lm" in lines["replay"] and "+lm" not in lines["icarl"]  # language-model streams


def test_compare_accepts_any_subset_of_the_zoo(tmp_path):
    out = tmp_path / "cmp.json"
    names = "gdumb,icarl,gem,derpp+si"
    r = invoke("compare", *FAST, "--strategies", names, "--seeds", "1", "--store", str(tmp_path), "--json", str(out))
    assert r.exit_code == 0, r.output
    assert [row["strategy"] for row in json.loads(out.read_text())["results"]] == names.split(",")


def test_compare_refuses_an_unsupported_scenario_before_running(tmp_path):
    r = invoke("compare", *FAST, "--strategies", "naive,icarl,bic", "--scenario", "task", "--store", str(tmp_path))
    assert r.exit_code == 2
    assert "icarl does not support the task scenario" in r.output and "bic does not support" in r.output
    assert not (tmp_path / "runs.sqlite").exists() or "naive" not in invoke("runs", "--store", str(tmp_path)).output


@pytest.mark.parametrize("cmd", [[], ["run"], ["compare"], ["runs"], ["show"], ["list"], ["generate"]])
def test_help_everywhere(cmd):
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_unknown_names_suggest(tmp_path):
    r = invoke("run", "-s", "replya", "--store", str(tmp_path))
    assert r.exit_code == 2 and "did you mean 'replay'" in r.output
    r = invoke("run", "-b", "split-mnst", "--store", str(tmp_path))
    assert r.exit_code == 2 and "split-mnist" in r.output
    r = invoke("compare", "--strategies", "naive,ewk", "--store", str(tmp_path))
    assert r.exit_code == 2 and "'ewc'" in r.output


def test_every_problem_reported_at_once(tmp_path):
    r = invoke(
        "run",
        "-s",
        "replay",
        "--store",
        str(tmp_path),
        "--set",
        "strategy.buffer_size=-5",
        "--set",
        "train.lr=0",
        "--set",
        "train.epocs=3",
        "--set",
        "strategy.bufer=1",
    )
    assert r.exit_code == 2
    out = r.output
    assert "4 problems" in out
    assert "strategy.buffer_size" in out and "-5" in out
    assert "train.lr" in out and "train.epocs" in out and "did you mean 'buffer_size'" in out


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [unclosed\n")
    r = invoke("run", "--config", str(bad), "--store", str(tmp_path))
    assert r.exit_code == 2 and "not valid TOML" in r.output
    unknown = tmp_path / "u.toml"
    unknown.write_text("sed = 1\n[train]\nepochs = 0\n")
    r = invoke("run", "--config", str(unknown), "--store", str(tmp_path))
    assert r.exit_code == 2 and "did you mean 'seed'" in r.output and "train.epochs" in r.output
    r = invoke("run", "--config", str(tmp_path / "missing.toml"), "--store", str(tmp_path))
    assert r.exit_code == 2 and "does not exist" in r.output


def test_config_file_layers(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'seed = 3\n[benchmark]\nname = "split-digits"\n[strategy]\nname = "replay+ewc"\nbuffer_size = 40\n'
        "ewc.ewc_lambda = 10.0\n[train]\nepochs = 1\n"
    )
    out = tmp_path / "o.json"
    r = invoke(
        "run",
        "--config",
        str(cfg),
        "--set",
        "strategy.buffer_size=30",
        "--store",
        str(tmp_path),
        "--json",
        str(out),
        "-q",
    )
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["seed"] == 3 and d["benchmark"] == "split-digits"
    assert d["config"]["strategy"]["buffer_size"] == 30 and d["config"]["strategy"]["ewc"] == {"ewc_lambda": 10.0}


def test_ambiguous_parameter_in_composition(tmp_path):
    r = invoke("run", "-s", "ewc+online-ewc", "--set", "strategy.ewc_lambda=3", "--store", str(tmp_path))
    assert r.exit_code == 2 and "ambiguous" in r.output


def test_show_unknown_run(tmp_path):
    invoke("run", *FAST, "--store", str(tmp_path), "--run-id", "abc", "-q")
    r = invoke("show", "abd", "--store", str(tmp_path))
    assert r.exit_code == 2 and "did you mean abc" in r.output


def test_unsupported_scenario(tmp_path):
    r = invoke("run", "-b", "permuted-mnist", "--scenario", "class", "--store", str(tmp_path))
    assert r.exit_code == 2 and "supports domain" in r.output
