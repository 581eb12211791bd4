"""Plastic vs stable: accuracy of the fast model and of its slow EMA copies over training steps.

Runs one strategy that keeps slow copies (default ``cls-er``: a plastic and a stable EMA model)
on split-mnist (class-incremental) and, every ``--every`` steps, evaluates the working model
and every copy in ``ctx.teachers`` on the test sets of the experiences seen so far. Writes
the curves as JSON and a three-panel PNG: mean accuracy on the earlier experiences
(stability: the fast model's accuracy on old classes dips right after each switch, the
stability gap, the slow copies' much less), on the current experience (plasticity: the slow
copies learn new classes later) and on all experiences seen so far.

    python bench/fast_slow_plot.py --png docs/img/fast_slow.png --json bench/results/fast_slow_curve.json
    python bench/fast_slow_plot.py --replot bench/results/fast_slow_curve.json --png docs/img/fast_slow.png

Any other run config works too (``--strategy replay+ema-teacher``, ``--set key=value``,
e.g. ``--set 'timescales.teachers={"slow": 0.99}'`` for copies kept next to plain replay).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from perennial import api
from perennial.config import build_config
from perennial.strategies import Batch, Context
from perennial.train import Callback


@torch.inference_mode()
def accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> float:
    was_training = module.training
    module.eval()
    try:
        return float((module(x, t).argmax(1) == y).float().mean())
    finally:
        module.train(was_training)


class Curves(Callback):
    """Every ``every`` steps (and at the end of each experience): accuracy of the model and of
    every registered slow copy, per seen experience. Observes only: no training state changes."""

    def __init__(self, every: int):
        self.every = every
        self.steps: list[int] = []
        self.acc: dict[str, list[list[float]]] = {}  # name -> per evaluation, accuracy per seen experience
        self.boundaries: list[int] = []

    def _measure(self, ctx: Context) -> None:
        models = {"model (fast)": ctx.model, **ctx.teachers}
        self.steps.append(ctx.step)
        for name, m in models.items():
            row = [accuracy(m, e.test.x, e.test.y, e.test.t) for e in ctx.seen_experiences()]
            self.acc.setdefault(name, []).append(row)

    def on_experience_start(self, ctx: Context) -> None:
        self.boundaries.append(ctx.step)

    def on_step_end(self, ctx: Context, batch: Batch, loss: torch.Tensor) -> None:
        if ctx.step % self.every == 0:
            self._measure(ctx)

    def on_experience_end(self, ctx: Context, acc: list[float], loss: list[float]) -> None:
        if not self.steps or self.steps[-1] != ctx.step:
            self._measure(ctx)


def plot(data: dict, path: Path) -> None:
    """Three panels from the curves in ``data`` (the JSON this script writes)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import math

    import matplotlib.pyplot as plt

    steps, starts = data["steps"], data["experience_starts"]
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    panels = [
        ("earlier experiences (stability)", lambda r: sum(r[:-1]) / len(r[:-1]) if len(r) > 1 else math.nan),
        ("the current experience (plasticity)", lambda r: r[-1]),
        ("all experiences seen so far", lambda r: sum(r) / len(r)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), sharex=True, sharey=True)
    for i, (name, rows) in enumerate(data["accuracy"].items()):
        if name == "model (fast)":
            style = {"color": "#d62728", "lw": 1.2, "alpha": 0.9}
        else:
            style = {"color": palette[(i - 1) % len(palette)], "lw": 2.2}
        for ax, (_, f) in zip(axes, panels, strict=True):
            ax.plot(steps, [100 * f(r) for r in rows], label=name, **style)
    for ax, (title, _) in zip(axes, panels, strict=True):
        for b in starts[1:]:
            ax.axvline(b, color="0.6", lw=0.8, ls="--")
        ax.set_title(f"mean accuracy on {title}", fontsize=10.5)
        ax.set_xlabel("training step (dashed: a new experience starts)")
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(loc="lower left", fontsize=9)
    fig.suptitle(data["title"], fontsize=11.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="cls-er")
    ap.add_argument("--benchmark", default="split-mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=10, help="evaluate every N training steps")
    ap.add_argument("--set", action="append", default=[], help="config override, as for perennial run")
    ap.add_argument("--png", type=Path, default=Path("docs/img/fast_slow.png"))
    ap.add_argument("--json", type=Path, default=None, help="write the curves here")
    ap.add_argument("--replot", type=Path, default=None, help="only redraw the PNG from curves written by --json")
    args = ap.parse_args()

    if args.replot:
        plot(json.loads(args.replot.read_text()), args.png)
        print(f"wrote {args.png}")
        return
    cfg = build_config(benchmark=args.benchmark, strategy=args.strategy, seed=args.seed, overrides=args.set)
    curves = Curves(args.every)
    t0 = time.perf_counter()
    rec = api.run(cfg, callbacks=[curves])
    seconds = time.perf_counter() - t0
    final = {name: 100 * sum(rows[-1]) / len(rows[-1]) for name, rows in curves.acc.items()}
    print(f"{cfg.strategy.name} on {cfg.benchmark.name}, seed {cfg.seed}: final acc {100 * rec.metrics['acc']:.1f}%")
    for name, a in final.items():
        print(f"  {name:<16} final mean accuracy {a:.1f}%")
    data = {
        "title": f"{cfg.strategy.name} on {cfg.benchmark.name} ({rec.scenario}-incremental, seed {cfg.seed}): "
        "the fast model and its slow EMA copies",
        "config": cfg.to_dict(),
        "every": args.every,
        "steps": curves.steps,
        "experience_starts": curves.boundaries,
        "accuracy": curves.acc,
        "final_mean_accuracy": final,
        "metrics": rec.metrics,
        "seconds": seconds,
    }
    plot(data, args.png)
    print(f"wrote {args.png} ({seconds:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
