"""Language-model training throughput: tokens/second through ``fit`` vs a bare PyTorch loop.

Same work on both sides, in one process, interleaved: the ``tiny-gpt`` preset (2 layers x 128,
byte vocabulary, context 64) on the Python-source domain of ``text-domains``, AdamW (lr 3e-3,
weight decay 0.1), gradient clipping at 1.0, warmup + cosine schedule set every step, batch
32, the same initial weights and the same seeded data order. The bare loop slices the same
tensors and does nothing else; ``fit`` runs its full machinery (hooks, schedule, divergence
check, progress, checkpoint-free). Evaluation is excluded on both sides: ``fit``'s time is
its ``train_seconds`` (total minus evaluation, so its setup counts against it).

    python bench/lm_throughput.py --json bench/results/lm_throughput.json [--repeats 5] [--steps 60]

Reports the median tokens/second of each side and ``ratio = fit / bare`` (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from perennial.models import build_model
from perennial.seeding import derive_seed
from perennial.strategies import Naive
from perennial.streams.text import text_domains
from perennial.train import TrainSettings, fit

BATCH, LR, WARMUP = 32, 3e-3, 10


def settings(steps: int, device: str) -> TrainSettings:
    return TrainSettings(
        steps=steps,
        batch_size=BATCH,
        lr=LR,
        optimizer="adamw",
        weight_decay=0.1,
        grad_clip=1.0,
        schedule="cosine",
        warmup_steps=WARMUP,
        min_lr_ratio=0.1,
        device=device,
    )


def bare_run(stream, steps: int, seed: int, device: torch.device) -> float:
    """Tokens/second of a plain loop over the same tensors (no evaluation)."""
    torch.manual_seed(seed)
    model = build_model("tiny-gpt", stream.input_shape, stream.n_classes).to(device)
    x, y = stream[0].train.x.to(device), stream[0].train.y.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    order = torch.Generator().manual_seed(derive_seed(seed, "order", 0))
    per_epoch = math.ceil(len(x) / BATCH)
    perm = torch.empty(0, dtype=torch.long)
    for k in range(steps):
        if k % per_epoch == 0:
            perm = torch.randperm(len(x), generator=order).to(device)
        idx = perm[(k % per_epoch) * BATCH : (k % per_epoch + 1) * BATCH]
        if k < WARMUP:
            mult = (k + 1) / WARMUP
        else:
            mult = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (k - WARMUP) / (steps - WARMUP)))
        for g in opt.param_groups:
            g["lr"] = LR * mult
        logits = model(x[idx])  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    float(loss.detach())  # wait for the last step
    return steps * BATCH * x.shape[1] / (time.perf_counter() - t0)


def fit_run(stream, steps: int, seed: int, device: torch.device) -> float:
    torch.manual_seed(seed)
    model = build_model("tiny-gpt", stream.input_shape, stream.n_classes)
    r = fit(model, stream, Naive(), settings(steps, str(device)), seed=seed)
    return steps * BATCH * stream.input_shape[0] / r.train_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    # a small validation split keeps fit's two evaluations (excluded from its time) short
    stream = text_domains(["python"], context=64, val_bytes=2048)
    fit_run(stream, 5, 0, device)  # warm-up of both code paths
    bare_run(stream, 5, 0, device)
    fits, bares = [], []
    for i in range(a.repeats):
        pair = [("fit", fit_run), ("bare", bare_run)]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:  # alternate the order
            v = fn(stream, a.steps, 0, device)
            (fits if name == "fit" else bares).append(v)
            print(f"repeat {i} {name}: {v:,.0f} tokens/s", flush=True)
    f, b = statistics.median(fits), statistics.median(bares)
    out = {
        "fit_tokens_per_s": f,
        "bare_tokens_per_s": b,
        "ratio": f / b,
        "fit_all": fits,
        "bare_all": bares,
        "steps": a.steps,
        "batch": BATCH,
        "context": stream.input_shape[0],
        "threads": a.threads,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"median: fit {f:,.0f} tokens/s, bare {b:,.0f} tokens/s, ratio fit/bare {f / b:.3f} (target >= 0.95)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
