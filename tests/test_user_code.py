"""Your own model, strategy and data (issue 11): any nn.Module, plug-in names, Python runs in
the store, idempotent compare, class order, output formats and error suggestions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import perennial
from helpers import tiny_stream
from perennial import api
from perennial.cli import app
from perennial.config import build_config
from perennial.errors import ConfigError, DataError
from perennial.models import MODELS
from perennial.store import RunStore
from perennial.strategies import STRATEGIES, make_strategy
from perennial.streams import BENCHMARKS
from perennial.train import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: the user's own module: a plain CNN (forward(x)), their tensors as a stream, their strategy
MYMOD = '''
import torch
from torch import nn

from perennial.strategies import Strategy
from perennial.streams import split_by_class


class SmallCNN(nn.Module):
    def __init__(self, n_classes=4, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width * 16, n_classes)

    def forward(self, x):
        return self.fc(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def make_cnn(input_shape, n_classes, width: int = 8):
    """A plain CNN with forward(x)."""
    return SmallCNN(n_classes, width)


def my_tensors():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 4
    x = torch.randn(600, 1, 8, 8, generator=g)
    x[torch.arange(600), 0, 2 * y, 2 * y] += 4.0
    return x, y


def my_stream(scenario: str = "class"):
    """Four classes of 8x8 images, two experiences."""
    x, y = my_tensors()
    return split_by_class(x[:480], y[:480], x[480:], y[480:], classes_per_exp=2, scenario=scenario, name="mine")


class MyStrategy(Strategy):
    """Adds weight * mean(logits^2) to the loss."""

    summary = "logit penalty"
    weight: float = 0.01

    def loss(self, ctx, batch, logits, loss):
        return loss + self.weight * logits.pow(2).mean()
'''

TRAIN = {"train.epochs": 4, "train.lr": 0.01, "train.batch_size": 32}


class PlainNet(nn.Module):
    def __init__(self, d: int = 8, n: int = 6):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, n))

    def forward(self, x):
        return self.f(x)


def env(tmp: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


def cli(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "perennial", *args], cwd=tmp, env=env(tmp), capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


# --- models -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_plain_module_with_forward_x_trains(scenario):
    stream = tiny_stream(scenario)
    net = PlainNet()
    before = [p.detach().clone() for p in net.parameters()]
    r = fit(net, stream, make_strategy("replay"), TrainSettings(epochs=5, lr=0.01, batch_size=16))
    assert r.accuracy_matrix[0][0] > 0.9  # the first experience is learned
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # trained in place
    if scenario == "task":  # masked logits: old tasks stay solvable inside their own head
        assert min(r.accuracy_matrix[-1]) > 0.7


def test_contract_errors_name_strategy_capability_and_fix():
    stream = tiny_stream()
    with pytest.raises(ConfigError) as e:
        fit(PlainNet(), stream, make_strategy("icarl"), TrainSettings(epochs=1))
    msg = str(e.value)
    assert "strategy 'icarl'" in msg and "'features'" in msg and "features(x)" in msg
    with pytest.raises(ConfigError, match=r"returns \(2, 3\).*\(batch, 6\)"):
        fit(PlainNet(n=3), stream, make_strategy("naive"))
    with pytest.raises(ConfigError, match=r"shape \(2, 8\).*failed"):
        fit(PlainNet(d=5), stream, make_strategy("naive"))


# --- Python runs == CLI runs ----------------------------------------------------------------


def test_python_run_equals_cli_run_on_split_mnist(tmp_path):
    """perennial.experiment and perennial run build the same config: the same accuracy matrix."""
    sets = {"train.epochs": 1, "strategy.buffer_size": 200}
    py = perennial.experiment("split-mnist", "replay", overrides=sets, store=tmp_path / "py")
    out = tmp_path / "cli.json"
    args = ["run", "-b", "split-mnist", "-s", "replay", "--store", str(tmp_path / "cli"), "-q", "--json", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    c = json.loads(out.read_text())
    assert py["accuracy_matrix"] == c["accuracy_matrix"]
    assert py["config"] == c["config"]
    assert set(py) == set(c)  # the same summary as --json
    assert py["units"]["accuracy"].startswith("fraction")
    assert len(py["train_seconds"]) == len(py["eval_seconds"]) == 5
    assert RunStore(tmp_path / "py").get(py["run_id"]).status == "finished"


def test_python_objects_are_recorded_and_resume_says_why_not(tmp_path):
    stream = tiny_stream()
    s = perennial.experiment(stream, "naive", PlainNet(), overrides={"train.epochs": 1}, store=tmp_path)
    rec = RunStore(tmp_path).get(s["run_id"])
    assert rec.benchmark == "python:tiny" and rec.config["model"]["name"] == "python:PlainNet"
    assert "python:tiny" not in BENCHMARKS.names()  # objects are usable by name, not listed
    RunStore(tmp_path).mark(s["run_id"], "interrupted")
    # in this process the objects are known: resume from Python with them
    again = perennial.experiment(stream, "naive", PlainNet(), store=tmp_path, run_id=s["run_id"], resume=True)
    assert again["accuracy_matrix"] == s["accuracy_matrix"]
    RunStore(tmp_path).mark(s["run_id"], "interrupted")
    # another process cannot rebuild them: resume says so (exit 2, no traceback)
    for reg in (BENCHMARKS, MODELS):
        reg._resolved.pop(f"python:{'tiny' if reg is BENCHMARKS else 'PlainNet'}")
    r = runner.invoke(app, ["resume", s["run_id"], "--store", str(tmp_path)])
    assert r.exit_code == 2 and "Python object" in r.output and "resume=True" in r.output, r.output


# --- plug-ins: what issue 11 must show ------------------------------------------------------


@pytest.mark.slow
def test_user_module_through_python_and_cli_then_kill_and_resume(tmp_path, monkeypatch):
    """A plain CNN, the user's tensors and strategy: Python == CLI for four strategies, all in
    the store and the report; a SIGKILLed plug-in CLI run resumes bit-identically."""
    (tmp_path / "mymod.py").write_text(MYMOD)
    monkeypatch.chdir(tmp_path)  # the CLI imports mymod from the current folder
    store = tmp_path / "st"
    sets = [f"--set={k}={v}" for k, v in TRAIN.items()]
    common = ["-b", "mymod:my_stream", "--set", "model.name=mymod:make_cnn", "--store", str(store), "-q"]
    py: dict[str, dict] = {}
    for s in ["naive", "replay", "replay+ewc", "mymod:MyStrategy"]:
        py[s] = perennial.experiment("mymod:my_stream", s, "mymod:make_cnn", overrides=TRAIN, store=store)
        out = tmp_path / f"{s.replace(':', '_')}.json"
        r = runner.invoke(app, ["run", "--strategy", s, *common, *sets, "--json", str(out)])
        assert r.exit_code == 0, r.output
        c = json.loads(out.read_text())
        assert c["accuracy_matrix"] == py[s]["accuracy_matrix"], s  # Python == CLI, to the last digit
        assert c["accuracy_matrix"][0][0] > 0.9  # the plain CNN learns the user's data
    assert py["replay"]["metrics"]["acc"] > py["naive"]["metrics"]["acc"] + 0.2
    ids = [
        r["run_id"]
        for r in json.loads(runner.invoke(app, ["runs", "--store", str(store), "--format", "json"]).output)["runs"]
    ]
    assert len(ids) == 8 and sum("MyStrategy" in i for i in ids) == 2
    r = runner.invoke(app, ["report", *ids, "--store", str(store), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.html").stat().st_size > 1000

    # SIGKILL a plug-in CLI run after its first checkpoint; resume ends bit-identical
    long = [*sets, "--set", "train.epochs=12"]
    args = [sys.executable, "-m", "perennial", "run", "--strategy", "replay+mymod:MyStrategy", *common, *long]
    proc = subprocess.Popen(
        [*args, "--run-id", "killed", "--checkpoint-every", "5"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckdir = store / "checkpoints" / "killed"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(ckdir.glob("ckpt-*.pt.sha256")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert RunStore(store).get("killed").status == "running"  # killed mid-run, not finished
    r = runner.invoke(app, ["resume", "killed", "--store", str(store), "-q", "--json", str(tmp_path / "resumed.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["run", "--strategy", "replay+mymod:MyStrategy", *common, *long, "--json", str(tmp_path / "whole.json")]
    )
    assert r.exit_code == 0, r.output
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    whole = json.loads((tmp_path / "whole.json").read_text())
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["loss_matrix"] == whole["loss_matrix"]


def test_entry_points_appear_in_list_and_run(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(MYMOD)
    dist = tmp_path / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[perennial.strategies]\nlogit-penalty = mymod:MyStrategy\n\n"
        "[perennial.models]\nsmall-cnn = mymod:make_cnn\n\n"
        "[perennial.benchmarks]\nmine = mymod:my_stream\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for reg in (STRATEGIES, MODELS, BENCHMARKS):  # as in a fresh process; restored after the test
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_entry_points_loaded", False)
    assert "logit-penalty" in runner.invoke(app, ["list", "strategies"]).output.split()
    assert "small-cnn" in runner.invoke(app, ["list", "models"]).output.split()
    assert "mine" in runner.invoke(app, ["list", "benchmarks"]).output.split()
    r = runner.invoke(app, ["run", "-b", "mine", "-s", "replay+logit-penalty", "-m", "small-cnn", "--dry-run"])
    assert r.exit_code == 0 and "ok: mine (class-incremental, 2 experiences" in r.output, r.output


def test_plugin_name_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="cannot import module 'nosuchmod'"):
        build_config(strategy="nosuchmod:X")
    with pytest.raises(ConfigError, match=r"has no 'Nope'.*defines"):
        build_config(strategy="perennial.strategies:Nope")
    with pytest.raises(ConfigError, match="not a Strategy subclass"):
        build_config(strategy="torch.nn:Linear")
    with pytest.raises(ConfigError, match="model factory"):
        build_config(overrides=["model.name=torch:float32"])


def test_plugin_in_toml_config_and_factory_params(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(MYMOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[strategy]\nname = "replay+mymod:MyStrategy"\nweight = 0.5\n[model]\nname = "mymod:make_cnn"\nwidth = 4\n'
    )
    cfg = build_config(toml, benchmark="mymod:my_stream")
    assert cfg.model.params() == {"width": 4}
    _, strat, model = api.build(cfg)
    assert [p.name for p in strat.parts()] == ["replay", "mymod:MyStrategy"]
    assert list(strat.parts())[1].weight == 0.5
    assert model.module.conv.out_channels == 4
    with pytest.raises(ConfigError, match=r"model\.depth"):
        build_config(toml, ["model.depth=3"], benchmark="mymod:my_stream")


# --- idempotent compare ---------------------------------------------------------------------


def _grid(strategy: str, seed: int):
    return build_config(
        {"benchmark": {"name": "split-digits"}}, ["train.epochs=1"], strategy=strategy.split()[0], seed=seed
    )


def test_compare_reuses_finished_runs_and_fresh_reruns(tmp_path):
    st = RunStore(tmp_path)
    first = api.compare(_grid, ["naive", "replay"], [0, 1], store=st)
    assert first.reused == 0
    created = {r.run_id: r.created for r in first.runs}
    again = api.compare(_grid, ["naive", "replay"], [0, 1], store=st)
    assert again.reused == 4 and [r.run_id for r in again.runs] == list(created)
    assert {r.run_id: r.created for r in again.runs} == created  # nothing retrained
    assert again.rows == first.rows
    fresh = api.compare(_grid, ["naive"], [0], store=st, fresh=True)
    assert fresh.reused == 0 and fresh.runs[0].created > created[fresh.runs[0].run_id]


@pytest.mark.slow
def test_killed_compare_resumes_and_equals_an_uninterrupted_one(tmp_path):
    args = ["compare", "-b", "split-digits", "--strategies", "replay", "--seeds", "3"]
    args += ["--set", "train.epochs=4", "--set", "checkpoint.every=20"]
    store = tmp_path / "st"
    full = [sys.executable, "-m", "perennial", *args, "--store", str(store)]
    proc = subprocess.Popen(full, cwd=tmp_path, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if (store / "runs.sqlite").exists() or store.exists():
            recs = RunStore(store).list()
            if sum(r.status == "finished" for r in recs) >= 2 and any(r.status == "running" for r in recs):
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recs = RunStore(store).list()
    assert sum(r.status == "finished" for r in recs) == 2 and len(recs) == 3  # killed inside the third run
    r = runner.invoke(app, [*args, "--store", str(store), "--json", str(tmp_path / "again.json")])
    assert r.exit_code == 0, r.output
    assert "reused 2 finished run(s) and resumed 1 interrupted run(s)" in " ".join(r.output.split())
    r = runner.invoke(app, [*args, "--store", str(tmp_path / "clean"), "-q", "--json", str(tmp_path / "clean.json")])
    assert r.exit_code == 0, r.output
    again, clean = (json.loads((tmp_path / f).read_text()) for f in ("again.json", "clean.json"))
    strip = ("seconds_mean",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in again["results"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in clean["results"]
    ]


def test_interrupted_compare_prints_finished_runs_and_command(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = api.run

    def flaky(cfg, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(api, "run", flaky)
    args = ["compare", "-b", "split-digits", "--strategies", "naive", "--seeds", "2", "--set", "train.epochs=1"]
    r = runner.invoke(app, [*args, "--store", str(tmp_path)])
    assert r.exit_code == 130
    assert "compare interrupted after 1 of 2 runs" in r.output and "split-digits-naive-s0-" in r.output
    assert "continue" in r.output


# --- streams, formats, errors ---------------------------------------------------------------


def test_class_order_names_experiences_and_refuses_non_permutations(tmp_path):
    cfg = build_config(None, ["benchmark.class_order=[3,8,1,7,0,6,2,5,4,9]"], benchmark="split-digits")
    stream = api.build_stream(cfg)
    assert [e.name for e in stream] == ["exp0[3+8]", "exp1[1+7]", "exp2[0+6]", "exp3[2+5]", "exp4[4+9]"]
    with pytest.raises(DataError, match="permutation"):
        api.build_stream(build_config(None, ["benchmark.class_order=[3,8,1,7,0,6,2,5,4,4]"], benchmark="split-digits"))
    r = runner.invoke(app, ["run", "-b", "split-digits", "--set", "benchmark.class_order=[0,1]", "--dry-run"])
    assert r.exit_code == 2 and "permutation" in r.output


def test_dry_run_prints_the_benchmark_training_defaults(tmp_path):
    for d in (tmp_path / "npz",):
        d.mkdir()
        x = torch.randn(20, 4).numpy()
        import numpy as np

        for k in range(2):
            np.savez(d / f"e{k}.npz", x_train=x, y_train=np.full(20, k), x_test=x[:4], y_test=np.full(4, k))
    r = runner.invoke(app, ["run", "-b", "npz-dir", "--set", f"benchmark.path={tmp_path / 'npz'}", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "model mlp(hidden=[256, 256]); epochs=10, batch_size=64" in r.output and "defaults of npz-dir" in r.output
    assert "epochs=10" in (ROOT / "docs" / "custom-data.md").read_text()


def test_output_formats(tmp_path):
    st = tmp_path / "st"
    out = tmp_path / "c.json"
    r = runner.invoke(
        app,
        [
            *("compare", "-b", "split-digits", "--strategies", "replay", "--sweep", "strategy.ratio=0,0.5"),
            *("--seeds", "1", "--set", "train.epochs=1", "--store", str(st), "-q", "--json", str(out)),
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert "units" in d and [row["params"] for row in d["results"]] == [{"strategy.ratio": 0}, {"strategy.ratio": 0.5}]
    r = runner.invoke(app, ["runs", "--store", str(st), "--format", "csv"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 0 and lines[0].startswith("run_id,status,benchmark") and "acc" in lines[0] and len(lines) == 3
    rid = d["run_ids"][0]
    r = runner.invoke(app, ["show", rid, "--store", str(st), "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0] == "run_id,row,trained_on,experience,accuracy,loss"
    assert len(r.output.strip().splitlines()) == 1 + 6 * 5  # initial row + 5 rows, 5 experiences each
    r = runner.invoke(app, ["runs", "--store", str(st), "--format", "json"])
    assert len(json.loads(r.output)["runs"]) == 2
    assert runner.invoke(app, ["runs", "--store", str(st), "--format", "xml"]).exit_code == 2


def test_error_suggestions():
    with pytest.raises(ConfigError, match=r"did you mean 'strategy\.buffer_size'"):
        build_config(None, ["buffer_size=200"])
    with pytest.raises(ConfigError, match=r"icarl supports class"):
        build_config(strategy="icarl", scenario="task")
    with pytest.raises(ConfigError, match=r"'buffer_size' is a parameter of .*replay"):
        build_config(None, ["strategy.buffer_size=200"], strategy="ewc")


# --- docs run as written ----------------------------------------------------------------------


def _python_blocks(path: Path, section: str | None = None) -> list[str]:
    import re

    text = path.read_text()
    if section:
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import" in b]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("doc", "section"), [("docs/your-own-model.md", None), ("README.md", "## Python API")], ids=["own-model", "readme"]
)
def test_doc_python_runs_as_written(tmp_path, doc, section):
    blocks = _python_blocks(ROOT / doc, section)
    assert blocks
    for code in blocks:
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, f"{doc}:\n{code}\n{p.stderr}"


def test_compare_trains_again_a_run_whose_checkpoints_are_all_broken(tmp_path):
    st = RunStore(tmp_path)
    first = api.compare(_grid, ["naive"], [0], store=st)
    rid = first.runs[0].run_id
    st.mark(rid, "running")  # as if killed while writing its only checkpoint
    ck = tmp_path / "checkpoints" / rid
    ck.mkdir(parents=True, exist_ok=True)
    (ck / "ckpt-000000005-0000.pt").write_bytes(b"half a file")
    again = api.compare(_grid, ["naive"], [0], store=st)
    assert again.resumed == 0 and again.runs[0].status == "finished"
    assert again.runs[0].accuracy_matrix == first.runs[0].accuracy_matrix
    assert any("trained it again" in n for n in again.runs[0].notes)
