"""Composition: ``compose(Replay(), EWC())`` runs both methods' hooks in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Split


class Compose(Strategy):
    """Chains hooks: batch/loss/split hooks are threaded through each member in order;
    ``predict`` is taken from the first member that defines one; learning-rate multipliers
    (``lr_scales``) of the members multiply."""

    name: ClassVar[str] = "compose"
    members: tuple[Strategy, ...]

    @property
    def display_name(self) -> str:
        return "+".join(m.name for m in self.members)

    def check_scenario(self, scenario: str) -> None:
        for m in self.members:
            m.check_scenario(scenario)

    def parts(self) -> Iterator[Strategy]:
        for m in self.members:
            yield from m.parts()

    def needs_boundaries(self) -> bool:
        return any(m.needs_boundaries() for m in self.members)

    def setup(self, ctx: Context) -> None:
        for m in self.members:
            m.setup(ctx)

    def before_experience(self, ctx: Context) -> None:
        for m in self.members:
            m.before_experience(ctx)

    def lr_scales(self, ctx: Context) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.members:  # multipliers of several members multiply
            for group, scale in m.lr_scales(ctx).items():
                out[group] = out.get(group, 1.0) * scale
        return out

    def train_split(self, ctx: Context, split: Split) -> Split:
        for m in self.members:
            split = m.train_split(ctx, split)
        return split

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        for m in self.members:
            batch = m.prepare_batch(ctx, batch)
        return batch

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        for m in self.members:
            loss = m.loss(ctx, batch, logits, loss)
        return loss

    def before_step(self, ctx: Context) -> None:
        for m in self.members:
            m.before_step(ctx)

    def after_step(self, ctx: Context, batch: Batch) -> None:
        for m in self.members:
            m.after_step(ctx, batch)

    def after_experience(self, ctx: Context) -> None:
        for m in self.members:
            m.after_experience(ctx)

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        for m in self.members:
            out = m.predict(ctx, x, t)
            if out is not None:
                return out
        return None

    def state_dict(self) -> dict[str, Any]:
        return {str(i): m.state_dict() for i, m in enumerate(self.members)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        if set(state) != {str(i) for i in range(len(self.members))}:
            raise ValueError(f"state is for {len(state)} composed strategies, this has {len(self.members)}")
        for i, m in enumerate(self.members):
            m.load_state_dict(state[str(i)], device)

    def describe(self) -> str:
        return " + ".join(m.describe() for m in self.members)


def compose(*strategies: Strategy) -> Strategy:
    """Combine strategies; nested compositions are flattened; one strategy is returned as is."""
    flat: list[Strategy] = []
    for s in strategies:
        flat.extend(s.members if isinstance(s, Compose) else [s])
    if not flat:
        raise ValueError("compose() needs at least one strategy")
    if len(flat) == 1:
        return flat[0]
    names = [s.name for s in flat]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"strategy {sorted(dup)} appears twice in a composition")
    return Compose(members=tuple(flat))
