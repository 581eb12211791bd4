"""Start-up cost of the CLI: `perennial --help`, `perennial list` (cached and not) and the
refusal of an absurd model by `--dry-run`, measured as CPU seconds of real processes
(user + system time of the child, so a busy machine inflates it less than wall time).

Side by side in one run: `list` with the cache against `list` without it
(PERENNIAL_CACHE_DIR=off, the code path that imports torch); the ratio is the target
(cached / uncached <= 0.25).

    OMP_NUM_THREADS=1 python bench/startup.py --repeats 3 --json bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def cpu_seconds(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit code) of ``python -m perennial ARGS``."""
    before = os.times()
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "perennial", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return cpu, wall, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cached = dict(os.environ, PERENNIAL_CACHE_DIR=cache, OMP_NUM_THREADS="1")
        off = dict(os.environ, PERENNIAL_CACHE_DIR="off", OMP_NUM_THREADS="1")
        cpu_seconds(["list", "strategies"], cached)  # fill the cache
        cases = {
            "help": (["--help"], cached, 0),
            "list (cached)": (["list", "strategies"], cached, 0),
            "list (no cache)": (["list", "strategies"], off, 0),
            "dry-run absurd model": (
                ["run", "-b", "split-mnist", "--set", "model.hidden=[100000000,100000000]", "--dry-run"],
                cached,
                2,
            ),
        }
        out: dict[str, dict[str, float]] = {}
        for _ in range(a.repeats):
            for name, (args, env, rc) in cases.items():
                cpu, wall, got = cpu_seconds(args, env)
                assert got == rc, f"{name}: exit code {got}, expected {rc}"
                out.setdefault(name, {"cpu": [], "wall": []})  # type: ignore[arg-type]
                out[name]["cpu"].append(cpu)  # type: ignore[attr-defined]
                out[name]["wall"].append(wall)  # type: ignore[attr-defined]
    summary = {k: {m: round(statistics.median(v[m]), 3) for m in ("cpu", "wall")} for k, v in out.items()}
    for k, v in summary.items():
        print(f"{k:<22} cpu {v['cpu']:6.2f} s   wall {v['wall']:6.2f} s")
    ratio = summary["list (cached)"]["cpu"] / summary["list (no cache)"]["cpu"]
    print(f"list cached / uncached (CPU): {ratio:.2f} (target <= 0.25)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"median": summary, "list_ratio": round(ratio, 3), "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
