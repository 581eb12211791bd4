"""Throughput of the online loop (``fit`` with ``train.mode=online``) against a bare PyTorch loop.

Both sides run the same online protocol on split-mnist (class-incremental, 5 experiences,
4,000 training images, MLP 784-400-400, Adam lr 1e-3), one pass in incoming batches of 10:
predict the batch (eval mode, ``torch.inference_mode``), count the correct predictions, then one
SGD step on it. The bare loop is written out by hand with the same model initialisation and the
same data order, so both must produce exactly the same per-batch predictions (checked). ``fit``
is timed by its own ``train_seconds`` (its evaluation after each experience excluded); the bare
loop by wall time around its loop. One untimed warm-up of each, then interleaved repeats (the
order alternating); ``ratio`` is the ratio of the medians, ``paired_ratio`` the median of the
per-repetition ratios; one thread.

    python bench/online_overhead.py --json bench/results/online_overhead.json [--repeats 11]

Target: ``ratio = fit / bare <= 1.10``.
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
from perennial.seeding import derive_seed
from perennial.strategies import Naive
from perennial.streams import build_benchmark
from perennial.train import TrainSettings, fit

BATCH = 10


def model(stream, seed: int):
    torch.manual_seed(seed)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])


def run_fit(stream, seed: int) -> tuple[float, list[float]]:
    s = TrainSettings(mode="online", batch_size=BATCH, lr=1e-3, device="cpu")
    r = fit(model(stream, seed), stream, Naive(), s, seed=seed)
    return r.train_seconds, [row[1] for row in r.online_log]


def run_bare(stream, seed: int) -> tuple[float, list[float]]:
    m = model(stream, seed)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    correct = []
    t0 = time.perf_counter()
    for exp in stream:
        x_all, y_all = exp.train.x, exp.train.y
        g = torch.Generator().manual_seed(derive_seed(seed, "order", exp.index))
        perm = torch.randperm(len(y_all), generator=g)
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            x, y = x_all[idx], y_all[idx]
            m.eval()
            with torch.inference_mode():
                correct.append((m(x).argmax(1) == y).sum())
            m.train()
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    return seconds, [float(c) for c in correct]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stream = build_benchmark("split-mnist")
    fit_s, bare_s = [], []
    run_fit(stream, 0), run_bare(stream, 0)  # warm-up (allocator, lazy imports), not timed
    same = True
    for rep in range(args.repeats):  # interleaved, the order alternating between repetitions
        if rep % 2:
            b, cb = run_bare(stream, 0)
            a, ca = run_fit(stream, 0)
        else:
            a, ca = run_fit(stream, 0)
            b, cb = run_bare(stream, 0)
        same &= ca == cb
        fit_s.append(a)
        bare_s.append(b)
        print(f"repeat {rep}: fit {a:.2f} s, bare {b:.2f} s, ratio {a / b:.3f}", flush=True)
    out = {
        "fit_seconds_median": statistics.median(fit_s),
        "bare_seconds_median": statistics.median(bare_s),
        "ratio": statistics.median(fit_s) / statistics.median(bare_s),
        "paired_ratio": statistics.median(a / b for a, b in zip(fit_s, bare_s, strict=True)),
        "fit_seconds": fit_s,
        "bare_seconds": bare_s,
        "identical_predictions": same,
        "batches": len(ca),
        "batch_size": BATCH,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, list)}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
