"""The accelerator path of ``fit``: autocast, the fp16 gradient scaler, and the model's input
options (on-device augmentation, ``channels_last``, ``torch.compile``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from perennial.errors import ConfigError
from perennial.models.augment import Augmenter
from perennial.train.settings import TrainSettings


def autocast_for(device: torch.device, precision: str) -> Callable[[], Any]:
    """A context-manager factory for the forward pass: bf16/fp16 autocast or nothing."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (its range underflows small gradients); bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _input_stages(model: torch.nn.Module) -> list[Any]:
    from perennial.models.resnet import InputStage

    return [m for m in model.modules() if isinstance(m, InputStage)]


def attach_input_options(model: torch.nn.Module, s: TrainSettings) -> Augmenter | None:
    """Give the model's input stage the run's augmentation and memory format; compile it.

    Returns the :class:`Augmenter` that ``fit`` re-seeds at every step (None without one).
    """
    stages = _input_stages(model)
    if (s.augment != "none" or s.channels_last) and not stages:
        what = "train.augment" if s.augment != "none" else "train.channels_last"
        raise ConfigError(
            [(what, "needs an image model with an input stage (resnet18-reduced, resnet18, resnet32, timm:NAME)")]
        )
    augmenter = Augmenter(s.augment) if s.augment != "none" else None
    for stage in stages:
        stage.augment = augmenter
        stage.channels_last = s.channels_last
    if s.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if s.compile:
        if not hasattr(model, "compile"):
            raise ConfigError([("train.compile", "this torch has no nn.Module.compile; upgrade torch or drop it")])
        model.compile()  # in place: state_dict keys, strategies and checkpoints are unchanged
    return augmenter
