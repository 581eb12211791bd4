"""Reliability: exact resume after crashes, safe checkpoints, refusal of foreign checkpoints.

Each "kill" here stops a run at a random optimizer step without any final save (an exception
raised from a callback, which is what SIGKILL leaves behind: the checkpoints written so far
and the rows in the store); the run is then resumed, possibly killed again, until it ends.
The resumed result must equal an uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from helpers import TIMING
from perennial import api
from perennial.config import build_config
from perennial.errors import CheckpointError
from perennial.store import CheckpointDir, RunStore
from perennial.strategies import STRATEGIES
from perennial.train import Callback


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, no checkpoint is written on the way out."""


class KillAt(Callback):
    def __init__(self, step: int | None):
        self.step = step

    def on_step_end(self, ctx, batch, loss):
        if self.step is not None and ctx.step == self.step:
            raise Killed


def results(rec) -> dict:
    s = rec.summary()
    out = {k: v for k, v in s.items() if k not in TIMING | {"run_id", "status"}}
    out["metrics"] = {k: v for k, v in s["metrics"].items() if k not in TIMING}
    return out


def config(strategy: str, **over):
    sets = ["train.epochs=3", "train.batch_size=64", *(f"{k}={v}" for k, v in over.items())]
    small = {"replay": ["strategy.buffer_size=64"]}
    for part in strategy.split("+"):
        sets += [s.replace("strategy.", f"strategy.{part}.") if "+" in strategy else s for s in small.get(part, [])]
    model = "icl" if strategy == "in-context" else None  # the in-context strategy needs its transformer
    if model:
        sets += ["model.context=8", "model.d_model=16"]
    return build_config(benchmark="split-digits", strategy=strategy, overrides=sets, checkpoint_every=7, model=model)


def run_with_kills(store: RunStore, cfg, run_id: str, kills: list[int]) -> object:
    """Run, killing at each step in ``kills`` (increasing), resuming after every kill."""
    todo = list(kills)
    try:
        return api.run(cfg, store=store, run_id=run_id, callbacks=[KillAt(todo.pop(0) if todo else None)])
    except Killed:
        pass
    while True:
        try:
            return api.resume(store, run_id, callbacks=[KillAt(todo.pop(0) if todo else None)])
        except Killed:
            continue


STRATS = [*STRATEGIES.names(), "replay+ewc+lwf"]


@pytest.mark.parametrize("strategy", STRATS)
def test_killed_twice_at_random_points_resumes_bit_identical(tmp_path, strategy):
    store = RunStore(tmp_path)
    cfg = config(strategy)
    ref = api.run(cfg, store=store, run_id="ref")
    total = ref.metrics["steps"]
    rng = random.Random(zlib.crc32(strategy.encode()))  # the same kill points in every test session
    kills = sorted(rng.sample(range(1, total), 2))
    got = run_with_kills(store, cfg, "victim", kills)
    assert got.status == "finished"
    assert results(got) == results(ref), f"kills at {kills} changed the results"
    assert not store.checkpoints("victim").list(), "checkpoints of a finished run are removed by default"


def test_timescales_resume_bit_identical(tmp_path):
    """EMA teachers (strategy state) and per-group learning-rate multipliers (optimizer
    groups) come back exactly from a checkpoint."""
    store = RunStore(tmp_path)
    cfg = config(
        "replay",
        **{
            "timescales.teachers": '{"stable": 0.9, "plastic": 0.5}',
            "timescales.predict_with": "stable",
            "timescales.backbone_lr": 0.5,
            "eval.every": 4,
        },
    )
    ref = api.run(cfg, store=store, run_id="ref")
    plain = api.run(config("replay"), store=store, run_id="plain")
    assert results(ref)["accuracy_matrix"] != results(plain)["accuracy_matrix"]  # the timescales took effect
    got = run_with_kills(store, cfg, "victim", [5, 23])
    assert results(got) == results(ref)
    assert store.model_log("victim") == store.model_log("ref") and len(store.model_log("ref")) > 0


def test_kill_right_after_an_experience_boundary_and_before_any_checkpoint(tmp_path):
    store = RunStore(tmp_path)
    cfg = config("replay")
    ref = api.run(cfg, store=store, run_id="ref")
    # step 1: before the first periodic checkpoint (7) -> restart from scratch
    # step 16: the first step after experience 0 ended (5 steps/epoch x 3 epochs = 15)
    got = run_with_kills(store, cfg, "victim", [1, 16, 17])
    assert results(got) == results(ref)


def test_keeps_only_the_last_k_checkpoints_and_writes_atomically(tmp_path):
    store = RunStore(tmp_path)
    cfg = config("naive", **{"checkpoint.keep": 2, "checkpoint.keep_after_finish": "true"})
    api.run(cfg, store=store, run_id="r")
    ck = store.checkpoints("r")
    files = sorted(p.name for p in ck.root.iterdir())
    assert len(ck.list()) == 2
    assert all(n.endswith((".pt", ".sha256")) for n in files), files  # no temporary files left behind


def _killed_run(tmp_path, strategy="replay") -> tuple[RunStore, object, CheckpointDir]:
    store = RunStore(tmp_path)
    cfg = config(strategy, **{"checkpoint.keep": 5})
    with pytest.raises(Killed):
        api.run(cfg, store=store, run_id="victim", callbacks=[KillAt(50)])
    return store, cfg, store.checkpoints("victim")


def test_corrupted_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    store, cfg, ck = _killed_run(tmp_path)
    ref = api.run(cfg, store=store, run_id="ref")
    newest = ck.list()[-1].path
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    got = api.resume(store, "victim", callbacks=[KillAt(None)])
    assert any("checksum mismatch" in n and "falling back" in n for n in got.notes), got.notes
    assert results(got) == results(ref)


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    store, _, ck = _killed_run(tmp_path)
    for c in ck.list():
        c.path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no valid checkpoint left"):
        api.resume(store, "victim", callbacks=[KillAt(None)])
    for c in ck.list():
        c.path.with_name(c.path.name + ".sha256").unlink()
    with pytest.raises(CheckpointError, match="checksum file is missing"):
        api.resume(store, "victim", callbacks=[KillAt(None)])


def test_checkpoint_from_another_run_or_config_is_refused(tmp_path):
    store, cfg, ck = _killed_run(tmp_path)
    # another run's checkpoint placed in this run's directory
    with pytest.raises(Killed):
        api.run(config("replay", seed=1), store=store, run_id="other", callbacks=[KillAt(30)])
    other = store.checkpoints("other").list()[-1].path
    for c in ck.list():
        CheckpointDir._remove(c.path)
    ck.save(CheckpointDir.read(other), 999)
    with pytest.raises(CheckpointError, match="belongs to run 'other'"):
        api.resume(store, "victim", callbacks=[KillAt(None)])
    # same run id, different config (the stored config was changed)
    payload = CheckpointDir.read(ck.list()[-1].path)
    payload["meta"] = {**payload["meta"], "run_id": "victim", "config": "0" * 64}
    ck.save(payload, 1000)
    with pytest.raises(CheckpointError, match="different configuration"):
        api.resume(store, "victim", callbacks=[KillAt(None)])
    payload["meta"] = {**payload["meta"], "config": cfg.fingerprint(), "perennial": "9.9.0"}
    ck.save(payload, 1001)
    with pytest.raises(CheckpointError, match=r"perennial 9\.9\.0"):
        api.resume(store, "victim", callbacks=[KillAt(None)])


def test_checkpoints_hold_no_code(tmp_path):
    """A pickle that would run code on load is rejected by the weights-only loader."""
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "ckpt-000000001-0000.pt"
    data = pickle.dumps({"x": Evil()})
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(data).hexdigest())
    with pytest.raises(CheckpointError, match="weights-only"):
        CheckpointDir.read(path)
    assert not (tmp_path / "pwned").exists()


def test_finished_run_cannot_be_resumed(tmp_path):
    store = RunStore(tmp_path)
    api.run(config("naive"), store=store, run_id="done")
    with pytest.raises(CheckpointError, match="already finished"):
        api.resume(store, "done")


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "perennial", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


RUN = ["run", "-b", "split-digits", "-s", "replay+ewc", "--set", "train.epochs=6", "--checkpoint-every", "5", "-q"]


def _wait_for_checkpoint(store: Path, run_id: str, min_step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 180
    d = store / "checkpoints" / run_id
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name[5:14]) for p in d.glob("ckpt-*.pt")] if d.is_dir() else []
        if steps and max(steps) >= min_step:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_cli_sigkill_then_resume_matches_uninterrupted(tmp_path):
    ref_json, got_json = tmp_path / "ref.json", tmp_path / "got.json"
    p = _cli(*RUN, "--store", str(tmp_path / "a"), "--run-id", "X", "--json", str(ref_json))
    assert p.wait(300) == 0, p.stderr.read()
    store = tmp_path / "b"
    for min_step in (12, 70):  # killed twice, at different points
        p = (
            _cli(*RUN, "--store", str(store), "--run-id", "X")
            if min_step == 12
            else _cli("resume", "X", "--store", str(store), "-q")
        )
        _wait_for_checkpoint(store, "X", min_step, p)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        assert p.returncode == -signal.SIGKILL
    p = _cli("resume", "X", "--store", str(store), "-q", "--json", str(got_json))
    assert p.wait(300) == 0, p.stderr.read()
    ref, got = json.loads(ref_json.read_text()), json.loads(got_json.read_text())
    for d in (ref, got):
        for k in TIMING:  # wall-clock measurements, at the top and in the metrics
            d.pop(k, None)
            d["metrics"].pop(k, None)
    assert got == ref


@pytest.mark.slow
def test_cli_sigterm_checkpoints_and_exits_130(tmp_path):
    p = _cli(*RUN, "--store", str(tmp_path), "--run-id", "T")
    _wait_for_checkpoint(tmp_path, "T", 10, p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 130
    err = p.stderr.read()
    assert "interrupted" in err and "perennial resume T" in err and "Traceback" not in err
    rec = RunStore(tmp_path).get("T")
    assert rec.status == "interrupted"
    p = _cli("resume", "T", "--store", str(tmp_path), "-q")
    assert p.wait(300) == 0
    assert RunStore(tmp_path).get("T").status == "finished"


def test_resume_with_continual_evaluation_keeps_the_log_exact(tmp_path):
    """The per-step eval log of a killed-and-resumed run equals the uninterrupted one."""
    store = RunStore(tmp_path)
    cfg = config("replay", **{"eval.every": 4, "eval.budget": 50})
    ref = api.run(cfg, store=store, run_id="ref")
    got = run_with_kills(store, cfg, "victim", [9, 41])
    assert results(got) == results(ref)
    assert got.metrics["min_acc"] == ref.metrics["min_acc"]
    strip = lambda log: [(r.step, r.exp_trained, r.exp_eval, r.acc, r.loss) for r in log]  # noqa: E731
    assert strip(store.eval_log("victim")) == strip(store.eval_log("ref"))
