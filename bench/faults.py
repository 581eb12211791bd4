"""Fault injection: SIGKILL real `perennial` processes at random moments, resume, compare.

For each strategy: one uninterrupted reference run; then victim runs with the same config,
each killed with SIGKILL at a random moment during training, resumed with `perennial
resume`, killed again, then resumed to the end. Every victim's stored summary must equal the
reference's (timing fields and the run id aside). Victims are added until `--kills` kills
per strategy actually happened (a process that finishes before its kill time is not counted).

    python bench/faults.py --kills 4 --strategies naive,replay,ewc,lwf,replay+ewc+lwf --json bench/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perennial.store import RunStore

TIMING = ("seconds", "run_id", "status")
METRIC_TIMING = ("train_seconds", "eval_seconds")


def cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "perennial", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def comparable(summary: dict) -> dict:
    d = {k: v for k, v in summary.items() if k not in TIMING}
    d["metrics"] = {k: v for k, v in summary["metrics"].items() if k not in METRIC_TIMING}
    return d


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = cli(args)
    if p.wait() != 0:
        raise SystemExit(f"perennial {' '.join(args)} failed: {p.stderr.read()}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default="naive,replay,ewc,lwf,replay+ewc+lwf")
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--kills", type=int, default=4, help="kills per strategy")
    ap.add_argument("--kills-per-victim", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="perennial-faults-"))
    rows = []
    for strategy in args.strategies.split(","):
        base = [
            "-b",
            args.benchmark,
            "-s",
            strategy,
            "--set",
            f"train.epochs={args.epochs}",
            "--checkpoint-every",
            str(args.checkpoint_every),
            "-q",
        ]
        startup = timed(["run", *base, "--dry-run", "--store", str(work / "dry")])
        duration = timed(["run", *base, "--store", str(work / "ref"), "--run-id", strategy])
        ref = comparable(RunStore(work / "ref").get(strategy).summary())
        store = RunStore(work / f"victims-{strategy}")
        kills: list[float] = []
        victims = same = 0
        while len(kills) < args.kills:
            run_id = f"v{victims}"
            cmd = ["run", *base, "--store", str(store.root), "--run-id", run_id]
            killed_here = 0
            for _ in range(args.kills_per_victim):
                p = cli(cmd)
                delay = rng.uniform(startup, duration)
                try:
                    p.wait(delay)
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    kills.append(round(delay, 2))
                    killed_here += 1
                cmd = ["resume", run_id, "--store", str(store.root), "-q"]
                if store.get(run_id).status == "finished":
                    break
            if store.get(run_id).status != "finished" and cli(cmd).wait() != 0:
                raise SystemExit(f"final resume of {strategy}/{run_id} failed")
            if killed_here:  # victims that finished before their kill time prove nothing
                victims += 1
                same += comparable(store.get(run_id).summary()) == ref
            store.delete(run_id)
        rows.append(
            {
                "strategy": strategy,
                "kills": len(kills),
                "kill_times_s": kills,
                "killed_runs": victims,
                "identical": same,
                "run_seconds": round(duration, 1),
                "startup_seconds": round(startup, 1),
            }
        )
        print(
            f"{strategy:16s} {len(kills)} kills at {kills} s (startup {startup:.1f} s, run {duration:.1f} s): "
            f"{same}/{victims} killed runs bit-identical",
            flush=True,
        )
    total = sum(r["kills"] for r in rows)
    ok, n = sum(r["identical"] for r in rows), sum(r["killed_runs"] for r in rows)
    summary = (
        f"killed {total} times with SIGKILL at random moments across {len(rows)} strategies: "
        f"{ok}/{n} killed runs resumed bit-identical"
    )
    print(summary)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows, "args": vars(args)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
