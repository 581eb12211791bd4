"""Plastic vs stable: accuracy of the fast model and of its slow EMA copies over training steps.

Runs one strategy that keeps slow copies (default ``cls-er``: a plastic and a stable EMA model)
on split-mnist (class-incremental) with continual evaluation every ``--every`` steps, which
also measures the working model and every copy in ``ctx.teachers`` (``eval.timescales``), and
draws the report's timescales plot (:func:`perennial.report.plots.timescales_plot`): mean
accuracy on the earlier experiences (stability), on the current one (plasticity) and on all
seen so far. The same plot is in ``perennial report`` for any run with ``--eval-every`` and
slow copies. Prints the numbers quoted in docs/fast-and-slow.md.

    python bench/fast_slow_plot.py --png docs/img/fast_slow.png --json bench/results/fast_slow_curve.json

Any other run config works too (``--strategy replay+ema-teacher``, ``--set key=value``,
e.g. ``--set 'timescales.teachers={"slow": 0.99}'`` for copies kept next to plain replay).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from perennial import api
from perennial.config import build_config
from perennial.report.data import group_runs
from perennial.report.plots import timescales_plot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="cls-er")
    ap.add_argument("--benchmark", default="split-mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=10, help="evaluate every N training steps")
    ap.add_argument("--set", action="append", default=[], help="config override, as for perennial run")
    ap.add_argument("--png", type=Path, default=Path("docs/img/fast_slow.png"))
    ap.add_argument("--json", type=Path, default=None, help="write the per-step log of every network here")
    args = ap.parse_args()

    sets = [*args.set, f"eval.every={args.every}", "eval.lca_beta=0"]
    cfg = build_config(benchmark=args.benchmark, strategy=args.strategy, seed=args.seed, overrides=sets)
    t0 = time.perf_counter()
    rec = api.run(cfg)
    seconds = time.perf_counter() - t0
    if not rec.model_log:
        raise SystemExit(
            f"{cfg.strategy.name} keeps no slow copies; add --set 'timescales.teachers={{\"slow\": 0.98}}'"
        )
    (group,) = group_runs([rec])
    curves = group.model_curves()
    starts = group.boundaries()
    summary: dict[str, dict[str, object]] = {}
    for net, panels in curves.items():
        steps, old = panels["earlier"]
        lows = []  # lowest accuracy on the earlier experiences while each later experience is trained
        for k, s in enumerate(starts[1:], 1):
            stop = starts[k + 1] if k + 1 < len(starts) else np.inf
            inside = (steps >= s) & (steps <= stop)
            lows.append(round(100 * float(old[inside].min()), 1))
        summary[net] = {
            "final_earlier": round(100 * float(old[-1]), 1),
            "final_seen": round(100 * float(panels["seen"][1][-1]), 1),
            "lowest_earlier_per_experience": lows,
        }
    print(f"{cfg.strategy.name} on {cfg.benchmark.name}, seed {cfg.seed}: final acc {100 * rec.metrics['acc']:.1f}%")
    for net, d in summary.items():
        print(f"  {net:<16} {d}")
    title = (
        f"{cfg.strategy.name} on {cfg.benchmark.name} ({rec.scenario}-incremental, seed {cfg.seed}): "
        "the fast model and its slow copies"
    )
    fig = timescales_plot(group, title)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png} ({seconds:.0f} s)")
    if args.json:
        data = {
            "config": cfg.to_dict(),
            "every": args.every,
            "experience_starts": starts,
            "summary": summary,
            "metrics": rec.metrics,
            "seconds": seconds,
            "model_log": [asdict(r) for r in rec.model_log],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
