"""The on-disk image pipeline against in-memory tensors, side by side in one process.

Protocol: a folder written by ``bench/make_image_folder.py`` (100 classes of 32x32 RGB,
500 train + 100 test each), split class-incremental into experiences of 10 classes, of which
the first ``--experiences`` are trained; ``resnet18-reduced`` (nf=20), replay (buffer 2,000,
a replayed batch of 32 appended to every batch of 32), SGD lr 0.03, CIFAR augmentation on the
device, ``--steps`` steps per experience, evaluation on every trained experience's test set.
The same run is made from the decoded uint8 cache loaded into memory (index slicing: the fast
path) and read from disk per batch by ``--workers`` DataLoader workers, interleaved
``--rounds`` times; results must be identical, and steps/s (steps / training seconds,
evaluation excluded) are compared: ``ratio = disk / memory`` (target >= 0.9).

    python bench/make_image_folder.py /tmp/folder100
    python bench/image_pipeline.py /tmp/folder100 --json bench/results/image_pipeline.json

``--rss`` also measures the peak resident set size of a whole run with ``/usr/bin/time -v``
in a child process: from disk and from memory on the folder, and from disk on a decoded cache
of ``--rss-gb`` GB written by ``make_image_folder.py --cache-gb`` (target: < 1.5 GB at 3 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from perennial.models import build_model
from perennial.strategies import Replay
from perennial.streams.images import load_image_folder, open_cache, stream_from_cache
from perennial.train import TrainSettings, fit


def stream_for(source: str, storage: str, experiences: int, cache_dir: str | None):
    src = Path(source)
    # a decoded cache written directly (make_image_folder.py --cache-gb), or a folder of images
    cache = open_cache(src, "bench") if (src / "x.u8").is_file() else load_image_folder(src, cache=cache_dir)
    s = stream_from_cache(cache, classes_per_exp=10, storage=storage, name="folder100")
    return dataclasses.replace(s, experiences=s.experiences[:experiences])


def one_run(stream, steps: int, workers: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("resnet18-reduced", stream.input_shape, stream.n_classes)
    settings = TrainSettings(
        steps=steps, batch_size=32, lr=0.03, optimizer="sgd", momentum=0.9, augment="cifar", workers=workers
    )
    r = fit(model, stream, Replay(buffer_size=2000, replay_batch_size=32), settings, seed=seed)
    return r.steps / r.train_seconds, r


def peak_rss(args: list[str]) -> float:
    """Peak RSS (GB) of a child run, as ``/usr/bin/time -v`` reports it."""
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, __file__, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))  # type: ignore[union-attr]
    return kb / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--experiences", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per experience")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS in child processes")
    ap.add_argument("--rss-gb", type=float, default=3.0)
    ap.add_argument("--child", choices=["memory", "disk"], help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:  # one run, for the RSS measurement
        one_run(stream_for(a.folder, a.child, a.experiences, a.cache_dir), a.steps, a.workers)
        return

    t0 = time.perf_counter()
    cache = load_image_folder(a.folder, cache=a.cache_dir)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_image_folder(a.folder, cache=a.cache_dir)
    again = time.perf_counter() - t0
    print(
        f"cache: {len(cache)} images, {cache.nbytes / 1e6:.0f} MB; first build {first:.1f} s, reopened in {again:.2f} s"
    )

    mem = stream_for(a.folder, "memory", a.experiences, a.cache_dir)
    disk = stream_for(a.folder, "disk", a.experiences, a.cache_dir)
    speeds: dict[str, list[float]] = {"memory": [], "disk": []}
    results = {}
    for i in range(a.rounds):
        for name, stream, workers in (("memory", mem, 0), ("disk", disk, a.workers)):
            sps, r = one_run(stream, a.steps, workers)
            speeds[name].append(sps)
            results[name] = r.accuracy_matrix
            print(f"round {i} {name:<6} {sps:6.2f} steps/s  final acc {[round(v, 3) for v in r.accuracy_matrix[-1]]}")
    identical = results["memory"] == results["disk"]
    med = {k: statistics.median(v) for k, v in speeds.items()}
    ratio = med["disk"] / med["memory"]
    print(
        f"median steps/s: memory {med['memory']:.2f}, disk {med['disk']:.2f}; ratio {ratio:.3f}; identical {identical}"
    )
    out = {
        "protocol": vars(a) | {"folder": str(a.folder), "json": None},
        "cache_images": len(cache),
        "cache_mb": cache.nbytes / 1e6,
        "cache_first_build_s": first,
        "cache_reopen_s": again,
        "steps_per_s": speeds,
        "median_steps_per_s": med,
        "ratio_disk_over_memory": ratio,
        "identical_results": identical,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": a.threads},
    }
    if a.rss:
        child = ["--experiences", str(a.experiences), "--steps", str(a.steps), "--workers", str(a.workers)]
        child += ["--threads", str(a.threads)] + (["--cache-dir", a.cache_dir] if a.cache_dir else [])
        rss = {
            "folder_memory_gb": peak_rss([a.folder, "--child", "memory", *child]),
            "folder_disk_gb": peak_rss([a.folder, "--child", "disk", *child]),
        }
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / "cache"
            make = Path(__file__).with_name("make_image_folder.py")
            subprocess.run([sys.executable, str(make), str(big), "--cache-gb", str(a.rss_gb)], check=True)
            rss[f"cache_{a.rss_gb:g}gb_disk_gb"] = peak_rss([str(big), "--child", "disk", *child])
        print("peak RSS (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in rss.items()))
        out["peak_rss_gb"] = rss
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
