"""Slow EMA copies of the model kept next to any strategy (the ``timescales.teachers`` config).

Not a method of its own (it does not change training) and so not in the registry: ``fit``
composes it in front of the run's strategy when ``timescales.teachers`` names copies, e.g.
``teachers = {stable = 0.999, plastic = 0.9}``; ``timescales.predict_with = "stable"``
evaluates with that copy instead of the model.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from torch import Tensor

from perennial.models.ema import EMA, check_decays
from perennial.strategies.base import Batch, Context, Strategy, register_teacher


class Teachers(Strategy):
    """Exponential moving averages of the weights at chosen decays (Polyak averaging; the
    slow copies of mean teachers, Tarvainen & Valpola 2017, and CLS-ER, Arani et al. 2022),
    updated after every optimizer step with one fused ``_foreach_lerp_`` per copy. Each copy
    is registered as ``ctx.teachers[name]``; with ``predict_with`` the evaluation uses that
    copy."""

    name: ClassVar[str] = "teachers"
    summary: ClassVar[str] = "EMA copies of the model at chosen decays (timescales.teachers)"
    kinds: ClassVar[frozenset[str]] = frozenset({"classification", "lm"})  # weights only: any model
    boundary_free: ClassVar[bool] = True

    decays: dict[str, float] = Field(description="copy name -> EMA decay in [0, 1)")
    predict_with: str | None = Field(default=None, description="evaluate with this copy")

    @model_validator(mode="after")
    def _check(self) -> Teachers:
        check_decays(self.decays, "teachers")
        if self.predict_with is not None and self.predict_with not in self.decays:
            raise ValueError(f"predict_with={self.predict_with!r} is not a teacher; teachers: {sorted(self.decays)}")
        return self

    def setup(self, ctx: Context) -> None:
        ema = EMA(ctx.model, self.decays, seed=ctx.seed_for("teachers"))
        self.state["ema"] = ema
        for name, module in ema.items():
            register_teacher(ctx, name, module)

    def after_step(self, ctx: Context, batch: Batch) -> None:
        self.state["ema"].update(ctx.model)

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        if self.predict_with is None:
            return None
        return self.state["ema"][self.predict_with](x, t)
