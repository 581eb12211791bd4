"""Timescales: per-group learning-rate multipliers and slow EMA copies, driven by config.

A :class:`Timescales` section says how fast each part of the model learns::

    [timescales]
    backbone_lr = 0.1                          # the body learns 10x slower than train.lr ...
    head_lr = 1.0                              # ... than the head
    teachers = { stable = 0.999, plastic = 0.9 }   # EMA copies of the whole model
    predict_with = "stable"                    # evaluate with the stable copy

``make_optimizer`` builds one optimizer parameter group per part of the model (``backbone``
= ``model.body``, ``head`` = ``model.head``, ``other`` = anything else), each carrying its
``lr_scale``; the loop sets every group's learning rate to ``lr * lr_scale`` at each step.
Strategies change the multipliers per phase through their ``lr_scales(ctx)`` hook (e.g. a
slow backbone after the first experience); the configured and the strategy's multipliers
multiply. A multiplier of 0 freezes a group exactly (the update is ``0 * step`` for SGD, Adam
and AdamW alike, weight decay included).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from perennial.models.ema import check_decays
from perennial.strategies.base import Strategy
from perennial.strategies.compose import compose
from perennial.strategies.teachers import Teachers

#: the parameter groups of a Classifier, in optimizer order
GROUPS = ("backbone", "head", "other")


class Timescales(BaseModel):
    """How fast each part of the model learns, and which slow copies of it to keep."""

    model_config = ConfigDict(extra="forbid")

    backbone_lr: float = Field(
        default=1.0, ge=0.0, description="multiplier of train.lr for the backbone (model.body); 0 freezes it"
    )
    head_lr: float = Field(default=1.0, ge=0.0, description="multiplier of train.lr for the head (model.head)")
    teachers: dict[str, float] = Field(
        default_factory=dict,
        description="EMA copies of the model, name -> decay in [0, 1) (e.g. {stable = 0.999}); updated every step",
    )
    predict_with: str | None = Field(default=None, description="evaluate with this teacher instead of the model")

    @model_validator(mode="after")
    def _check(self) -> Timescales:
        check_decays(self.teachers, "timescales.teachers")
        for name in self.teachers:
            if not name.replace("-", "_").isidentifier():
                raise ValueError(f"teacher names must be simple names like 'stable', got {name!r}")
        if self.predict_with is not None and self.predict_with not in self.teachers:
            known = ", ".join(sorted(self.teachers)) or "none defined"
            raise ValueError(
                f"predict_with={self.predict_with!r} is not a teacher (teachers: {known}); "
                f"add it to timescales.teachers or drop predict_with"
            )
        return self

    def scales(self) -> dict[str, float]:
        return {"backbone": self.backbone_lr, "head": self.head_lr}


def named_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``backbone`` (``model.body``), ``head`` (``model.head``) and ``other`` parameters."""
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    seen: set[int] = set()
    out: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for group, part in (("backbone", body), ("head", head)):
        if isinstance(part, nn.Module):
            for p in part.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[group].append(p)
    out["other"] = [p for p in model.parameters() if id(p) not in seen]
    return out


def param_groups(model: nn.Module, timescales: Timescales | None = None) -> list[dict[str, object]]:
    """Optimizer parameter groups, one per non-empty part of the model, each with its
    ``name``, the configured multiplier ``base_scale`` and the current ``lr_scale``."""
    scales = timescales.scales() if timescales is not None else {}
    groups = named_groups(model)
    missing = [g for g, s in scales.items() if s != 1.0 and not groups[g]]
    if missing:
        raise ValueError(
            f"timescales set a learning rate for {', '.join(missing)} but the model has no such part "
            "(models need .body and .head, as perennial's Classifier has)"
        )
    out: list[dict[str, object]] = []
    for name, params in groups.items():
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            s = float(scales.get(name, 1.0))
            out.append({"params": trainable, "name": name, "base_scale": s, "lr_scale": s})
    return out


def apply_lr_scales(optimizer: torch.optim.Optimizer, scales: Mapping[str, float]) -> None:
    """Set each group's ``lr_scale`` to its configured multiplier times ``scales[name]``."""
    bad = [k for k in scales if k not in GROUPS]
    if bad:
        raise ValueError(f"lr_scales names unknown parameter groups {bad}; groups are {', '.join(GROUPS)}")
    for g in optimizer.param_groups:
        name = g.get("name")
        s = scales.get(name, 1.0)
        if s < 0:
            raise ValueError(f"learning-rate multiplier for {name!r} must be >= 0, got {s}")
        g["lr_scale"] = float(g.get("base_scale", 1.0)) * float(s)


def with_teachers(strategy: Strategy, timescales: Timescales | None) -> Strategy:
    """``strategy`` with the EMA copies of ``timescales.teachers`` composed in front (so that
    ``predict_with`` takes precedence over the strategy's own prediction)."""
    if timescales is None or not timescales.teachers:
        return strategy
    return compose(Teachers(decays=dict(timescales.teachers), predict_with=timescales.predict_with), strategy)
