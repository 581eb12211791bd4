"""Cost of test-time adaptation, measured side by side in one process.

The same cnn-bn source model (trained here on the clean digits for one epoch: the cost does
not depend on its accuracy) and the same mnist-c continual stream (12 corruptions, severity 5,
batch 64) go through, interleaved, ``--repeats`` times each:

- plain inference: the source model in eval mode under ``torch.inference_mode`` (no adaptation);
- a bare PyTorch Tent loop: batch-statistics BN, Adam on the BN affine parameters, one
  forward + backward + step per batch, errors counted on the device;
- perennial's ``adapt`` with Tent (the source model not scored: ``score_source=False``);
- perennial's ``adapt`` with BN-adapt and CoTTA (32 augmentations when the source is unsure).

CoTTA is timed ``--cotta-repeats`` times (default once: it costs ~100 plain inferences).
Reports median wall and process-CPU times and the ratios ``tent / bare_tent`` (the loop's
overhead; target <= 1.3), ``tent / plain`` (what adapting costs over inference), ``cotta / plain``.
Both Tent variants must reach the same errors (same arithmetic).

    python bench/tta_overhead.py --json bench/results/tta_overhead.json [--samples 1000 --repeats 3]
    (committed numbers: --samples 100 --repeats 3, on a shared 2-core machine)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from perennial import api
from perennial.adaptation import make_adapter
from perennial.adaptation.base import entropy, norm_affine_params, use_batch_statistics
from perennial.config import build_config
from perennial.models import build_model
from perennial.store import RunStore
from perennial.streams.corruptions import TestStream, build_tta_stream
from perennial.train.adapt import adapt


def plain(model: torch.nn.Module, stream: TestStream, bs: int) -> float:
    model.eval()
    wrong = torch.zeros(())
    with torch.inference_mode():
        for d in stream.domains:
            for a in range(0, len(d), bs):
                wrong += (model(d.x[a : a + bs]).argmax(1) != d.y[a : a + bs]).sum()
    return float(wrong) / stream.n_samples


def bare_tent(model: torch.nn.Module, stream: TestStream, bs: int) -> float:
    use_batch_statistics(model)
    model.train()
    opt = torch.optim.Adam(norm_affine_params(model), lr=1e-3, betas=(0.9, 0.999))
    wrong = torch.zeros(())
    for d in stream.domains:
        for a in range(0, len(d), bs):
            logits = model(d.x[a : a + bs])
            wrong += (logits.detach().argmax(1) != d.y[a : a + bs]).sum()
            loss = entropy(logits).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return float(wrong) / stream.n_samples


def timed(fn: Callable[[], float]) -> tuple[float, float, float]:
    w, c = time.perf_counter(), time.process_time()
    e = fn()
    return time.perf_counter() - w, time.process_time() - c, e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1000, help="test samples per domain")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cotta-repeats", type=int, default=1, help="CoTTA is slow: time it this many times only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        st = RunStore(tmp)
        rec = api.run(build_config(benchmark="mnist-c", overrides=["train.epochs=1"]), store=st)
        payload = st.load_model(rec.run_id)
    stream = build_tta_stream("mnist-c", samples_per_domain=args.samples)

    def fresh() -> torch.nn.Module:
        m = build_model(payload["model_name"], payload["input_shape"], payload["n_classes"], **payload["model_params"])
        m.load_state_dict(payload["model"])
        return m

    bs = 64
    sides: dict[str, Callable[[], float]] = {
        "plain": lambda: plain(fresh(), stream, bs),
        "bare_tent": lambda: bare_tent(fresh(), stream, bs),
        "tent": lambda: adapt(fresh(), stream, make_adapter("tent"), batch_size=bs, score_source=False).metrics[
            "error"
        ],
        "bn": lambda: adapt(fresh(), stream, make_adapter("bn"), batch_size=bs, score_source=False).metrics["error"],
        "cotta": lambda: adapt(fresh(), stream, make_adapter("cotta"), batch_size=bs, score_source=False).metrics[
            "error"
        ],
    }
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    errs: dict[str, float] = {}
    for r in range(args.repeats):
        for k, fn in sides.items():
            if k == "cotta" and r >= args.cotta_repeats:
                continue
            w, c, e = timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
            errs[k] = e
            print(f"repeat {r}: {k:9s} wall {w:7.2f} s  cpu {c:7.2f} s  error {e:.4f}", flush=True)
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    out: dict[str, Any] = {
        "samples": stream.n_samples,
        "batch_size": bs,
        "threads": args.threads,
        "repeats": args.repeats,
        "cotta_repeats": args.cotta_repeats,
        "wall_s": med_w,
        "cpu_s": med_c,
        "errors": errs,
        "same_errors_tent_vs_bare": abs(errs["tent"] - errs["bare_tent"]) < 1e-12,
        "ratios_wall": {
            "tent/bare_tent": med_w["tent"] / med_w["bare_tent"],
            "tent/plain": med_w["tent"] / med_w["plain"],
            "bare_tent/plain": med_w["bare_tent"] / med_w["plain"],
            "bn/plain": med_w["bn"] / med_w["plain"],
            "cotta/plain": med_w["cotta"] / med_w["plain"],
        },
        "ratios_cpu": {
            "tent/bare_tent": med_c["tent"] / med_c["bare_tent"],
            "tent/plain": med_c["tent"] / med_c["plain"],
            "bare_tent/plain": med_c["bare_tent"] / med_c["plain"],
            "bn/plain": med_c["bn"] / med_c["plain"],
            "cotta/plain": med_c["cotta"] / med_c["plain"],
        },
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    print(json.dumps({k: out[k] for k in ("ratios_wall", "ratios_cpu", "same_errors_tent_vs_bare")}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
