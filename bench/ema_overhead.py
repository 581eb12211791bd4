"""Cost of keeping slow EMA copies: fused ``_foreach_lerp_`` against a per-parameter loop,
and the whole training step with and without two copies.

Measured side by side in one process, interleaved, medians over repeats:

1. one update of two copies of the split-mnist MLP (784-400-400-10): ``EMA.update`` (one
   ``torch._foreach_lerp_`` per copy) against the usual loop ``for e, p in zip(...):
   e.mul_(a).add_(p, alpha=1 - a)``;
2. a training step of that MLP (Adam, batch 128) alone and followed by ``EMA.update``.

    python bench/ema_overhead.py --json bench/results/ema_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from perennial.models import build_model
from perennial.models.ema import EMA


def loop_update(copies: list[torch.nn.Module], model: torch.nn.Module, a: float) -> None:
    with torch.no_grad():
        for c in copies:
            for e, p in zip(c.parameters(), model.parameters(), strict=True):
                e.mul_(a).add_(p, alpha=1 - a)


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=200, help="calls per timing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10, hidden=[400, 400]).to(dev)
    ema = EMA(model, {"stable": 0.99, "plastic": 0.9})
    copies = [ema["stable"], ema["plastic"]]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(128, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (128,), device=dev)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_ema() -> None:
        step()
        ema.update(model)

    rows: dict[str, list[float]] = {"foreach": [], "loop": [], "step": [], "step+ema": []}
    for fn in (lambda: ema.update(model), lambda: loop_update(copies, model, 0.99), step, step_ema):
        timed(fn, 10)  # warm-up
    for _ in range(args.repeats):
        rows["foreach"].append(timed(lambda: ema.update(model), args.n))
        rows["loop"].append(timed(lambda: loop_update(copies, model, 0.99), args.n))
        rows["step"].append(timed(step, args.n))
        rows["step+ema"].append(timed(step_ema, args.n))
    med = {k: statistics.median(v) for k, v in rows.items()}
    out = {
        "device": str(dev),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "median_seconds": med,
        "update_ratio_foreach_over_loop": med["foreach"] / med["loop"],
        "step_overhead_of_two_copies": med["step+ema"] / med["step"] - 1.0,
    }
    print(
        f"EMA update of 2 copies: foreach {1e6 * med['foreach']:.0f} us, loop {1e6 * med['loop']:.0f} us "
        f"(ratio {out['update_ratio_foreach_over_loop']:.2f}); training step {1e3 * med['step']:.2f} ms, "
        f"+2 copies {1e3 * med['step+ema']:.2f} ms (+{100 * out['step_overhead_of_two_copies']:.0f}%)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
