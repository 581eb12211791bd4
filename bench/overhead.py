"""Overhead of perennial's loop against a bare, hand-written PyTorch loop.

Same protocol on both sides, in one process, interleaved: split-mnist class-incremental,
MLP 784-400-400, Adam lr 1e-3, batch 128, the same epochs, the same data order (the same
seeded permutation per experience), evaluation on every experience's test set after each
experience. ``naive`` fine-tunes; ``replay`` appends 128 samples from a 500-sample
reservoir buffer to every batch (the bare loop has its own vectorised reservoir).

    python bench/overhead.py --json bench/results/overhead.json [--repeats 3] [--epochs 20]

Reports the median wall time of each side and ``ratio = perennial / bare`` (target <= 1.10).
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
from perennial.strategies import Naive, Replay
from perennial.streams import build_benchmark
from perennial.train import TrainSettings, fit

BATCH, LR, BUFFER = 128, 1e-3, 500


def bare_run(stream, epochs: int, seed: int, replay: bool) -> tuple[float, float]:
    """A plain loop: index-sliced batches of in-memory tensors, Adam, CE, eval per experience."""
    torch.manual_seed(seed)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    t0 = time.perf_counter()
    buf_x = torch.zeros(BUFFER, *stream.input_shape)
    buf_y = torch.zeros(BUFFER, dtype=torch.long)
    filled, seen = 0, 0
    g = torch.Generator().manual_seed(seed)
    for i, exp in enumerate(stream):
        x, y = exp.train.x, exp.train.y
        order = torch.Generator().manual_seed(derive_seed(seed, "order", i))
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=order)
            for s in range(0, len(y), BATCH):
                idx = perm[s : s + BATCH]
                xb, yb = x[idx], y[idx]
                if replay and filled:
                    r = torch.randint(filled, (BATCH,), generator=g)
                    inp, tgt = torch.cat([xb, buf_x[r]]), torch.cat([yb, buf_y[r]])
                else:
                    inp, tgt = xb, yb
                loss = F.cross_entropy(model(inp), tgt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if replay:  # vectorised reservoir insertion
                    n = len(yb)
                    free = min(BUFFER - filled, n)
                    buf_x[filled : filled + free], buf_y[filled : filled + free] = xb[:free], yb[:free]
                    filled += free
                    if free < n:
                        pos = seen + torch.arange(free, n)
                        j = (torch.rand(n - free, generator=g) * (pos + 1)).long()
                        keep = j < BUFFER
                        buf_x[j[keep]], buf_y[j[keep]] = xb[free:][keep], yb[free:][keep]
                    seen += n
        model.eval()
        with torch.inference_mode():
            accs = [float((model(e.test.x).argmax(1) == e.test.y).float().mean()) for e in stream]
        model.train()
    return time.perf_counter() - t0, sum(accs) / len(accs)


def perennial_run(stream, epochs: int, seed: int, replay: bool) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])
    strategy = Replay(buffer_size=BUFFER, replay_batch_size=BATCH) if replay else Naive()
    t0 = time.perf_counter()
    r = fit(model, stream, strategy, TrainSettings(epochs=epochs, batch_size=BATCH, lr=LR, device="cpu"), seed=seed)
    seconds = time.perf_counter() - t0
    return seconds, sum(r.accuracy_matrix[-1]) / len(stream)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stream = build_benchmark("split-mnist")
    results = {}
    for name, replay in (("naive", False), ("replay", True)):
        perennial_run(stream, 1, 0, replay)  # warm-up both paths
        bare_run(stream, 1, 0, replay)
        p_times, b_times, p_acc, b_acc = [], [], [], []
        for rep in range(args.repeats):
            pairs = [("p", perennial_run), ("b", bare_run)]
            if rep % 2:
                pairs.reverse()  # alternate who goes first
            for tag, fn in pairs:
                sec, acc = fn(stream, args.epochs, rep, replay)
                (p_times if tag == "p" else b_times).append(sec)
                (p_acc if tag == "p" else b_acc).append(acc)
        p, b = statistics.median(p_times), statistics.median(b_times)
        results[name] = {
            "perennial_seconds": p,
            "bare_seconds": b,
            "ratio": p / b,
            "perennial_times": p_times,
            "bare_times": b_times,
            "perennial_final_acc": statistics.mean(p_acc),
            "bare_final_acc": statistics.mean(b_acc),
        }
        print(
            f"{name:7s} perennial {p:6.2f}s  bare {b:6.2f}s  ratio {p / b:.3f}  "
            f"acc {statistics.mean(p_acc):.3f} vs {statistics.mean(b_acc):.3f}"
        )
    out = {
        "ratio": max(r["ratio"] for r in results.values()),
        "results": results,
        "protocol": {
            "benchmark": "split-mnist",
            "scenario": "class",
            "model": "mlp 784-400-400",
            "optimizer": "adam",
            "lr": LR,
            "batch_size": BATCH,
            "epochs": args.epochs,
            "replay_buffer": BUFFER,
            "repeats": args.repeats,
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
