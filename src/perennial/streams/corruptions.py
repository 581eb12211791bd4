"""Corrupted test streams for test-time adaptation, made offline and deterministically.

An MNIST-C-like set of corruptions (Mu & Gilmer 2019; Hendrycks & Dietterich 2019) at five
severities, written with numpy, scipy and Pillow only. A corrupted set is a pure function of
(images, corruption, severity): its randomness is seeded by the corruption's name and the
severity, so the same digits under ``gaussian_noise`` at severity 5 are the same in every run.

A :class:`TestStream` is the unlabeled stream an adaptation run sees: an ordered tuple of
:class:`Domain` s (images, hidden labels, corruption, severity, round). Shapes
(:func:`build_tta_stream`):

- ``continual``: one corruption after another at one severity (Wang et al. 2022);
- ``gradual``: per corruption, severities 1, 2, 3, 4, 5, 4, 3, 2, 1;
- ``repeated``: the continual sequence ``rounds`` times (10+ shows error accumulation);
- ``order="class"`` (any shape): each domain's samples sorted by label, a non-i.i.d. test
  order (Boudiaf et al. 2022; Gong et al. 2022); ``order="iid"`` shuffles them.

User data: a folder of ``.npz`` files, one domain each (``x`` and ``y``, or ``x_test`` and
``y_test``), in file-name order (e.g. CIFAR-10-C converted, one file per corruption).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.errors import ConfigError, DataError, UnknownNameError
from perennial.seeding import derive_seed

Images = np.ndarray  # (N, C, H, W) float32 in [0, 1]
SEVERITIES = (1, 2, 3, 4, 5)
SHAPES = ("continual", "gradual", "repeated")
ORDERS = ("iid", "class")


def _nd():  # scipy.ndimage, imported when a corruption is first made (keeps `import perennial` light)
    from scipy import ndimage

    return ndimage


def _gaussian_noise(x: Images, s: int, rng: np.random.Generator) -> Images:
    sigma = (0.08, 0.14, 0.22, 0.32, 0.45)[s - 1]
    return x + rng.normal(0.0, sigma, x.shape).astype(np.float32)


def _shot_noise(x: Images, s: int, rng: np.random.Generator) -> Images:
    lam = (40.0, 16.0, 8.0, 4.0, 2.0)[s - 1]
    return rng.poisson(x * lam).astype(np.float32) / lam


def _impulse_noise(x: Images, s: int, rng: np.random.Generator) -> Images:
    amount = (0.04, 0.08, 0.14, 0.22, 0.32)[s - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def _scale(x: Images) -> float:
    """Spatial parameters are given for 28-pixel images and scaled to the images' size (blurs
    keep a radius of at least one pixel, so on 8x8 images the lower severities coincide)."""
    return x.shape[-1] / 28.0


def _per_image(x: Images, f: Callable[[np.ndarray, int], np.ndarray]) -> Images:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = f(x[i, c], i)
    return out


def _disk(radius: float) -> np.ndarray:
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return k / k.sum()


def _defocus_blur(x: Images, s: int, rng: np.random.Generator) -> Images:
    k = _disk(max(1.0, (1.0, 1.5, 2.0, 2.6, 3.2)[s - 1] * _scale(x)))  # at least the 4 neighbours
    return _per_image(x, lambda im, _: _nd().convolve(im, k, mode="constant"))


def _motion_blur(x: Images, s: int, rng: np.random.Generator) -> Images:
    length = max(2, round((3, 5, 7, 9, 11)[s - 1] * _scale(x)))
    angles = rng.uniform(0.0, 180.0, x.shape[0])

    def blur(im: np.ndarray, i: int) -> np.ndarray:
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0  # a horizontal line, rotated to the image's angle
        k = _nd().rotate(k, angles[i], reshape=False, order=1)
        return _nd().convolve(im, k / max(k.sum(), 1e-6), mode="constant")

    return _per_image(x, blur)


def _contrast(x: Images, s: int, rng: np.random.Generator) -> Images:
    c = (0.45, 0.32, 0.22, 0.14, 0.08)[s - 1]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


def _brightness(x: Images, s: int, rng: np.random.Generator) -> Images:
    return x + (0.15, 0.3, 0.45, 0.6, 0.75)[s - 1]


def _pil_gray(im: np.ndarray) -> object:
    from PIL import Image

    return Image.fromarray(np.clip(im * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def _pixelate(x: Images, s: int, rng: np.random.Generator) -> Images:
    from PIL import Image

    f = (0.6, 0.5, 0.4, 0.32, 0.25)[s - 1]
    h, w = x.shape[-2:]
    small = (max(1, round(w * f)), max(1, round(h * f)))

    def pix(im: np.ndarray, _: int) -> np.ndarray:
        p = _pil_gray(im).resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)  # type: ignore[attr-defined]
        return np.asarray(p, np.float32) / 255.0

    return _per_image(x, pix)


def _jpeg(x: Images, s: int, rng: np.random.Generator) -> Images:
    from PIL import Image

    quality = (20, 12, 8, 5, 2)[s - 1]

    def jpg(im: np.ndarray, _: int) -> np.ndarray:
        buf = io.BytesIO()
        _pil_gray(im).save(buf, format="JPEG", quality=quality)  # type: ignore[attr-defined]
        buf.seek(0)
        return np.asarray(Image.open(buf), np.float32) / 255.0

    return _per_image(x, jpg)


def _elastic(x: Images, s: int, rng: np.random.Generator) -> Images:
    alpha, sigma = ((6.0, 3.5), (8.0, 3.0), (10.0, 2.8), (12.0, 2.5), (14.0, 2.2))[s - 1]
    alpha, sigma = alpha * _scale(x), sigma * _scale(x)
    h, w = x.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fields = rng.uniform(-1.0, 1.0, (x.shape[0], 2, h, w)).astype(np.float32)

    def warp(im: np.ndarray, i: int) -> np.ndarray:
        dy = _nd().gaussian_filter(fields[i, 0], sigma) * alpha
        dx = _nd().gaussian_filter(fields[i, 1], sigma) * alpha
        return _nd().map_coordinates(im, [yy + dy, xx + dx], order=1, mode="constant")

    return _per_image(x, warp)


def _rotation(x: Images, s: int, rng: np.random.Generator) -> Images:
    deg = (15.0, 25.0, 35.0, 45.0, 60.0)[s - 1]
    angles = deg * rng.choice([-1.0, 1.0], x.shape[0])
    return _per_image(x, lambda im, i: _nd().rotate(im, angles[i], reshape=False, order=1, mode="constant"))


def _translation(x: Images, s: int, rng: np.random.Generator) -> Images:
    dist = (3.0, 4.5, 6.0, 7.5, 9.0)[s - 1] * _scale(x)
    phi = rng.uniform(0.0, 2 * math.pi, x.shape[0])
    return _per_image(
        x, lambda im, i: _nd().shift(im, (dist * math.sin(phi[i]), dist * math.cos(phi[i])), order=1, mode="constant")
    )


#: name -> corruption(images, severity, rng); the order is the default continual sequence
CORRUPTIONS: dict[str, Callable[[Images, int, np.random.Generator], Images]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
    "elastic": _elastic,
    "rotation": _rotation,
    "translation": _translation,
}


def check_corruption(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise UnknownNameError("corruption", name, CORRUPTIONS, field="corruptions")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ConfigError([("severity", f"severity must be an integer from 1 to 5, got {severity!r}")])


def corrupt(x: Images, name: str, severity: int) -> Images:
    """``x`` (N, C, H, W) in [0, 1] under corruption ``name`` at ``severity`` (1-5), clipped to [0, 1].

    Deterministic: the randomness is seeded by (name, severity) only.
    """
    check_corruption(name, severity)
    rng = np.random.default_rng(derive_seed(0, "corruption", name, severity))
    out = CORRUPTIONS[name](np.asarray(x, np.float32), severity, rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ streams


@dataclass(frozen=True)
class Domain:
    """One segment of a test stream: inputs ``x`` and the labels ``y`` (hidden from methods)."""

    name: str
    x: Tensor
    y: Tensor
    corruption: str = ""
    severity: int = 0
    round: int = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class TestStream:
    """The unlabeled test stream of an adaptation run (domains in order)."""

    __test__ = False  # not a pytest test class

    name: str
    domains: tuple[Domain, ...]
    input_shape: tuple[int, ...]
    n_classes: int
    shape: str = "continual"
    order: str = "iid"

    def __len__(self) -> int:
        return len(self.domains)

    @property
    def n_samples(self) -> int:
        return sum(len(d) for d in self.domains)

    @property
    def rounds(self) -> int:
        return 1 + max((d.round for d in self.domains), default=0)


def _base_images(benchmark: str) -> tuple[np.ndarray, np.ndarray]:
    from perennial.streams import datasets

    if benchmark == "mnist-c":
        _, _, xte, yte = datasets.mnist5k()
        return xte, yte
    if benchmark == "digits-c":
        _, _, xte, yte = datasets.digits()
        return xte, yte
    raise UnknownNameError("adaptation benchmark", benchmark, [*TTA_BENCHMARKS, "npz-dir"], field="benchmark")


#: built-in corrupted benchmarks: the clean test images of these are corrupted
TTA_BENCHMARKS = {
    "mnist-c": "the 1,000 test digits of split-mnist (28x28) under 12 corruptions x 5 severities",
    "digits-c": "the 360 test images of scikit-learn digits (8x8) under the same corruptions (fast, for tests)",
}


def _order(y: np.ndarray, order: str, seed: int, n: int | None = None) -> np.ndarray:
    """Indices of the domain's samples in test order: a random subset of ``n`` (all by default),
    shuffled, or sorted by label for ``order="class"`` (a fixed shuffle inside each class)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))[:n]
    if order == "class":
        perm = perm[np.argsort(y[perm], kind="stable")]
    return perm


def build_tta_stream(
    benchmark: str = "mnist-c",
    *,
    shape: str = "continual",
    corruptions: Sequence[str] | None = None,
    severity: int = 5,
    rounds: int = 10,
    order: str = "iid",
    samples_per_domain: int | None = None,
    seed: int = 0,
    path: str | Path | None = None,
) -> TestStream:
    """The test stream of an adaptation run (see the module docstring for shapes and orders).

    ``seed`` fixes the order of samples inside each domain (and which ones are kept when
    ``samples_per_domain`` caps a domain); the corrupted images do not depend on it.
    """
    problems = []
    if shape not in SHAPES:
        problems.append(("shape", f"unknown stream shape {shape!r}; choose one of {', '.join(SHAPES)}"))
    if order not in ORDERS:
        problems.append(("order", f"unknown test order {order!r}; choose iid or class (sorted by label)"))
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        problems.append(("severity", f"severity must be an integer from 1 to 5, got {severity!r}"))
    if rounds < 1:
        problems.append(("rounds", f"rounds must be >= 1, got {rounds}"))
    if samples_per_domain is not None and samples_per_domain < 1:
        problems.append(("samples_per_domain", f"must be >= 1, got {samples_per_domain}"))
    for c in corruptions or ():
        if c not in CORRUPTIONS:
            try:
                check_corruption(c, 5)
            except UnknownNameError as e:
                problems += e.problems
    if problems:
        raise ConfigError(problems, header="invalid adaptation stream")
    if benchmark == "npz-dir":
        return _npz_stream(
            path, shape=shape, rounds=rounds, order=order, samples_per_domain=samples_per_domain, seed=seed
        )
    x, y = _base_images(benchmark)
    names = list(corruptions) if corruptions else list(CORRUPTIONS)
    plan: list[tuple[str, int, int]] = []  # (corruption, severity, round)
    if shape == "gradual":
        sevs = [1, 2, 3, 4, 5, 4, 3, 2, 1]
        plan = [(c, s, 0) for c in names for s in sevs]
    else:
        n_rounds = rounds if shape == "repeated" else 1
        plan = [(c, severity, r) for r in range(n_rounds) for c in names]
    cache: dict[tuple[str, int], np.ndarray] = {}
    domains = []
    for i, (c, s, r) in enumerate(plan):
        if (c, s) not in cache:
            cache[(c, s)] = corrupt(x, c, s)
        perm = _order(y, order, derive_seed(seed, "tta-order", i), samples_per_domain)
        name = f"{c}-{s}" + (f"-r{r}" if shape == "repeated" else "")
        domains.append(
            Domain(
                name, torch.from_numpy(cache[(c, s)][perm].copy()), torch.from_numpy(y[perm].astype(np.int64)), c, s, r
            )
        )
    return TestStream(benchmark, tuple(domains), tuple(x.shape[1:]), int(y.max()) + 1, shape, order)


def _npz_stream(
    path: str | Path | None, *, shape: str, rounds: int, order: str, samples_per_domain: int | None, seed: int
) -> TestStream:
    if not path:
        raise DataError("benchmark npz-dir needs a path: a folder with one .npz file per domain (--path DIR)")
    if shape == "gradual":
        raise ConfigError([("shape", "a folder of .npz domains has no severities; use continual or repeated")])
    root = Path(path)
    files = sorted(root.glob("*.npz")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root} is not a folder holding .npz files; put one file per domain there (x, y)")
    base = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                keys = ("x", "y") if "x" in z.files else ("x_test", "y_test")
                if keys[0] not in z.files or keys[1] not in z.files:
                    raise DataError(f"{f} needs arrays x and y (or x_test and y_test); it has {', '.join(z.files)}")
                xs, ys = z[keys[0]].astype(np.float32), z[keys[1]]
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {f}: {e}") from None
        if xs.ndim < 2 or len(xs) != len(ys) or ys.ndim != 1 or not np.issubdtype(ys.dtype, np.integer):
            raise DataError(
                f"{f}: x must be (N, ...) and y integer labels (N,), got {xs.shape} and {ys.shape} {ys.dtype}"
            )
        if not np.isfinite(xs).all():
            raise DataError(f"{f}: x holds NaN or inf values")
        base.append((f.stem, xs, ys.astype(np.int64)))
    shapes = {b[1].shape[1:] for b in base}
    if len(shapes) != 1:
        raise DataError(f"the .npz domains in {root} have different input shapes: {sorted(shapes)}")
    n_rounds = rounds if shape == "repeated" else 1
    domains = []
    for r in range(n_rounds):
        for j, (name, xs, ys) in enumerate(base):
            perm = _order(ys, order, derive_seed(seed, "tta-order", r * len(base) + j), samples_per_domain)
            domains.append(
                Domain(
                    name + (f"-r{r}" if shape == "repeated" else ""),
                    torch.from_numpy(xs[perm].copy()),
                    torch.from_numpy(ys[perm].copy()),
                    name,
                    0,
                    r,
                )
            )
    n_classes = int(max(int(b[2].max()) for b in base)) + 1
    return TestStream(root.name, tuple(domains), tuple(base[0][1].shape[1:]), n_classes, shape, order)


def with_device(stream: TestStream, device: torch.device | str) -> TestStream:
    return replace(stream, domains=tuple(replace(d, x=d.x.to(device), y=d.y.to(device)) for d in stream.domains))
