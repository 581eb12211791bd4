"""Write a procedural image folder (the stand-in for CIFAR-100 that the image benchmarks use).

Default: 100 classes x (500 train + 100 test) 32x32 RGB PNGs in DIR/train/<class>/ and
DIR/test/<class>/ (60,000 images; 50,000 train), as CIFAR-100 is laid out. Class ``c`` is a
noisy stripe pattern of its own colour, frequency and angle, so a model can learn it.

    python bench/make_image_folder.py /tmp/folder100 [--classes 100] [--train 500] [--test 100] [--size 32]

``--cache-gb G`` instead writes a decoded cache of about G GB directly (the raw uint8 file and
labels that ``image-folder`` decodes a folder into), for memory measurements of data larger
than memory without writing a million PNG files first; ``bench/image_pipeline.py --rss``
uses it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from perennial.streams.images import write_image_folder


def write_cache(out: Path, gb: float, classes: int, size: int, seed: int = 0) -> Path:
    """A decoded cache (x.u8 + labels.npy + part.npy + meta.json) of ~``gb`` GB, written in chunks."""
    row = 3 * size * size
    n = int(gb * 1e9) // row // classes * classes
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pattern = np.stack([np.sin(2 * np.pi * (1 + c % 7) * (xx + yy * (c % 3))) for c in range(classes)])
    base = np.clip(128 + 60 * pattern, 0, 255).astype(np.uint8)  # (classes, H, W)
    noise = rng.integers(0, 50, size=(8192, 3, size, size), dtype=np.uint8)  # one block, rolled per chunk
    with open(out / "x.u8", "wb") as f:
        for k, start in enumerate(range(0, n, 8192)):
            lab = labels[start : start + 8192]
            block = np.roll(noise, k, axis=0)[: len(lab)]
            f.write((base[lab][:, None] // 2 + block + 40).tobytes())
    np.save(out / "labels.npy", labels.astype(np.int64))
    part = np.zeros(n, dtype=np.int8)
    part[np.arange(n) % (n // classes) >= n // classes - 100] = 1  # the last 100 of each class: test (as CIFAR)
    np.save(out / "part.npy", part)
    meta = {"classes": [f"class{c:03d}" for c in range(classes)], "row_shape": [3, size, size], "files": n}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--train", type=int, default=500, help="train images per class")
    ap.add_argument("--test", type=int, default=100, help="test images per class")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-gb", type=float, default=None, help="write a decoded cache of this size instead")
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.cache_gb is not None:
        write_cache(a.out, a.cache_gb, a.classes, a.size, a.seed)
    else:
        write_image_folder(a.out, a.classes, a.train, a.size, a.seed, split=True, test_per_class=a.test)
    print(f"wrote {a.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
