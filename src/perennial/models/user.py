"""Your own models: any ``nn.Module`` and ``package.module:factory`` names.

A model perennial trains is called ``model(x, t)`` (``t``: task ids, used by multi-head
models). :func:`as_model` accepts any ``nn.Module``:

- a :class:`~perennial.models.Classifier` (``body``, ``head``, ``feature_dim``) or any module
  whose ``forward`` takes ``(x, t)`` is used as it is;
- a module whose ``forward`` takes only ``x`` is wrapped in :class:`PlainModule`, which calls
  ``module(x)``; in the task-incremental scenario it masks the logits of the classes outside
  each sample's task (exactly a separate head per task, as :class:`~perennial.models.MultiHead`).

What a model offers (its *capabilities*, :func:`capabilities`) is checked against what the
strategy needs before training (:func:`check_model`), so a mismatch is a clear error and not a
crash deep inside an experience. See docs/your-own-model.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import ConfigDict, create_model
from torch import Tensor, nn

#: what a strategy may need from a model, and how to provide it
CAPABILITIES: dict[str, str] = {
    "features": "a features(x) method returning (B, feature_dim) and an int feature_dim attribute "
    "(perennial.models.Classifier(body, head, feature_dim) has both)",
    "linear_head": "a head attribute whose .linear is an nn.Linear over the features "
    "(perennial.models.Classifier with perennial.models.SingleHead or MultiHead)",
    "body_head": "body and head sub-modules (perennial.models.Classifier), so they get their own learning rates",
}


def takes_task_ids(module: nn.Module) -> bool:
    """Whether ``module.forward`` accepts a second positional argument (the task ids)."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())


class PlainModule(nn.Module):
    """Wraps a module with ``forward(x) -> logits`` so that it is called as ``model(x, t)``.

    ``task_classes`` (task-incremental streams) gives the classes of each task: logits of
    classes outside a sample's task are set to ``MASK_VALUE``, which makes the one output
    layer act as one head per task. The wrapped module stays the user's object: training
    changes its weights in place.
    """

    def __init__(self, module: nn.Module, n_classes: int | None = None, task_classes: Sequence[Sequence[int]] = ()):
        super().__init__()
        self.module = module
        if task_classes:
            assert n_classes is not None
            mask = torch.zeros(len(task_classes), n_classes, dtype=torch.bool)
            for k, cs in enumerate(task_classes):
                mask[k, list(cs)] = True
            self.register_buffer("task_mask", mask, persistent=False)
        else:
            self.task_mask: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        from perennial.models import MASK_VALUE

        logits = self.module(x)
        if self.task_mask is None or t is None:
            return logits
        return logits.masked_fill(~self.task_mask[t], MASK_VALUE)


def as_model(
    module: nn.Module, n_classes: int | None = None, task_classes: Sequence[Sequence[int]] | None = None
) -> nn.Module:
    """``module`` callable as ``model(x, t)``: itself, or wrapped in :class:`PlainModule`."""
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"a model must be a torch.nn.Module, got {type(module).__name__}; "
            "pass an instance (MyNet()), not the class or a function"
        )
    if isinstance(module, PlainModule) or takes_task_ids(module):
        return module
    return PlainModule(module, n_classes, task_classes or ())


def capabilities(model: nn.Module) -> set[str]:
    """What ``model`` offers strategies (keys of :data:`CAPABILITIES`)."""
    caps: set[str] = set()
    if callable(getattr(model, "features", None)) and isinstance(getattr(model, "feature_dim", None), int):
        caps.add("features")
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module) and isinstance(getattr(model, "body", None), nn.Module):
        caps.add("body_head")
    if isinstance(getattr(head, "linear", None), nn.Linear):
        caps.add("linear_head")
    return caps


def missing_capabilities(model: nn.Module, needs: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(field, message)`` for every user of the model (``needs``: who -> capabilities) that
    lacks something; the message names who, what is missing and how to provide it."""
    have = capabilities(model)
    inner = model.module if isinstance(model, PlainModule) else model
    problems = []
    for who, caps in needs.items():
        for cap in sorted(caps - have):
            problems.append(
                (
                    "model",
                    f"{who} needs the model's {cap!r}, which {type(inner).__name__} does not provide; "
                    f"give the model {CAPABILITIES[cap]}, or use a strategy that does not need it (docs/your-own-model.md)",
                )
            )
    return problems


def factory_spec(name: str, factory: Callable[..., Any]) -> Any:
    """A :class:`~perennial.models.ModelSpec` for a plug-in factory.

    The factory is called ``factory(input_shape, n_classes, **params)`` (plus ``task_classes=``
    when it takes that argument) and returns an ``nn.Module``; ``params`` are the other
    ``model.*`` keys of the config, validated against the factory's keyword arguments.
    """
    from perennial.models import ModelSpec

    if isinstance(factory, ModelSpec):
        return factory
    if not callable(factory) or isinstance(factory, nn.Module):
        raise ValueError(
            "is not a model factory; give a function (or class) called as "
            "factory(input_shape, n_classes, **params) that returns an nn.Module"
        )
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        raise ValueError("has no inspectable signature; wrap it in a plain Python function") from None
    params = list(sig.parameters.values())
    positional = [
        p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2 and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        raise ValueError(
            f"takes {sig}, but a model factory is called as factory(input_shape, n_classes, **params); "
            "add those two arguments (use them or not)"
        )
    takes_tasks = "task_classes" in sig.parameters
    fields: dict[str, Any] = {}
    for p in params[2:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or p.name == "task_classes":
            continue
        ann = Any if p.annotation is inspect.Parameter.empty or isinstance(p.annotation, str) else p.annotation
        fields[p.name] = (ann, ... if p.default is inspect.Parameter.empty else p.default)
    extra = "allow" if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) else "forbid"
    params_model = create_model(  # type: ignore[call-overload]
        f"Params_{getattr(factory, '__name__', 'factory')}", __config__=ConfigDict(extra=extra), **fields
    )

    def build(
        input_shape: Sequence[int], n_classes: int, *, task_classes: Sequence[Sequence[int]] | None = None, **kw: Any
    ) -> nn.Module:
        extra_kw = {"task_classes": task_classes} if takes_tasks else {}
        module = factory(tuple(input_shape), n_classes, **kw, **extra_kw)
        if not isinstance(module, nn.Module):
            raise ValueError(f"model factory {name!r} returned {type(module).__name__}, not an nn.Module")
        return as_model(module, n_classes, None if takes_tasks else task_classes)

    doc = (inspect.getdoc(factory) or "").strip().splitlines()
    return ModelSpec(name, build, params_model, doc[0] if doc else f"your model ({name})")
