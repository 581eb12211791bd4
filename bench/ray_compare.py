"""Ray vs one process for `perennial compare`: same numbers, and the wall-time ratio, side by side.

    python bench/ray_compare.py                       # the issue's grid: 5 strategies x 4 seeds, --workers 2
    python bench/ray_compare.py --seeds 2 --set train.epochs=1     # reduced

Runs the same `perennial compare` twice in fresh processes, first in one process, then with
``--workers N`` (a local Ray instance started by the command, so its start-up is included),
each with one torch thread per run, and checks that every aggregated number of the JSON
summaries is identical (to the last digit). Prints both wall times and their ratio, and the
load average of the machine before and after (a shared machine makes ratios noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-b", "--benchmark", default="split-mnist")
    p.add_argument("--strategies", default="naive,ewc,lwf,replay,joint")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    a = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "perennial", "compare", "-b", a.benchmark, "--strategies", a.strategies]
    cmd += ["--seeds", str(a.seeds), "-q", *[x for o in a.overrides for x in ("--set", o)]]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("sequential", []), (f"ray x{a.workers}", ["--workers", str(a.workers)])):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = subprocess.run(
                [*cmd, "--store", f"{tmp}/{len(out)}", "--json", f"{tmp}/{len(out)}.json", *extra],
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{name} failed:\n{r.stderr}")
            out[name] = wall
            print(f"{name:>12}: {wall:7.1f} s   (load average before: {load:.1f})", flush=True)
        rows = [json.loads(Path(f"{tmp}/{i}.json").read_text())["results"] for i in range(2)]
    strip = [[{k: v for k, v in r.items() if k not in ("run_ids", "seconds_mean")} for r in rs] for rs in rows]
    same = strip[0] == strip[1]
    seq, par = out.values()
    print(
        f"same numbers: {same}; wall ratio ray/sequential = {par / seq:.2f}; load average now {os.getloadavg()[0]:.1f}"
    )
    print("command:", " ".join(cmd[2:]), "[--workers N]")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
