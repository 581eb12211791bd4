"""Data-parallel runs (torchrun, gloo on the CPU): sharding, world-size checks, accuracy, kill and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from perennial.errors import CheckpointError
from perennial.store import RunStore
from perennial.train.distributed import Distributed, check_world, data_parallel


def test_shards_partition_every_batch_and_no_rank_is_left_empty():
    idx = torch.randperm(10)
    shards = [Distributed(r, 3).shard(idx) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == sorted(idx.tolist())
    assert [len(s) for s in shards] == [4, 3, 3]
    one = torch.tensor([7])
    assert [Distributed(r, 2).shard(one).tolist() for r in range(2)] == [[7], [7]]


def test_world_size_mismatch_names_both_sizes_and_the_fix():
    with pytest.raises(CheckpointError, match=r"2 process\(es\), this resume has 1.*--nproc 2"):
        check_world({"world_size": 2}, None)
    with pytest.raises(CheckpointError, match="without --nproc"):
        check_world({"world_size": 1}, Distributed(0, 2))
    check_world({}, None)  # checkpoints from before data-parallel training: one process


def test_one_process_is_left_alone():
    from perennial.strategies import make_strategy

    s = make_strategy("replay", {})
    assert data_parallel(s, None) is s and data_parallel(s, Distributed(0, 1)) is s
    assert data_parallel(s, Distributed(0, 2)).display_name == "data-parallel+replay"  # type: ignore[attr-defined]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "perennial", *args], env=env, capture_output=True, text=True, **kw)


def _rank_pid(run_id: str, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if run_id.encode() in cmd and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    common = ["run", "-b", "split-mnist", "-s", "replay", "--set", "train.epochs=1", "-q", "--store", str(tmp_path)]
    one = _cli(*common, "--run-id", "one", timeout=600)
    assert one.returncode == 0, one.stderr
    two = _cli(*common, "--run-id", "two", "--nproc", "2", timeout=600)
    assert two.returncode == 0, two.stderr
    store = RunStore(tmp_path)
    a, b = store.get("one"), store.get("two")
    assert b.status == "finished" and b.n_experiences == 5
    # same optimizer steps over the same global batches; float sums and sharded replay differ
    assert a.metrics["steps"] == b.metrics["steps"]
    assert abs(a.metrics["acc"] - b.metrics["acc"]) < 0.05, (a.metrics["acc"], b.metrics["acc"])
    # replay keeps some old classes: above the ~0.2 of a model that knows only the last experience
    assert b.metrics["acc"] > 0.25


@pytest.mark.slow
def test_sigkill_of_a_rank_then_resume_finishes_exactly(tmp_path):
    common = ["-b", "split-digits", "-s", "replay", "--set", "train.epochs=1", "--set", "checkpoint.every=2", "-q"]
    ref = _cli("run", *common, "--store", str(tmp_path / "ref"), "--run-id", "ddp-ref", "--nproc", "2", timeout=600)
    assert ref.returncode == 0, ref.stderr
    store = tmp_path / "kill"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perennial",
            "run",
            *common,
            "--store",
            str(store),
            "--run-id",
            "ddp-kill",
            "--nproc",
            "2",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rank1 = store / "checkpoints" / "ddp-kill" / "rank1"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if list(rank1.glob("*.sha256")):
            pid = _rank_pid("ddp-kill", 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert killed, err
    assert proc.returncode != 0
    assert RunStore(store).get("ddp-kill").status != "finished"
    # another world size is refused, naming the problem; nothing is marked finished
    wrong = _cli("resume", "ddp-kill", "--store", str(store), "-q", timeout=300)
    assert wrong.returncode == 2 and "--nproc 2" in wrong.stderr, wrong.stderr
    assert RunStore(store).get("ddp-kill").status != "finished"
    ok = _cli("resume", "ddp-kill", "--store", str(store), "-q", "--nproc", "2", timeout=600)
    assert ok.returncode == 0, ok.stderr
    a, b = RunStore(store).get("ddp-kill"), RunStore(tmp_path / "ref").get("ddp-ref")
    assert a.status == "finished"
    assert a.accuracy_matrix == b.accuracy_matrix
