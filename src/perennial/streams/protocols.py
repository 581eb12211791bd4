"""Standard image protocols by name; they run on data the user has downloaded.

Nothing is downloaded. ``benchmark.path`` points at the data (or ``$PERENNIAL_DATA/<dir>``
holds it); when it is missing, the error says exactly what to download and where to put it.

- ``split-cifar10``: CIFAR-10, 5 experiences of 2 classes (natural order). ``path``: the
  ``cifar-10-batches-py`` folder of the official python download, or an image folder.
- ``split-cifar100``: CIFAR-100, 10 experiences of 10 classes (``classes_per_exp=5``: 20x5)
  in the class order of iCaRL/PyCIL (``numpy.random.seed(1993); permutation(100)``).
  ``path``: ``cifar-100-python`` or an image folder.
- ``split-tinyimagenet``: Tiny ImageNet (200 classes, 64x64), 10 experiences of 20 classes;
  an image folder with ``train/<wnid>/`` and ``test/<wnid>/`` (the official ``val`` images
  sorted into class folders, see docs/real-data.md).
- ``imagenet-r``: ImageNet-R (200 classes), 10 experiences of 20 as in the pre-trained-model
  CL protocol (L2P/CODA-Prompt/SLCA): a seeded 80/20 split per class, images resized to 224.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perennial.errors import DataError
from perennial.streams.core import Scenario, Stream
from perennial.streams.datasets import cache_dir as default_cache_dir
from perennial.streams.images import ImageCache, image_options, load_image_folder, open_cache, stream_from_cache


#: iCaRL / PyCIL class order of CIFAR-100: numpy's legacy RNG seeded 1993
def pycil_order(n: int = 100, seed: int = 1993) -> list[int]:
    return [int(c) for c in np.random.RandomState(seed).permutation(n)]


HINTS = {
    "split-cifar10": (
        "cifar-10-batches-py",
        "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it and set "
        "benchmark.path=DIR/cifar-10-batches-py (or put it in $PERENNIAL_DATA/cifar-10-batches-py)",
    ),
    "split-cifar100": (
        "cifar-100-python",
        "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extract it and set "
        "benchmark.path=DIR/cifar-100-python (or put it in $PERENNIAL_DATA/cifar-100-python)",
    ),
    "split-tinyimagenet": (
        "tiny-imagenet-200",
        "download http://cs231n.stanford.edu/tiny-imagenet-200.zip, extract it, sort val/images into "
        "val/<wnid>/ folders with val/val_annotations.txt (docs/real-data.md has the 3-line script), rename "
        "val to test, and set benchmark.path=DIR/tiny-imagenet-200",
    ),
    "imagenet-r": (
        "imagenet-r",
        "download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar, extract it and set "
        "benchmark.path=DIR/imagenet-r (one folder per class)",
    ),
}


def data_path(name: str, path: str | None) -> Path:
    folder, how = HINTS[name]
    if path:
        p = Path(path).expanduser()
    elif os.environ.get("PERENNIAL_DATA"):
        p = Path(os.environ["PERENNIAL_DATA"]) / folder
    else:
        raise DataError(f"{name} needs its data, which is not downloaded here: {how}")
    if not p.exists():
        raise DataError(f"{name}: {p} does not exist; {how}")
    return p


def cifar_cache(root: Path, cache: str | Path | None) -> ImageCache:
    """Decode the official python CIFAR batches once into an image cache (same format as folders)."""
    hundred = (root / "train").is_file()
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    meta_file = root / ("meta" if hundred else "batches.meta")
    missing = [n for n in [*names, meta_file.name] if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root} is not an extracted CIFAR python folder (missing {', '.join(missing)})")
    h = hashlib.sha256(b"cifar-v1")
    for n in [*names, meta_file.name]:
        st = (root / n).stat()
        h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = h.hexdigest()[:20]
    base = Path(cache).expanduser() if cache else default_cache_dir() / "images"
    final = base / f"cifar-{key}"
    if (final / "meta.json").is_file():
        return open_cache(final, key)

    def load(p: Path) -> dict[bytes, Any]:
        with open(p, "rb") as f:  # the official format is a pickle of numpy arrays and lists
            return pickle.load(f, encoding="bytes")

    label_key = b"fine_labels" if hundred else b"labels"
    classes = [c.decode() for c in load(meta_file)[b"fine_label_names" if hundred else b"label_names"]]
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".decoding-"))
    try:
        labels, part = [], []
        with open(tmp / "x.u8", "wb") as out:
            for n in names:
                d = load(root / n)
                out.write(np.asarray(d[b"data"], dtype=np.uint8).tobytes())  # (N, 3072) = (N, 3, 32, 32) rows
                labels.append(np.asarray(d[label_key], dtype=np.int64))
                part.append(np.full(len(labels[-1]), int(n.startswith("test")), dtype=np.int8))
        np.save(tmp / "labels.npy", np.concatenate(labels))
        np.save(tmp / "part.npy", np.concatenate(part))
        (tmp / "meta.json").write_text(json.dumps({"classes": classes, "row_shape": [3, 32, 32], "source": str(root)}))
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(final, key)


def _protocol(
    name: str,
    n_classes: int,
    per_exp: int,
    *,
    order: Callable[[Sequence[str]], list[str]] | None = None,
    image_size: int | None = None,
) -> Callable[..., Stream]:
    def build(
        scenario: Scenario | None = None,
        path: str | None = None,
        classes_per_exp: int | Sequence[int] | None = None,
        class_order_seed: int | None = None,
        n_experiences: int | None = None,
        first_classes: int | None = None,
        class_order: str | list[str] | None = None,
        test_fraction: float | None = None,
        storage: str | None = None,
        cache_dir: str | None = None,
    ) -> Stream:
        storage, test_fraction = image_options(storage, test_fraction)  # checked before any decoding
        p = data_path(name, path)
        if name.startswith("split-cifar") and ((p / "batches.meta").is_file() or (p / "meta").is_file()):
            cache = cifar_cache(p, cache_dir)
        else:
            cache = load_image_folder(p, image_size=image_size, cache=cache_dir)
        if len(cache.classes) != n_classes:
            raise DataError(f"{name} has {n_classes} classes but {p} holds {len(cache.classes)}; check benchmark.path")
        if class_order is None and class_order_seed is None and order is not None:
            class_order = order(cache.classes)
        return stream_from_cache(
            cache,
            scenario=scenario or "class",
            classes_per_exp=classes_per_exp if classes_per_exp is not None or n_experiences else per_exp,
            class_order_seed=class_order_seed,
            n_experiences=n_experiences,
            first_classes=first_classes,
            class_order=class_order,
            test_fraction=test_fraction,
            storage=storage,
            name=name,
        )

    return build


def _cifar100_order(classes: Sequence[str]) -> list[str]:
    return [classes[i] for i in pycil_order(len(classes))]


PROTOCOLS: dict[str, tuple[str, Callable[..., Stream], dict[str, Any]]] = {
    "split-cifar10": (
        "CIFAR-10, 5 experiences x 2 classes (needs the data: benchmark.path=cifar-10-batches-py)",
        _protocol("split-cifar10", 10, 2),
        {
            "model": {"name": "resnet18-reduced", "normalize": "cifar10"},
            "train": {"epochs": 50, "batch_size": 32, "lr": 0.03, "optimizer": "sgd", "augment": "cifar"},
        },
    ),
    "split-cifar100": (
        "CIFAR-100, 10x10 (or classes_per_exp=5: 20x5) in iCaRL/PyCIL's class order (seed 1993)",
        _protocol("split-cifar100", 100, 10, order=_cifar100_order),
        {
            "model": {"name": "resnet32", "normalize": "cifar100"},
            "train": {
                "epochs": 70,
                "batch_size": 128,
                "lr": 0.1,
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "augment": "cifar",
            },
        },
    ),
    "split-tinyimagenet": (
        "Tiny ImageNet (200 classes, 64x64), 10 experiences x 20 classes",
        _protocol("split-tinyimagenet", 200, 20),
        {
            "model": {"name": "resnet18", "normalize": "imagenet"},
            "train": {"epochs": 50, "batch_size": 32, "lr": 0.03, "optimizer": "sgd", "augment": "crop-flip"},
        },
    ),
    "imagenet-r": (
        "ImageNet-R (200 classes), 10 experiences x 20, seeded 80/20 split, 224x224 (pre-trained-model CL)",
        _protocol("imagenet-r", 200, 20, image_size=224),
        {
            "model": {
                "name": "timm:vit_base_patch16_224",
                "pretrained": "hub",
                "normalize": "imagenet",
            },
            "train": {"epochs": 10, "batch_size": 64, "lr": 0.01, "optimizer": "sgd", "augment": "imagenet"},
        },
    ),
}
