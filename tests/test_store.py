from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest

from perennial import api
from perennial.config import build_config
from perennial.errors import StoreError
from perennial.store import RunStore


def writer(root: str, k: int, rows: int) -> None:
    st = RunStore(root)
    rid = f"w{k}"
    st.create_run(
        rid, benchmark="b", scenario="class", strategy="s", seed=k, n_experiences=rows, config={}, versions={}
    )
    for i in range(rows):
        st.record_row(rid, i, [0.1 * k + 0.001 * i] * rows)
    st.finish_run(rid, {"acc": 0.5}, 1.0)


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=writer, args=(str(tmp_path), k, 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = RunStore(tmp_path)
    runs = st.list()
    assert sorted(r.run_id for r in runs) == ["w0", "w1", "w2", "w3"]
    for k in range(4):
        rec = st.get(f"w{k}")
        assert rec.status == "finished" and len(rec.accuracy_matrix) == 25
        assert rec.accuracy_matrix[24][0] == pytest.approx(0.1 * k + 0.024)


def test_failed_run_keeps_measured_rows(tmp_path, monkeypatch):
    st = RunStore(tmp_path)
    cfg = build_config(benchmark="split-digits", overrides=["train.epochs=1"])
    calls = {"n": 0}
    from perennial.train import loop

    real = loop.evaluate_row

    def flaky(ctx, strategy, bs, policy, row):
        calls["n"] += 1
        if calls["n"] == 4:  # initial eval, exp0, exp1, then fail at exp2's evaluation
            raise RuntimeError("simulated crash")
        return real(ctx, strategy, bs, policy, row)

    monkeypatch.setattr(loop, "evaluate_row", flaky)
    with pytest.raises(RuntimeError):
        api.run(cfg, store=st, run_id="crashy")
    rec = st.get("crashy")
    assert rec.status == "failed" and "simulated crash" in rec.error
    assert len(rec.accuracy_matrix) == 2 and len(rec.random_init_acc) == 5
    # default policy (seen+next): exp0's row measured 0..1, exp1's 0..2; the rest read back as None
    assert [[v is not None for v in row] for row in rec.accuracy_matrix] == [
        [True, True, False, False, False],
        [True, True, True, False, False],
    ]


def test_sigkill_keeps_finished_measurements(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "perennial",
        "run",
        "-b",
        "split-mnist",
        "-s",
        "naive",
        "--store",
        str(tmp_path),
        "--run-id",
        "victim",
        "-q",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    st = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            if (tmp_path / "runs.sqlite").exists():
                st = st or RunStore(tmp_path)
                try:
                    if len(st.get("victim").accuracy_matrix) >= 2:
                        break
                except StoreError:
                    pass
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    rec = RunStore(tmp_path).get("victim")
    assert rec.status == "running"  # killed: never marked finished
    assert 2 <= len(rec.accuracy_matrix) < 5
    assert all(len(row) == 5 for row in rec.accuracy_matrix)


def test_unknown_run_and_duplicate_ids(tmp_path):
    st = RunStore(tmp_path)
    with pytest.raises(StoreError, match="no run"):
        st.get("nope")
    st.create_run("a", benchmark="b", scenario="class", strategy="s", seed=0, n_experiences=1, config={}, versions={})
    with pytest.raises(StoreError, match="already exists"):
        st.create_run(
            "a", benchmark="b", scenario="class", strategy="s", seed=0, n_experiences=1, config={}, versions={}
        )


def test_corrupted_store_is_a_clear_error(tmp_path):
    (tmp_path / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"unreadable|not a database"):
        RunStore(tmp_path).list()


def test_api_without_store_matches_stored_run(tmp_path):
    cfg = build_config(benchmark="split-digits", overrides=["train.epochs=1"])
    a = api.run(cfg)
    b = api.run(cfg, store=RunStore(tmp_path))
    assert a.accuracy_matrix == b.accuracy_matrix
