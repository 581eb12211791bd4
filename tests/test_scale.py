"""Runs as Ray tasks (compare --workers N): same numbers as in one process, survives a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perennial.cli import app
from perennial.store import RunStore

runner = CliRunner()
TINY = ["-b", "split-digits", "--set", "train.epochs=1", "--strategies", "naive,replay", "--seeds", "2", "-q"]


def invoke(*args: str):
    r = runner.invoke(app, list(args))
    assert "Traceback" not in r.output, r.output
    return r


def test_workers_zero_and_bad_ray_options_exit_2(tmp_path):
    r = invoke("compare", *TINY, "--workers", "0", "--store", str(tmp_path))
    assert r.exit_code == 2 and "--workers must be at least 1" in r.output
    t0 = time.perf_counter()
    r = invoke("compare", *TINY, "--workers", "2", "--ray-address", "127.0.0.1:9", "--store", str(tmp_path))
    assert r.exit_code == 2 and "cannot reach the Ray cluster at '127.0.0.1:9'" in r.output
    assert time.perf_counter() - t0 < 30
    r = invoke("compare", *TINY, "--workers", "2", "--ray-address", "nonsense", "--store", str(tmp_path))
    assert r.exit_code == 2 and "HOST:PORT" in r.output
    assert not RunStore(tmp_path).list()


def test_without_ray_workers_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    r = invoke("compare", *TINY, "--workers", "2", "--store", str(tmp_path))
    assert r.exit_code == 2 and "pip install 'perennial[ray]'" in r.output


def _json_rows(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())["results"]
    return [{k: v for k, v in r.items() if k not in ("run_ids", "seconds_mean")} for r in rows]


@pytest.mark.slow
def test_ray_compare_matches_sequential_and_survives_a_killed_worker(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    base = [sys.executable, "-m", "perennial", "compare", *TINY, "--eval-every", "20"]
    seq = subprocess.run(
        [*base, "--store", str(tmp_path / "seq"), "--json", str(tmp_path / "seq.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seq.returncode == 0, seq.stderr
    store = tmp_path / "par"
    proc = subprocess.Popen(
        [*base, "--store", str(store), "--json", str(tmp_path / "par.json"), "--workers", "2",
         "--set", "checkpoint.every=5"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and proc.poll() is None:
        for info in (store / "checkpoints").glob("*/worker.json"):
            if list(info.parent.glob("ckpt-*.pt.sha256")):  # it has a checkpoint: kill it mid-run
                try:
                    killed = json.loads(info.read_text())
                except ValueError:
                    continue
                os.kill(killed["pid"], signal.SIGKILL)
                break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "no worker was found running with a checkpoint"
    assert proc.returncode == 0, err
    assert "failed" in err and "retrying from its last checkpoint" in err, err
    par = RunStore(store).get(killed["run_id"])
    assert par.status == "finished"
    # identical to the sequential runs, to the last digit, the killed-and-resumed one included
    assert _json_rows(tmp_path / "par.json") == _json_rows(tmp_path / "seq.json")
    seq_runs = {(r.strategy, r.seed): r.run_id for r in RunStore(tmp_path / "seq").list()}
    twin = RunStore(tmp_path / "seq").get(seq_runs[(par.strategy, par.seed)])
    assert par.accuracy_matrix == twin.accuracy_matrix
    assert [(r.step, r.acc) for r in RunStore(store).eval_log(par.run_id)] == [
        (r.step, r.acc) for r in RunStore(tmp_path / "seq").eval_log(twin.run_id)
    ]
    assert not list((store / "checkpoints").glob("*/*"))  # finished runs leave no files behind


def test_a_detached_run_written_by_the_driver_equals_a_stored_run(tmp_path):
    """The Ray task's function without Ray: same numbers, same eval log, nothing left behind."""
    from perennial import api
    from perennial.config import build_config
    from perennial.scale.worker import execute, write_result

    cfg = build_config(benchmark="split-digits", strategy="replay", overrides=["train.epochs=1", "eval.every=25"])
    store = RunStore(tmp_path / "s")
    ref = api.run(cfg, store=store, run_id="seq")
    ck = tmp_path / "ck" / "det"
    res = execute(cfg, "det", ck, threads=1)
    rec = write_result(store, res)
    assert rec.status == "finished"
    assert rec.accuracy_matrix == ref.accuracy_matrix and rec.loss_matrix == ref.loss_matrix
    assert rec.random_init_acc == ref.random_init_acc
    assert [(r.step, r.exp_eval, r.acc) for r in store.eval_log("det")] == [
        (r.step, r.exp_eval, r.acc) for r in store.eval_log("seq")
    ]
    same = {k: v for k, v in (rec.metrics or {}).items() if not k.endswith("seconds")}
    assert same == {k: v for k, v in (ref.metrics or {}).items() if not k.endswith("seconds")}
    assert not ck.exists()


@pytest.mark.parametrize("cmd", [["tune"], ["export"]])
def test_new_commands_have_help(cmd):
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.slow
def test_a_run_that_failed_for_good_on_a_worker_resumes_from_the_store(tmp_path):
    """A worker killed mid-run, no retries left: the driver stores it as failed with what it
    measured; `perennial resume` finishes it with the numbers of an uninterrupted run."""
    from perennial import api
    from perennial.config import build_config
    from perennial.scale.worker import record_failure

    over = ["train.epochs=1", "eval.every=10", "checkpoint.every=4"]
    cfg = build_config(benchmark="split-digits", strategy="replay", overrides=over)
    store = RunStore(tmp_path / "s")
    ref = api.run(cfg, store=RunStore(tmp_path / "ref"), run_id="ref")
    ck = store.checkpoints("dead").root
    code = (
        "from perennial.config import build_config; from perennial.scale.worker import execute; "
        f"execute(build_config(benchmark='split-digits', strategy='replay', overrides={over!r}), 'dead', {str(ck)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len([p for p in ck.glob("ckpt-*.sha256")]) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    record_failure(store, cfg, "dead", ck, "WorkerCrashedError: killed")
    assert store.get("dead").status == "failed"
    r = invoke("resume", "dead", "--store", str(tmp_path / "s"), "-q")
    assert r.exit_code == 0, r.output
    rec = store.get("dead")
    assert rec.status == "finished" and rec.accuracy_matrix == ref.accuracy_matrix
    assert [(e.step, e.acc) for e in store.eval_log("dead")] == [
        (e.step, e.acc) for e in RunStore(tmp_path / "ref").eval_log("ref")
    ]
