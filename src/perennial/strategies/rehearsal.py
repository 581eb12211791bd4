"""Shared pieces of the buffer-based strategies (replay, DER, ER-ACE, CLS-ER, A-GEM, GEM,
GDumb, iCaRL, BiC); all of them use the one :class:`perennial.memory.Buffer`.

:class:`Rehearsal` holds the fields every such method has (``buffer_size``, the exemplar
selection ``policy`` and, for methods that store as they train, ``buffer_policy``) and fills
the buffer:

- ``buffer_policy="stream"`` (default): methods that store as they train
  (``store_every_step = True``: replay, DER, ER-ACE, CLS-ER) offer each step's new samples
  after the step, so the buffer holds samples of the whole stream so far, the current
  experience's included (ER as in Chaudhry et al. 2019 and Buzzega et al. 2020);
- ``buffer_policy="past"``: they offer the experience's training data at its end instead,
  so while an experience is trained the buffer holds earlier experiences only (Avalanche's
  replay and the van de Ven et al. 2022 protocol; pair it with ``policy="class_balanced"`` or
  ``"experience_balanced"``);
- the selection ``policy`` decides which offered samples stay (reservoir, class_balanced,
  experience_balanced, fifo, herding: see :mod:`perennial.memory.buffer`);
- ``herding`` ranks samples by how well they summarise their class in feature space, which
  needs the whole experience and a model: those samples are offered once, at the end of the
  experience (:func:`store_experience`), with the model's L2-normalised features.

Methods that keep a memory of *past* experiences only (A-GEM, GEM, iCaRL, BiC) set
``store_every_step = False`` and always store at the end of an experience.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from perennial.memory import Buffer, Policy, balanced_quota, herding_ranks
from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Split

Extras = dict[str, Tensor]


def boundary_buffer_policy() -> Any:
    """The ``buffer_policy`` field of methods that fill their memory at experience boundaries
    (``store_every_step = False``): fixed, so that a config cannot ask for ``stream``."""
    return Field(default="past", description="fixed: this method fills its memory at experience boundaries")


class Rehearsal(Strategy):
    """Base of the buffer-based methods (not registered itself; see the module docstring)."""

    buffer_size: int = Field(default=500, ge=1, description="number of stored samples")
    policy: Policy = Field(
        default="reservoir",
        description="exemplar selection: reservoir, class_balanced, experience_balanced, fifo or herding",
    )
    buffer_policy: Literal["stream", "past"] = Field(
        default="stream",
        description="stream: store each step's samples (the buffer includes the current experience); "
        "past: store an experience at its end (the buffer holds earlier experiences only)",
    )

    #: offer every step's new samples to the buffer (False: the whole experience at its end)
    store_every_step: ClassVar[bool] = True

    def setup(self, ctx: Context) -> None:
        self.state["buffer"] = Buffer(self.buffer_size, self.policy, seed=ctx.seed_for(self.name), device=ctx.device)

    @property
    def buffer(self) -> Buffer:
        return self.state["buffer"]

    @property
    def stores_per_step(self) -> bool:
        return self.store_every_step and self.buffer_policy == "stream" and self.policy != "herding"

    def step_extras(self, ctx: Context, new: Batch) -> Extras:
        """Per-sample tensors stored with each step's new samples (e.g. DER's logits)."""
        return {}

    def experience_extras(self, ctx: Context, split: Split) -> Extras:
        """Per-sample tensors stored with an experience's samples at its end."""
        return {}

    def needs_boundaries(self) -> bool:
        return not (self.boundary_free and self.stores_per_step)

    def after_step(self, ctx: Context, batch: Batch) -> None:
        if self.stores_per_step and ctx.repeat == 0:
            new = batch.new()
            group = ctx.exp_index if self.policy == "experience_balanced" else None
            self.buffer.add(new.x, new.y, new.t, group=group, **self.step_extras(ctx, new))

    def after_experience(self, ctx: Context) -> None:
        if not self.stores_per_step:
            assert ctx.experience is not None
            store_experience(ctx, self.buffer, ctx.experience.train, lambda s: self.experience_extras(ctx, s))


@torch.no_grad()
def batched_eval(
    ctx: Context, fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, size: int = 1024
) -> Tensor:
    """``fn(x, t)`` over ``x`` in chunks, with the model in eval mode (restored afterwards)."""
    model = ctx.model
    was_training = model.training
    model.eval()
    try:
        return torch.cat([fn(x[i : i + size], t[i : i + size]) for i in range(0, len(x), size)])
    finally:
        model.train(was_training)


def features_of(ctx: Context, x: Tensor) -> Tensor:
    """The model's features (``model.features``) in eval mode, without gradients."""
    return batched_eval(ctx, lambda xb, _t: ctx.model.features(xb), x, torch.zeros(len(x), dtype=torch.long))


def store_experience(
    ctx: Context, buffer: Buffer, split: Split, extras: Callable[[Split], Extras] | None = None
) -> None:
    """Offer a whole split to ``buffer`` (at the end of an experience).

    With the ``herding`` policy each class's samples are ranked by herding on the model's
    L2-normalised features; only as many per class as the class can keep are ranked.
    """
    if len(split) == 0:
        return
    if buffer.policy != "herding":
        group = ctx.exp_index if buffer.policy == "experience_balanced" else None
        buffer.add(split.x, split.y, split.t, group=group, **(extras(split) if extras else {}))
        return
    # The largest share any class can get once these samples are in: rank that many per class.
    labels = torch.cat([buffer.y.cpu(), split.y.cpu()])
    _, counts = torch.unique(labels, return_counts=True)
    m = int(balanced_quota(counts, buffer.capacity).max())
    idx, rank = herding_ranks(features_of(ctx, split.x), split.y, m)
    chosen = split.subset(idx)
    buffer.add(chosen.x, chosen.y, chosen.t, priority=rank.float(), **(extras(chosen) if extras else {}))


def index_by_age(buffer: Buffer, m: int, current: int, alpha: float) -> Tensor:
    """Slots of ``m`` samples of *earlier* experiences, experience ``e`` drawn with probability
    proportional to ``age^-alpha`` (``age = current - e >= 1``), samples within it uniformly.

    Experiences are read from the ``exp`` extra stored with each sample. ``alpha = 0`` gives
    every earlier experience the same share. Empty while no earlier experience is stored.
    """
    none = torch.zeros(0, dtype=torch.long)
    if len(buffer) == 0 or m <= 0:
        return none
    exp = buffer.get("exp").cpu()
    old = exp < current
    if not bool(old.any()):
        return none
    age = (current - exp).clamp(min=1).to(torch.float64)
    counts = torch.bincount(exp, minlength=int(exp.max()) + 1).to(torch.float64)
    weights = torch.where(old, age.pow(-alpha) / counts[exp], torch.zeros_like(age))
    return buffer.sample_index(m, weights=weights)


def sample_by_age(buffer: Buffer, m: int, current: int, alpha: float) -> dict[str, Tensor]:
    """The stored samples at :func:`index_by_age` (empty dict when there are none)."""
    idx = index_by_age(buffer, m, current, alpha)
    return buffer.gather(idx) if len(idx) else {}


def append_stored(batch: Batch, buffer: Buffer, idx: Tensor) -> Batch:
    """``batch`` with the stored samples at slots ``idx`` appended as extra rows.

    The rows are gathered straight into the new batch tensors (one copy of each row, no
    intermediate tensors), in the batch's dtype.
    """
    n, m = len(batch), len(idx)
    if m == 0:
        return batch
    x = batch.x.new_empty((n + m, *batch.x.shape[1:]))
    y = batch.y.new_empty((n + m, *batch.y.shape[1:]))
    t = batch.t.new_empty((n + m, *batch.t.shape[1:]))
    x[:n], y[:n], t[:n] = batch.x, batch.y, batch.t
    buffer.gather(idx, out={"x": x[n:], "y": y[n:], "t": t[n:]}, fields=("x", "y", "t"))
    return replace(batch, x=x, y=y, t=t)
