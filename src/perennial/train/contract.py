"""The model contract, checked once at fit start (see docs/your-own-model.md).

``prepare_model`` makes any ``nn.Module`` callable as ``model(x, t)`` (wrapping a
``forward(x)`` module), checks that it offers what the strategy (and the timescales) need,
and calls it once on two test samples, so that a model that does not fit the stream fails
with a message naming the problem and the fix before any training, not inside evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from perennial.errors import ConfigError
from perennial.models.user import as_model, missing_capabilities
from perennial.strategies.base import Strategy
from perennial.streams.core import Stream
from perennial.train.timescales import Timescales


def prepare_model(
    model: nn.Module, stream: Stream, strategy: Strategy, timescales: Timescales | None = None
) -> nn.Module:
    """``model`` ready for ``fit``: wrapped if needed, its capabilities and output shape checked."""
    try:
        model = as_model(model, stream.n_classes, stream.task_classes if stream.scenario == "task" else None)
    except TypeError as e:
        raise ConfigError([("model", str(e))], header="model does not fit") from None
    needs: dict[str, set[str]] = {}
    for part in strategy.parts():
        if part.model_needs():
            needs[f"strategy {part.name!r}"] = part.model_needs()
    if timescales is not None and any(s != 1.0 for s in timescales.scales().values()):
        needs["timescales.backbone_lr/head_lr"] = {"body_head"}
    problems = missing_capabilities(model, needs)
    if not problems and stream.kind == "classification":
        problems = _probe(model, stream)
    if problems:
        raise ConfigError(problems, header="model does not fit this run")
    return model


def _probe(model: nn.Module, stream: Stream) -> list[tuple[str, str]]:
    """Call the model on two test samples (eval mode, no gradients, no state change)."""
    exp = next((e for e in stream.experiences if len(e.test) or len(e.train)), None)
    if exp is None:
        return []
    split = exp.test if len(exp.test) else exp.train
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, t = split.x[:2].to(device), split.t[:2].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x, t)
    except Exception as e:  # the user's module: any failure is reported with the input it got
        return [
            (
                "model",
                f"calling the model on a batch of shape {tuple(x.shape)} ({x.dtype}) failed: {type(e).__name__}: {e}; "
                f"the stream's inputs have shape {tuple(stream.input_shape)} per sample",
            )
        ]
    finally:
        model.train(was_training)
    if (
        not isinstance(out, torch.Tensor)
        or out.dim() != 2
        or out.shape[0] != len(x)
        or out.shape[1] != stream.n_classes
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [
            (
                "model",
                f"the model returns {got} for a batch of {len(x)}, but a classifier must return logits of shape "
                f"(batch, {stream.n_classes}) for this stream's {stream.n_classes} classes; "
                f"make its last layer output {stream.n_classes} values",
            )
        ]
    return []
