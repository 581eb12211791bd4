"""Experiences and streams: the data a continual learner sees, in order.

An :class:`Experience` holds in-memory tensors for one step of the stream (train and test
split). A :class:`Stream` is an immutable sequence of experiences plus the scenario that says
how they must be evaluated. Iterating a stream never mutates it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from perennial.errors import DataError
from perennial.streams.source import DiskImages, cat_inputs

Scenario = Literal["class", "task", "domain"]
SCENARIOS: tuple[str, ...] = ("class", "task", "domain")
#: what a stream's samples are: labelled inputs ("classification"), or token windows for
#: next-token prediction ("lm": x and y are int64 (N, T), y = x shifted by one token)
Kind = Literal["classification", "lm"]
KINDS: tuple[str, ...] = ("classification", "lm")


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, *shape), integer labels ``y`` (N,) and task ids ``t`` (N,).

    In a language-modelling stream (``Stream.kind == "lm"``) ``x`` and ``y`` are int64 token
    windows of shape (N, T): ``y[:, i]`` is the token that follows ``x[:, i]``.

    Images may be uint8 (the model's input stage scales them); ``x`` may also be a
    :class:`~perennial.streams.source.DiskImages` handle for data read from disk per batch.
    """

    x: Tensor  # or DiskImages
    y: Tensor
    t: Tensor

    @staticmethod
    def make(x: Tensor, y: Tensor, task_id: int = 0) -> Split:
        return Split(x, y, torch.full((len(y),), task_id, dtype=torch.long))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.t.to(device))  # a DiskImages stays on disk

    @property
    def on_disk(self) -> bool:
        return isinstance(self.x, DiskImages)

    def subset(self, index: Tensor) -> Split:
        x = self.x.subset(index) if isinstance(self.x, DiskImages) else self.x[index]
        return Split(x, self.y[index], self.t[index])

    @staticmethod
    def cat(splits: Sequence[Split]) -> Split:
        return Split(
            cat_inputs([s.x for s in splits]),
            torch.cat([s.y for s in splits]),
            torch.cat([s.t for s in splits]),
        )


@dataclass(frozen=True)
class Experience:
    """One step of a stream."""

    index: int
    name: str
    train: Split
    test: Split
    classes: tuple[int, ...]
    task_id: int | None = None

    def to(self, device: torch.device | str) -> Experience:
        return replace(self, train=self.train.to(device), test=self.test.to(device))


@dataclass(frozen=True)
class Stream:
    """An ordered, immutable sequence of experiences.

    ``n_classes`` is the width of the classifier output. ``task_classes[k]`` lists the
    classes of task ``k`` (used by multi-head models in task-incremental learning).
    ``kind`` is ``"lm"`` for next-token prediction on token windows (then ``n_classes`` is
    the vocabulary size and ``input_shape`` is ``(T,)``, the window length).
    """

    name: str
    scenario: Scenario
    experiences: tuple[Experience, ...]
    n_classes: int
    input_shape: tuple[int, ...]
    task_classes: tuple[tuple[int, ...], ...] = field(default=())
    meta: dict[str, object] = field(default_factory=dict, compare=False)
    kind: Kind = "classification"

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    @property
    def n_tasks(self) -> int:
        return len(self.task_classes)

    def to(self, device: torch.device | str) -> Stream:
        return replace(self, experiences=tuple(e.to(device) for e in self.experiences))

    def validate(self) -> Stream:
        """Check shapes, labels and values; raise one :class:`DataError` listing every problem."""
        problems = validation_problems(self)
        if problems:
            raise DataError(
                f"stream {self.name!r} is invalid ({len(problems)} problem"
                f"{'s' if len(problems) != 1 else ''}):\n" + "\n".join(f"  - {p}" for p in problems)
            )
        return self


def validation_problems(stream: Stream) -> list[str]:
    if stream.kind == "lm":
        return lm_validation_problems(stream)
    problems: list[str] = []
    if stream.kind not in KINDS:
        problems.append(f"kind {stream.kind!r} is not one of {', '.join(KINDS)}")
    if stream.scenario not in SCENARIOS:
        problems.append(f"scenario {stream.scenario!r} is not one of {', '.join(SCENARIOS)}")
    if len(stream) == 0:
        problems.append("the stream has no experiences")
    if stream.scenario == "task" and not stream.task_classes:
        problems.append("a task-incremental stream needs task_classes (the classes of each task)")
    for e in stream:
        for split_name in ("train", "test"):
            s: Split = getattr(e, split_name)
            where = f"experience {e.index} ({e.name}) {split_name}"
            n = len(s)
            if n == 0:
                problems.append(f"{where}: is empty; drop the experience or give it data")
                continue
            if s.x.shape[0] != n or s.t.shape[0] != n:
                problems.append(f"{where}: x has {s.x.shape[0]} rows, y {n}, t {s.t.shape[0]}; they must match")
            if tuple(s.x.shape[1:]) != tuple(stream.input_shape):
                problems.append(
                    f"{where}: inputs have shape {tuple(s.x.shape[1:])}, the stream declares "
                    f"{tuple(stream.input_shape)}; every experience must share one input shape"
                )
            if isinstance(s.x, DiskImages) or s.x.dtype == torch.uint8:
                pass  # images (0..255), scaled by the model's input stage
            elif not torch.is_floating_point(s.x):
                problems.append(f"{where}: inputs have dtype {s.x.dtype}; convert them to float32 (or uint8 images)")
            elif not bool(torch.isfinite(s.x).all()):
                bad = int((~torch.isfinite(s.x)).flatten(1).any(1).sum())
                problems.append(f"{where}: {bad} samples contain NaN or inf; clean or drop them")
            if s.y.dtype != torch.long:
                problems.append(f"{where}: labels have dtype {s.y.dtype}; they must be int64 class indices")
            else:
                lo, hi = int(s.y.min()), int(s.y.max())
                if lo < 0 or hi >= stream.n_classes:
                    problems.append(
                        f"{where}: labels range over [{lo}, {hi}] but the stream declares "
                        f"{stream.n_classes} classes (labels must be in [0, {stream.n_classes - 1}])"
                    )
                if stream.scenario == "task" and e.task_id is not None and stream.task_classes:
                    allowed = set(stream.task_classes[e.task_id])
                    extra = set(s.y.unique().tolist()) - allowed
                    if extra:
                        problems.append(
                            f"{where}: labels {sorted(extra)} are not among task {e.task_id}'s "
                            f"classes {sorted(allowed)}"
                        )
    return problems


def lm_validation_problems(stream: Stream) -> list[str]:
    """Checks for a language-modelling stream: int64 token windows (N, T) within the vocabulary."""
    problems: list[str] = []
    if len(stream) == 0:
        problems.append("the stream has no experiences")
    if len(stream.input_shape) != 1:
        problems.append(f"an lm stream declares input_shape (T,), got {tuple(stream.input_shape)}")
    for e in stream:
        for split_name in ("train", "test"):
            s: Split = getattr(e, split_name)
            where = f"experience {e.index} ({e.name}) {split_name}"
            n = len(s)
            if n == 0:
                problems.append(f"{where}: has no token windows; give the domain more text or shorten the context")
                continue
            if tuple(s.x.shape) != (n, *stream.input_shape) or tuple(s.y.shape) != tuple(s.x.shape):
                problems.append(
                    f"{where}: inputs {tuple(s.x.shape)} and targets {tuple(s.y.shape)} must both be "
                    f"(N, {', '.join(map(str, stream.input_shape))}) token windows"
                )
                continue
            if s.t.shape != (n,):
                problems.append(f"{where}: task ids have shape {tuple(s.t.shape)}, expected ({n},)")
            for what, v in (("inputs", s.x), ("targets", s.y)):
                if v.dtype != torch.long:
                    problems.append(f"{where}: {what} have dtype {v.dtype}; token ids must be int64")
                    continue
                lo, hi = int(v.min()), int(v.max())
                if lo < 0 or hi >= stream.n_classes:
                    problems.append(
                        f"{where}: {what} hold token ids in [{lo}, {hi}] but the vocabulary has "
                        f"{stream.n_classes} tokens (ids must be in [0, {stream.n_classes - 1}])"
                    )
    return problems
