"""Stream shapes for online continual learning: blurry and gradual boundaries, long drifting streams.

All are pure functions of a stream (or of the data) and a seed; the test splits and the
experiences' class lists are kept, so the accuracy matrix of a reshaped stream still reads
"after experience i, on experience j's classes".

- :func:`blurry` (Koh et al. 2022, i-Blurry; Moon et al. 2023, Si-Blurry): a share of each
  experience's training samples leaks into the neighbouring experiences, so classes recur
  across the (now fuzzy) boundaries;
- :func:`gradual` : the training data of two consecutive experiences are mixed over a window
  around their boundary, the share of the newer one rising linearly from 0 to 1 (a gradual
  drift rather than a switch). The result is *ordered*: the online loop must read it in order
  (``Stream.meta["ordered"]``);
- :func:`rotating_digits` : a long stream (>= 100 segments) built from offline data, digits
  whose rotation angle drifts a little from one segment to the next, a stand-in for the
  natural drift of CLOC (Cai et al. 2021).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import torch

from perennial.errors import DataError
from perennial.streams.core import Experience, Split, Stream


def _check_share(name: str, v: float, low_open: bool = False) -> None:
    if not (0.0 < v <= 1.0 if low_open else 0.0 <= v <= 1.0) or math.isnan(v):
        bound = "(0, 1]" if low_open else "[0, 1]"
        raise DataError(f"{name} must be a share in {bound}, got {v!r}")


def blurry(stream: Stream, share: float, seed: int = 0) -> Stream:
    """Move ``share`` of each experience's training samples to a neighbouring experience
    (the previous or the next one, chosen at random; the only neighbour at the ends)."""
    _check_share("blur", share)
    n = len(stream)
    if share == 0 or n < 2:
        return stream
    g = torch.Generator().manual_seed(seed)
    parts: list[list[Split]] = [[] for _ in range(n)]
    for i, e in enumerate(stream):
        m = len(e.train)
        order = torch.randperm(m, generator=g)
        k = round(share * m)
        leak, keep = order[:k], order[k:]
        parts[i].append(e.train.subset(keep))
        side = torch.randint(0, 2, (k,), generator=g) * 2 - 1  # -1: previous, +1: next
        target = (i + side).clamp(0, n - 1)
        target = torch.where(target == i, i - side, target)  # at the ends: the only neighbour
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                parts[j].append(e.train.subset(leak[target == j]))
    exps = tuple(replace(e, train=Split.cat(parts[i])) for i, e in enumerate(stream))
    return replace(stream, name=f"{stream.name}-blurry{share:g}", experiences=exps, meta={**stream.meta, "blur": share})


def gradual(stream: Stream, window: float, seed: int = 0) -> Stream:
    """Mix consecutive experiences over a window around each boundary.

    ``window`` is the share of each experience's training data (at each of its two edges: half
    of it) that takes part in the mixing: the last ``window/2`` of experience i and the first
    ``window/2`` of experience i+1 are interleaved so that the probability of drawing from i+1
    rises linearly across the window; the first half of the window stays in experience i, the
    second half goes to i+1. The returned stream is ordered (``meta["ordered"] = True``).
    """
    _check_share("drift_window", window, low_open=True)
    g = torch.Generator().manual_seed(seed)
    trains = [e.train.subset(torch.randperm(len(e.train), generator=g)) for e in stream]
    n = len(stream)
    for i in range(n - 1):
        a, b = trains[i], trains[i + 1]
        ka, kb = int(window / 2 * len(a)), int(window / 2 * len(b))
        w = ka + kb
        if w == 0:
            continue
        # positions 0..w-1 of the window; from b with probability (p + 0.5) / w
        # exactly kb from b: the kb positions with the largest margin towards b
        u = torch.rand(w, generator=g)
        score = (torch.arange(w) + 0.5) / w - u
        from_b = torch.zeros(w, dtype=torch.bool)
        from_b[score.topk(kb).indices] = True
        src = torch.empty(w, dtype=torch.long)
        src[~from_b] = torch.arange(len(a) - ka, len(a))
        src[from_b] = torch.arange(kb)
        mixed_x = torch.empty((w, *a.x.shape[1:]), dtype=a.x.dtype)
        mixed = Split(mixed_x, torch.empty(w, dtype=torch.long), torch.empty(w, dtype=torch.long))
        mixed.x[~from_b], mixed.y[~from_b], mixed.t[~from_b] = (a.x[src[~from_b]], a.y[src[~from_b]], a.t[src[~from_b]])
        mixed.x[from_b], mixed.y[from_b], mixed.t[from_b] = (b.x[src[from_b]], b.y[src[from_b]], b.t[src[from_b]])
        half = w // 2
        trains[i] = Split.cat([a.subset(torch.arange(len(a) - ka)), mixed.subset(torch.arange(half))])
        trains[i + 1] = Split.cat([mixed.subset(torch.arange(half, w)), b.subset(torch.arange(kb, len(b)))])
    exps = tuple(replace(e, train=trains[i]) for i, e in enumerate(stream))
    return replace(
        stream,
        name=f"{stream.name}-gradual{window:g}",
        experiences=exps,
        meta={**stream.meta, "ordered": True, "drift_window": window},
    )


def rotating(
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xte: torch.Tensor,
    yte: torch.Tensor,
    *,
    n_segments: int = 120,
    n_experiences: int = 10,
    segment_size: int = 50,
    test_size: int = 10,
    turns: float = 1.0,
    seed: int = 0,
    name: str = "rotating",
) -> Stream:
    """A long domain-incremental stream of images (N, C, H, W) drifting over ``n_segments``
    segments: segment k draws ``segment_size`` training images (and ``test_size`` test images)
    at random and rotates them by ``360 * turns * k / n_segments`` degrees, so the input
    distribution drifts slowly and steadily while labels keep their meaning.

    The segments are grouped, in order, into ``n_experiences`` experiences (the points where the
    accuracy matrix is measured; each experience's test split holds its segments' test images):
    the drift itself is continuous, and evaluating every segment after every other would cost
    O(n_segments^2). Ordered (``meta["ordered"]``): the online loop reads it in stream order.
    """
    from perennial.streams.scenarios import rotation

    if n_segments < 1 or segment_size < 1 or test_size < 1 or not 1 <= n_experiences <= n_segments:
        raise DataError(
            "rotating streams need n_segments, segment_size, test_size >= 1 and 1 <= n_experiences <= n_segments"
        )
    g = torch.Generator().manual_seed(seed)
    trains, tests, angles = [], [], []
    for k in range(n_segments):
        deg = 360.0 * turns * k / n_segments
        rot = rotation(deg)
        i = torch.randint(len(ytr), (segment_size,), generator=g)
        j = torch.randint(len(yte), (test_size,), generator=g)
        trains.append(Split.make(rot(xtr[i]), ytr[i]))
        tests.append(Split.make(rot(xte[j]), yte[j]))
        angles.append(deg)
    bounds = [round(e * n_segments / n_experiences) for e in range(n_experiences + 1)]
    classes = tuple(sorted(set(ytr.tolist())))
    exps = tuple(
        Experience(
            index=e,
            name=f"rot{angles[a]:.0f}-{angles[b - 1]:.0f}",
            train=Split.cat(trains[a:b]),
            test=Split.cat(tests[a:b]),
            classes=classes,
        )
        for e, (a, b) in enumerate(itertools.pairwise(bounds))
    )
    return Stream(
        name=name,
        scenario="domain",
        experiences=exps,
        n_classes=int(max(ytr.max(), yte.max())) + 1,
        input_shape=tuple(xtr.shape[1:]),
        meta={"ordered": True, "segments": n_segments},
    )


def reshape_stream(
    stream: Stream, *, blur: float | None = None, drift_window: float | None = None, seed: int = 0
) -> Stream:
    """Apply the configured stream shape (``benchmark.blur`` / ``benchmark.drift_window``)."""
    if blur is not None and drift_window is not None:
        raise DataError("a stream is either blurry (benchmark.blur) or gradual (benchmark.drift_window), not both")
    if blur is not None:
        stream = blurry(stream, blur, seed)
    if drift_window is not None:
        stream = gradual(stream, drift_window, seed)
    return stream
