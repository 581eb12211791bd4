"""GDumb (Prabhu, Torr & Dokania 2020, "GDumb: a simple approach that questions our progress in
continual learning")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from perennial.memory import Policy
from perennial.models import MASK_VALUE
from perennial.strategies.base import Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal, boundary_buffer_policy, store_experience
from perennial.streams.core import Split


@register("gdumb")
class GDumb(Rehearsal):
    """Greedy class-balanced memory + a model retrained from scratch on the memory alone.

    GDumb's sampler keeps the memory class-balanced: a sample enters while its class holds
    less than its share ``k / |classes seen|``, evicting a random sample of the largest class.
    The ``class_balanced`` buffer policy (default) ends with exactly those class counts and a
    uniform random subset within each class; ``reservoir`` and ``herding`` are available too.
    At each experience the new data are offered to the memory and the model is reset to its
    initial weights (``before_experience``), then trained on the memory only (``train_split``
    returns the memory; the
    loop gives GDumb a fresh optimizer at every experience through ``fresh_optimizer``). At
    test time the logits of classes not seen yet are masked, as in the paper.

    Defaults: 500 slots (our split-mnist default memory; the paper's MNIST setting also has
    k = 500). The data of the new experience are ranked for ``herding`` with the model of the
    previous experience, before the reset.
    """

    summary = "greedy class-balanced memory; retrain from scratch on it at every experience"
    online = False  # needs the whole experience (or memory) at once
    store_every_step = False
    buffer_policy: Literal["past"] = boundary_buffer_policy()  # type: ignore[assignment]
    fresh_optimizer = True

    policy: Policy = Field(
        default="class_balanced",
        description="exemplar selection: reservoir, class_balanced, experience_balanced, fifo or herding",
    )

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.state["init"] = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    def before_experience(self, ctx: Context) -> None:
        assert ctx.experience is not None
        store_experience(ctx, self.buffer, ctx.experience.train)
        ctx.model.load_state_dict(self.state["init"])  # retrain from scratch

    def train_split(self, ctx: Context, split: Split) -> Split:
        # no side effects here: a run resumed inside an experience calls train_split again
        # (but not before_experience) and must get the same data
        b = self.buffer
        return Split(b.x, b.y, b.t)

    def after_experience(self, ctx: Context) -> None:
        pass  # the memory was updated in before_experience

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        if ctx.scenario != "class" or not ctx.seen_classes:
            return None
        logits = ctx.model(x, t)
        seen = list(ctx.seen_classes)
        mask = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
        mask[seen] = False
        return logits.masked_fill(mask, MASK_VALUE)
