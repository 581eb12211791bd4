"""Wall-time overhead of continual evaluation (``--eval-every``), measured side by side.

The same run twice, in one process, interleaved: split-mnist class-incremental, MLP 784-400-400,
Adam lr 1e-3, batch 128, 20 epochs per experience (the benchmark's defaults), through
``api.run`` with a run store (so the per-step log is really written to SQLite), once without
continual evaluation and once with ``eval.every = 10`` and the default budget (300 test samples
per experience, here every test sample: split-mnist has 200 per experience), lca_beta 10.

    python bench/continual_eval_overhead.py --json bench/results/continual_eval_overhead.json [--repeats 3]

Reports the median wall time of each side and ``ratio = with / without`` (target < 1.30), the
same for process CPU time (``cpu_ratio``: steadier than wall time on a shared, busy machine,
and close to it with ``--threads 1``), and checks that both sides reach exactly the same
accuracy matrix (evaluation does not disturb training).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch

from perennial import api
from perennial.config import build_config
from perennial.store import RunStore


def one_run(store: RunStore, strategy: str, seed: int, every: int | None, epochs: int) -> tuple[float, float, dict]:
    cfg = build_config(
        benchmark="split-mnist",
        strategy=strategy,
        seed=seed,
        overrides=[f"train.epochs={epochs}", "train.device=cpu"],
        eval_every=every,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    rec = api.run(cfg, store=store)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, {"R": rec.accuracy_matrix, "metrics": rec.metrics, "points": len(rec.eval_log)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--strategies", default="naive,replay")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for name in args.strategies.split(","):
            one_run(store, name, 0, args.every, 1)  # warm-up both paths
            one_run(store, name, 0, None, 1)
            off_t, on_t, off_c, on_c, eval_t, same = [], [], [], [], [], []
            info: dict = {}
            for rep in range(args.repeats):
                order = [None, args.every] if rep % 2 == 0 else [args.every, None]  # alternate who goes first
                out = {}
                for every in order:
                    sec, cpu, out[every] = one_run(store, name, rep, every, args.epochs)
                    (off_t if every is None else on_t).append(sec)
                    (off_c if every is None else on_c).append(cpu)
                eval_t.append(out[args.every]["metrics"]["continual_eval_seconds"])
                same.append(out[None]["R"] == out[args.every]["R"])
                info = out[args.every]
            off, on = statistics.median(off_t), statistics.median(on_t)
            cpu_ratio = statistics.median(on_c) / statistics.median(off_c)
            m = info["metrics"]
            results[name] = {
                "without_seconds": off,
                "with_seconds": on,
                "ratio": on / off,
                "without_times": off_t,
                "with_times": on_t,
                "cpu_ratio": cpu_ratio,
                "without_cpu": off_c,
                "with_cpu": on_c,
                "continual_eval_seconds": eval_t,
                "eval_points": info["points"],
                "same_accuracy_matrix": all(same),
                "acc": m["acc"],
                "min_acc": m["min_acc"],
                "stability_gap": m["stability_gap"],
            }
            print(
                f"{name:7s} without {off:6.2f}s  with --eval-every {args.every} {on:6.2f}s  ratio {on / off:.3f}  "
                f"cpu ratio {cpu_ratio:.3f}  "
                f"(evaluation itself {statistics.median(eval_t):.2f}s, {info['points']} log rows; "
                f"same accuracy matrix: {all(same)})"
            )
    out = {
        "ratio": max(r["ratio"] for r in results.values()),
        "cpu_ratio": max(r["cpu_ratio"] for r in results.values()),
        "results": results,
        "protocol": {
            "benchmark": "split-mnist",
            "scenario": "class",
            "model": "mlp 784-400-400",
            "optimizer": "adam",
            "batch_size": 128,
            "epochs": args.epochs,
            "eval_every": args.every,
            "eval_budget": 300,
            "repeats": args.repeats,
            "store": "sqlite (WAL), every evaluation written as it is measured",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
