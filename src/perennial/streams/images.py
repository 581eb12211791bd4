"""Image folders: one sub-folder per class, decoded once into a uint8 cache, read per batch.

Layout (``benchmark.path=DIR``)::

    DIR/<class>/<image>             a seeded, stratified train/test split (test_fraction)
    DIR/train/<class>/<image>       or given train and test sub-trees
    DIR/test/<class>/<image>

The first build decodes every image once with Pillow into ``CACHE/images-<key>/x.u8``, a raw
uint8 array of shape (N, C, H, W) in (sub-tree, class, file name) order, next to the labels.
``key`` hashes every file's relative path, size and modification time plus the decoding
options, so a changed folder gets a new cache and an unchanged one starts instantly.

``storage`` decides how the training loop sees the cache: ``memory`` loads it into one uint8
tensor (batches are index slices: the fast path), ``disk`` keeps a
:class:`~perennial.streams.source.DiskImages` handle (batches are read from disk by
DataLoader workers; data larger than memory), ``auto`` (default) loads caches up to
``MEMORY_LIMIT`` bytes and streams bigger ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.errors import DataError
from perennial.streams.core import Experience, Scenario, Split, Stream
from perennial.streams.datasets import cache_dir
from perennial.streams.scenarios import class_groups
from perennial.streams.source import DiskImages

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
CACHE_VERSION = 1
#: ``storage=auto`` loads caches up to this size into memory and streams bigger ones from disk
MEMORY_LIMIT = 2 * 1024**3
STORAGES = ("auto", "memory", "disk")


@dataclass(frozen=True)
class ImageCache:
    """A decoded image folder: ``x.u8`` (N, *row_shape) uint8, labels, sub-tree of each row."""

    root: Path
    classes: tuple[str, ...]
    row_shape: tuple[int, int, int]
    labels: np.ndarray  # (N,) int64: index into classes (sorted by name)
    part: np.ndarray  # (N,) int8: 0 = DIR/<class> or DIR/train/<class>, 1 = DIR/test/<class>
    key: str

    @property
    def x_path(self) -> Path:
        return self.root / "x.u8"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.row_shape))

    def inputs(self, storage: str = "auto") -> DiskImages | torch.Tensor:
        """All rows: a disk handle, or one uint8 tensor in memory."""
        handle = DiskImages(self.x_path, self.row_shape, np.arange(len(self)), self.key)
        if storage == "disk" or (storage == "auto" and self.nbytes > MEMORY_LIMIT):
            return handle
        return torch.from_numpy(np.fromfile(self.x_path, dtype=np.uint8)).view(len(self), *self.row_shape)


def _listing(root: Path) -> tuple[list[str], list[tuple[str, int, int]], str]:
    """(class names, [(relative file path, class index, part)], every file's path, size and mtime)."""
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder; set benchmark.path=DIR")
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    parts = [("train", 0), ("test", 1)] if split_layout else [("", 0)]
    class_dirs: dict[int, list[str]] = {}
    for sub, p in parts:
        base = root / sub if sub else root
        class_dirs[p] = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = class_dirs[0]
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders; put each class's images in DIR/<class>/ (or DIR/train/<class>/ "
            "and DIR/test/<class>/)"
        )
    if split_layout:
        extra = sorted(set(class_dirs[1]) - set(classes))
        if extra:
            raise DataError(
                f"{root}/test has classes {extra} that {root}/train does not; give every class train images"
            )
    files: list[tuple[str, int, int]] = []
    problems: list[str] = []
    stats: list[str] = []
    for sub, p in parts:
        for c, name in enumerate(classes):
            d = (root / sub / name) if sub else (root / name)
            if not d.is_dir():
                if p == 1:
                    continue  # a class without test images
                problems.append(f"class folder {d} is missing")
                continue
            prefix = f"{sub}/{name}/" if sub else f"{name}/"
            with os.scandir(d) as it:  # one stat per file, for the cache key
                entries = sorted((e for e in it if not e.name.startswith(".") and e.is_file()), key=lambda e: e.name)
            if not entries and (p == 0 or not split_layout):
                problems.append(f"class folder {d} has no images; add images or remove the folder")
            for e in entries:
                st = e.stat()
                files.append((prefix + e.name, c, p))
                stats.append(f"{prefix}{e.name}\0{c}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n")
    if problems:
        raise DataError(_listed(f"image folder {root} is not usable", problems))
    return classes, files, "".join(stats)


def _listed(header: str, problems: list[str], show: int = 8) -> str:
    more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
    return (
        f"{header} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
        + "\n".join(f"  - {p}" for p in problems[:show])
        + more
    )


def _key(stats: str, image_size: int | None) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "image_size": image_size}).encode())
    h.update(stats.encode())
    return h.hexdigest()[:20]


def load_image_folder(
    path: str | Path, *, image_size: int | None = None, cache: str | Path | None = None
) -> ImageCache:
    """Decode ``path`` into the cache (once) and return it; bad files raise one :class:`DataError`."""
    root = Path(path).expanduser().resolve()
    classes, files, stats = _listing(root)
    key = _key(stats, image_size)
    base = Path(cache).expanduser() if cache else cache_dir() / "images"
    final = base / f"images-{key}"
    if (final / "meta.json").is_file() and (final / "x.u8").is_file():
        try:
            return open_cache(final, key)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache: decode again
    return _decode(root, classes, files, image_size, base, final, key)


def open_cache(final: Path, key: str) -> ImageCache:
    meta = json.loads((final / "meta.json").read_text())
    labels = np.load(final / "labels.npy", allow_pickle=False)
    part = np.load(final / "part.npy", allow_pickle=False)
    shape = tuple(meta["row_shape"])
    if (final / "x.u8").stat().st_size != len(labels) * int(np.prod(shape)):
        raise ValueError("cache file size does not match its metadata")
    return ImageCache(final, tuple(meta["classes"]), shape, labels, part, key)  # type: ignore[arg-type]


def _decode(
    root: Path,
    classes: list[str],
    files: list[tuple[str, int, int]],
    image_size: int | None,
    base: Path,
    final: Path,
    key: str,
) -> ImageCache:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("image folders need Pillow; install it with: pip install pillow") from None
    # Pass 1: headers only (fast): unreadable files, modes, sizes.
    problems: list[str] = []
    sizes: dict[tuple[int, int], list[str]] = {}
    modes: set[str] = set()
    for rel, _, _ in files:
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(
                f"{rel}: not an image file (suffix {Path(rel).suffix or 'none'}); move it out of the folder"
            )
            continue
        try:
            with Image.open(root / rel) as im:
                sizes.setdefault(im.size, []).append(rel)
                modes.add(im.mode)
        except (UnidentifiedImageError, OSError) as e:
            problems.append(f"{rel}: cannot be read as an image ({type(e).__name__}); delete or replace it")
    if problems:
        raise DataError(_listed(f"image folder {root} has files that are not readable images", problems))
    if len(sizes) > 1 and image_size is None:
        common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        desc = ", ".join(f"{w}x{h}: {len(v)} files (e.g. {v[0]})" for (w, h), v in common[:4])
        raise DataError(
            f"images in {root} have different sizes ({desc}); set benchmark.image_size=N to resize every image "
            "to NxN when it is decoded"
        )
    gray = modes <= {"1", "L", "I;16", "I", "F"}
    channels = 1 if gray else 3
    w, h = (image_size, image_size) if image_size is not None else next(iter(sizes))
    row_shape = (channels, h, w)
    # Pass 2: decode in cache order (part, class, file name) straight into a raw file.
    order = sorted(range(len(files)), key=lambda i: (files[i][2], files[i][1], files[i][0]))
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".decoding-"))
    try:
        with open(tmp / "x.u8", "wb") as out:
            for i in order:
                rel = files[i][0]
                try:
                    with Image.open(root / rel) as im:
                        im = im.convert("L" if gray else "RGB")
                        if im.size != (w, h):
                            im = im.resize((w, h), Image.Resampling.BILINEAR)
                        a = np.asarray(im, dtype=np.uint8)
                except (OSError, ValueError) as e:
                    raise DataError(f"{root / rel} cannot be decoded ({e}); delete or replace it") from None
                a = a[None] if gray else a.transpose(2, 0, 1)
                out.write(np.ascontiguousarray(a).tobytes())
        labels = np.array([files[i][1] for i in order], dtype=np.int64)
        part = np.array([files[i][2] for i in order], dtype=np.int8)
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "part.npy", part)
        meta = {"classes": classes, "row_shape": list(row_shape), "source": str(root), "files": len(files)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: use its cache
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(final, key)


def read_class_order(spec: str | Sequence[str] | Sequence[int], classes: Sequence[str]) -> list[int]:
    """Class indices in the order given by a file (one class name per line), a list of names or
    a permutation of the class indices (classes numbered in name order)."""
    if not isinstance(spec, str) and all(isinstance(c, int) and not isinstance(c, bool) for c in spec):
        bad = [c for c in spec if not 0 <= int(c) < len(classes)]
        if bad:
            raise DataError(f"class_order indices {bad[:5]} are out of range: the folder has {len(classes)} classes")
        spec = [classes[int(c)] for c in spec]  # class indices (in name order) -> names, checked below
    if isinstance(spec, str):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise DataError(f"class order file {spec!r} does not exist; give a text file with one class name per line")
        names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        names = list(spec)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [n for n in names if n not in index]
    missing = [c for c in classes if c not in set(names)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or dup:
        parts = [
            f"unknown classes {unknown[:5]}" if unknown else "",
            f"missing classes {missing[:5]}" if missing else "",
        ]
        parts.append(f"repeated {dup[:5]}" if dup else "")
        raise DataError(
            f"class order must list every class of the folder exactly once: {'; '.join(p for p in parts if p)}"
        )
    return [index[n] for n in names]


def split_rows(cache: ImageCache, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows: the sub-trees when the folder has them, else a seeded stratified split."""
    if (cache.part == 1).any():
        return np.flatnonzero(cache.part == 0), np.flatnonzero(cache.part == 1)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(len(cache.classes)):
        idx = np.flatnonzero(cache.labels == c)
        if len(idx) < 2:
            raise DataError(
                f"class {cache.classes[c]!r} has {len(idx)} image; a train/test split needs at least 2 per class "
                "(or give DIR/train and DIR/test sub-folders)"
            )
        k = min(max(1, round(len(idx) * test_fraction)), len(idx) - 1)
        idx = idx[rng.permutation(len(idx))]
        test.append(np.sort(idx[:k]))
        train.append(np.sort(idx[k:]))
    return np.concatenate(train), np.concatenate(test)


def stream_from_splits(
    train: Split,
    test: Split,
    groups: Sequence[Sequence[int]],
    n_classes: int,
    *,
    scenario: Scenario = "class",
    name: str = "split",
    class_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Stream:
    """Experiences of disjoint class ``groups`` from one train and one test split (in memory or on disk)."""
    if scenario == "domain" and len({len(g) for g in groups}) != 1:
        raise DataError("domain-incremental splits need the same number of classes in every experience")
    experiences = []
    for i, group in enumerate(groups):
        gt = torch.tensor(list(group), dtype=torch.long)
        tr = train.subset(torch.isin(train.y, gt).nonzero().flatten())
        te = test.subset(torch.isin(test.y, gt).nonzero().flatten())
        task = i if scenario == "task" else 0
        tr_y, te_y = tr.y, te.y
        if scenario == "domain":
            remap = torch.full((n_classes,), -1, dtype=torch.long)
            remap[gt] = torch.arange(len(group))
            tr_y, te_y = remap[tr_y], remap[te_y]
        label = "+".join(class_names[c] if class_names else str(c) for c in group)
        if len(label) > 60:
            label = f"{len(group)} classes"
        experiences.append(
            Experience(
                index=i,
                name=f"exp{i}[{label}]",
                train=Split(tr.x, tr_y, torch.full((len(tr),), task, dtype=torch.long)),
                test=Split(te.x, te_y, torch.full((len(te),), task, dtype=torch.long)),
                classes=tuple(range(len(group))) if scenario == "domain" else tuple(int(c) for c in group),
                task_id=i if scenario == "task" else None,
            )
        )
    return Stream(
        name=name,
        scenario=scenario,
        experiences=tuple(experiences),
        n_classes=len(groups[0]) if scenario == "domain" else n_classes,
        input_shape=tuple(train.x.shape[1:]),
        task_classes=tuple(tuple(int(c) for c in g) for g in groups) if scenario == "task" else (),
        meta={"class_order": [int(c) for g in groups for c in g], **(meta or {})},
    )


def image_options(storage: str | None, test_fraction: float | None) -> tuple[str, float]:
    """``benchmark.storage`` and ``benchmark.test_fraction`` of every image benchmark, checked
    (before anything is decoded) and with their defaults filled in."""
    storage = storage or "auto"
    if storage not in STORAGES:
        raise DataError(f"benchmark.storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise DataError(f"benchmark.test_fraction must be in (0, 1), got {test_fraction}")
    return storage, 0.2 if test_fraction is None else test_fraction


def image_folder(
    scenario: Scenario | None = None,
    path: str | None = None,
    classes_per_exp: int | Sequence[int] | None = None,
    class_order_seed: int | None = None,
    n_experiences: int | None = None,
    first_classes: int | None = None,
    class_order: str | list[str] | None = None,
    test_fraction: float | None = None,
    image_size: int | None = None,
    storage: str | None = None,
    cache_dir: str | None = None,
    name: str = "image-folder",
) -> Stream:
    """The ``image-folder`` benchmark: class-incremental (or task/domain) splits of a folder of images."""
    if not path:
        raise DataError("benchmark image-folder needs benchmark.path: a folder with one sub-folder of images per class")
    storage, test_fraction = image_options(storage, test_fraction)
    cache = load_image_folder(path, image_size=image_size, cache=cache_dir)
    return stream_from_cache(
        cache,
        scenario=scenario or "class",
        classes_per_exp=classes_per_exp,
        class_order_seed=class_order_seed,
        n_experiences=n_experiences,
        first_classes=first_classes,
        class_order=class_order,
        test_fraction=test_fraction,
        storage=storage,
        name=name,
    )


def stream_from_cache(
    cache: ImageCache,
    *,
    scenario: Scenario = "class",
    classes_per_exp: int | Sequence[int] | None = None,
    class_order_seed: int | None = None,
    n_experiences: int | None = None,
    first_classes: int | None = None,
    class_order: str | list[str] | None = None,
    test_fraction: float = 0.2,
    storage: str = "auto",
    name: str = "image-folder",
    split_seed: int = 0,
) -> Stream:
    n_classes = len(cache.classes)
    if classes_per_exp is None:
        if n_experiences is not None:
            if n_classes % n_experiences and first_classes is None:
                raise DataError(
                    f"{n_classes} classes cannot be split evenly into {n_experiences} experiences; "
                    "set benchmark.classes_per_exp to a list of sizes"
                )
            classes_per_exp = max(
                1, (n_classes - (first_classes or 0)) // max(n_experiences - (first_classes is not None), 1)
            )
        else:
            classes_per_exp = 1 if first_classes is not None else 2
    order = read_class_order(class_order, cache.classes) if class_order is not None else list(range(n_classes))
    pos_groups = class_groups(
        range(n_classes), classes_per_exp, class_order_seed=class_order_seed, first_classes=first_classes
    )
    groups = [[order[p] for p in g] for g in pos_groups]
    tr_rows, te_rows = split_rows(cache, test_fraction, split_seed)
    x = cache.inputs(storage)
    y = torch.from_numpy(cache.labels)
    full = Split(x, y, torch.zeros(len(y), dtype=torch.long))
    train, test = full.subset(torch.from_numpy(tr_rows)), full.subset(torch.from_numpy(te_rows))
    return stream_from_splits(
        train,
        test,
        groups,
        n_classes,
        scenario=scenario,
        name=name,
        class_names=cache.classes,
        meta={"classes": list(cache.classes), "cache": str(cache.root), "on_disk": isinstance(x, DiskImages)},
    )


def write_image_folder(
    root: str | Path,
    n_classes: int,
    per_class: int,
    size: int = 32,
    seed: int = 0,
    *,
    channels: int = 3,
    split: bool = False,
    test_per_class: int = 0,
) -> Path:
    """Write a procedural image folder (class c: a noisy pattern of its own colour and stripe
    frequency): tests and ``bench/make_image_folder.py`` use it. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for c in range(n_classes):
        crng = np.random.default_rng([seed, c])
        colour = crng.uniform(40, 215, size=channels).astype(np.float32)
        freq, angle = 1 + c % 7, np.pi * crng.uniform()
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        subsets = [("train", per_class), ("test", test_per_class)] if split else [("", per_class)]
        for sub, count in subsets:
            d = root / sub / f"class{c:03d}" if sub else root / f"class{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.normal(0, 25, size=(size, size, channels))
                img = colour[None, None, :] + 40 * wave[..., None] + noise
                a = np.clip(img, 0, 255).astype(np.uint8)
                Image.fromarray(a[..., 0] if channels == 1 else a).save(d / f"{i:05d}.png")
    return root
