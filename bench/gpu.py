"""The GPU path, measured: precision x memory format x compile, and disk vs memory batches.

Protocol: a CIFAR-100-shaped stream of procedural uint8 images (100 classes, 500 train + 100
test per class, 32x32 RGB) split into 10 experiences of 10 classes, of which ``--experiences``
are trained; ``resnet18-reduced`` (or ``--model``), replay (buffer 2,000, replayed batch = batch
size), SGD, CIFAR augmentation on the device, ``--steps`` steps per experience. Each
configuration runs once after a warm-up run; steps/s count optimizer steps over training
seconds (evaluation excluded).

    python bench/gpu.py --json bench/results/gpu.json          # on a machine with CUDA
    python bench/gpu.py --smoke                                # CPU: checks that every path runs

Configurations: fp32; bf16; fp16 (GradScaler); bf16 + channels_last; bf16 + channels_last +
compile; and, with ``--folder DIR`` (bench/make_image_folder.py), the disk pipeline
(DataLoader workers, pinned memory, non-blocking copies) against the same run from memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from perennial.models import build_model
from perennial.strategies import Replay
from perennial.streams.core import Split
from perennial.streams.images import load_image_folder, stream_from_cache, stream_from_splits
from perennial.train import TrainSettings, fit


def synthetic_stream(n_classes: int, per_class: int, test_per_class: int, size: int, experiences: int):
    g = torch.Generator().manual_seed(0)
    centres = torch.randint(40, 216, (n_classes, 3, 1, 1), generator=g)

    def split(per: int) -> Split:
        y = torch.arange(n_classes).repeat_interleave(per)
        noise = torch.randint(-40, 41, (len(y), 3, size, size), generator=g)
        return Split((centres[y] + noise).clamp(0, 255).to(torch.uint8), y, torch.zeros(len(y), dtype=torch.long))

    groups = [list(range(i, i + 10)) for i in range(0, n_classes, 10)]
    s = stream_from_splits(split(per_class), split(test_per_class), groups, n_classes, name="synthetic100")
    return dataclasses.replace(s, experiences=s.experiences[:experiences])


def one(stream, model_name: str, settings: TrainSettings) -> dict:
    torch.manual_seed(0)
    model = build_model(model_name, stream.input_shape, stream.n_classes)
    r = fit(model, stream, Replay(buffer_size=2000, replay_batch_size=settings.batch_size), settings)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {
        "steps_per_s": r.steps / r.train_seconds,
        "final_acc": sum(r.accuracy_matrix[-1]) / len(r.accuracy_matrix[-1]),
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18-reduced")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--experiences", type=int, default=3)
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every configuration (no numbers)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if not torch.cuda.is_available() and not a.smoke:
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke to check the paths on the CPU")
    device = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    if a.smoke:
        a.steps, a.batch_size, a.experiences = 2, 8, 2
    stream = synthetic_stream(100, 20 if a.smoke else 500, 5 if a.smoke else 100, 32, a.experiences)
    base = TrainSettings(
        steps=a.steps, batch_size=a.batch_size, lr=0.03, optimizer="sgd", momentum=0.9, augment="cifar", device=device
    )
    configs = {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "fp16": {"precision": "fp16"},
        "bf16+channels_last": {"precision": "bf16", "channels_last": True},
        "bf16+channels_last+compile": {"precision": "bf16", "channels_last": True, "compile": not a.smoke},
    }
    results: dict[str, dict] = {}
    one(stream, a.model, base)  # warm-up (CUDA context, cuDNN autotuning)
    for name, over in configs.items():
        t0 = time.perf_counter()
        results[name] = one(stream, a.model, base.model_copy(update=over))
        print(f"{name:<28} {results[name]['steps_per_s']:8.2f} steps/s ({time.perf_counter() - t0:.0f} s)")
    if a.folder is not None:
        cache = load_image_folder(a.folder)
        for storage, workers in (("memory", 0), ("disk", a.workers)):
            s = stream_from_cache(cache, classes_per_exp=10, storage=storage)
            s = dataclasses.replace(s, experiences=s.experiences[: a.experiences])
            results[f"folder-{storage}"] = one(
                s, a.model, base.model_copy(update={"precision": "bf16", "workers": workers})
            )
            print(f"folder {storage:<21} {results[f'folder-{storage}']['steps_per_s']:8.2f} steps/s")
        results["disk_over_memory"] = {
            "ratio": results["folder-disk"]["steps_per_s"] / results["folder-memory"]["steps_per_s"]
        }
    out = {
        "protocol": {k: str(v) for k, v in vars(a).items()},
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "results": results,
    }
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
