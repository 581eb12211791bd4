"""Models: named builders for small classifiers, single-head and multi-head.

Every classifier is a :class:`Classifier` = ``body`` (features) + ``head`` (logits), so that
strategies can use features (iCaRL, nearest-mean classifiers) and give the two parts their own
learning rates. ``forward(x, t)`` takes the task ids ``t``; only multi-head models use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from perennial.registry import Registry

#: Logit given to classes outside the sample's task in multi-head models. Finite (not -inf)
#: so that distillation losses stay finite; small enough that softmax gives exactly 0, and
#: representable in float16/bfloat16.
MASK_VALUE = -1.0e4


class MultiHead(nn.Module):
    """One head per task, stored as one linear layer whose rows are masked per task.

    Masking the logits of the other tasks' classes is exactly a separate head per task: the
    loss and the prediction only see the rows of the sample's task, so only those rows get
    gradients.
    """

    def __init__(self, in_features: int, n_classes: int, task_classes: Sequence[Sequence[int]]):
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)
        mask = torch.zeros(len(task_classes), n_classes, dtype=torch.bool)
        for k, cs in enumerate(task_classes):
            mask[k, list(cs)] = True
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, h: Tensor, t: Tensor | None = None) -> Tensor:
        logits = self.linear(h)
        if t is None:
            return logits
        return logits.masked_fill(~self.mask[t], MASK_VALUE)


class SingleHead(nn.Module):
    def __init__(self, in_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)

    def forward(self, h: Tensor, t: Tensor | None = None) -> Tensor:
        return self.linear(h)


class Classifier(nn.Module):
    """``body`` maps inputs to features of size ``feature_dim``; ``head`` maps them to logits."""

    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int):
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim

    def features(self, x: Tensor) -> Tensor:
        return self.body(self._input(x))

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.head(self.body(self._input(x)), t)

    def _input(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8 and x.device.type == "cpu":  # images read from disk: to the model's device
            dev = next(self.parameters()).device
            if dev.type != "cpu":
                x = x.to(dev, non_blocking=True)
        return as_float(x)


def as_float(x: Tensor) -> Tensor:
    """uint8 images (kept uint8 in memory, on disk and in buffers) as floats in [0, 1]; other
    inputs unchanged. Image models' own input stage (``models.resnet.InputStage``) also moves
    them to the model's device and normalises them."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def make_head(in_features: int, n_classes: int, task_classes: Sequence[Sequence[int]] | None) -> nn.Module:
    if task_classes:
        return MultiHead(in_features, n_classes, task_classes)
    return SingleHead(in_features, n_classes)


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[int] = Field(default=[400, 400], description="widths of the hidden layers")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    def model_post_init(self, _: Any) -> None:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")


class CNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(default=[32, 64], description="channels of the conv blocks")
    kernel_size: int = Field(default=3, ge=1)
    hidden: int = Field(default=128, ge=1, description="width of the dense layer after the convs")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


def mlp(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    hidden: Sequence[int] = (400, 400),
    dropout: float = 0.0,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> Classifier:
    """Flatten -> [Linear -> ReLU (-> Dropout)] x len(hidden) -> head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    return Classifier(nn.Sequential(*layers), make_head(width, n_classes, task_classes), width)


def cnn(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    hidden: int = 128,
    dropout: float = 0.0,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> Classifier:
    """Small CNN: 1D for inputs (C, L), 2D for (C, H, W); conv-ReLU-maxpool blocks, then dense."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"cnn needs inputs of shape (C, L) or (C, H, W), got {tuple(input_shape)}; use mlp for flat features"
        )
    two_d = len(input_shape) == 3
    conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
    layers: list[nn.Module] = []
    c_in, spatial = input_shape[0], list(input_shape[1:])
    for c in channels:
        layers += [conv(c_in, c, kernel_size, padding=kernel_size // 2), nn.ReLU()]
        if min(spatial) >= 2:
            layers.append(pool(2))
            spatial = [s // 2 for s in spatial]
        c_in = c
    layers += [nn.Flatten(), nn.Linear(c_in * math.prod(spatial), hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return Classifier(nn.Sequential(*layers), make_head(hidden, n_classes, task_classes), hidden)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]  # a Classifier for the built-in names
    params: type[BaseModel]
    description: str
    kind: str = "classification"  # the stream kind it models: "classification" or "lm" (next-token)


def _adapt_model(name: str, obj: Any) -> ModelSpec:
    from perennial.models.user import factory_spec

    return factory_spec(name, obj)  # type: ignore[no-any-return]


#: model builders by name; ``package.module:factory`` names and ``perennial.models`` entry
#: points resolve to :func:`perennial.models.user.factory_spec` of the factory
MODELS: Registry[ModelSpec] = Registry("model", group="perennial.models", adapt=_adapt_model)
MODELS.add("mlp", ModelSpec("mlp", mlp, MLPParams, "multi-layer perceptron on flattened inputs"))
MODELS.add("cnn", ModelSpec("cnn", cnn, CNNParams, "small 1D/2D convolutional network"))

from perennial.models.resnet import ResNet18Params, ResNet18ReducedParams, ResNet32Params, resnet18, resnet32  # noqa: E402
from perennial.models.transformer import GPTParams, TinyGPTParams, generate, gpt  # noqa: E402

MODELS.add(
    "resnet18-reduced",
    ModelSpec(
        "resnet18-reduced",
        resnet18,  # type: ignore[arg-type]
        ResNet18ReducedParams,
        "ResNet-18 with nf=20 (Lopez-Paz & Ranzato 2017; GEM/Mammoth's standard), CIFAR stem, 160 features",
    ),
)
MODELS.add(
    "resnet18",
    ModelSpec("resnet18", resnet18, ResNet18Params, "ResNet-18 with a CIFAR stem (3x3, no max-pool), 512 features"),  # type: ignore[arg-type]
)
MODELS.add(
    "resnet32",
    ModelSpec("resnet32", resnet32, ResNet32Params, "CIFAR ResNet-32 (He et al. 2016; iCaRL/PyCIL), 64 features"),  # type: ignore[arg-type]
)

MODELS.add(
    "gpt", ModelSpec("gpt", gpt, GPTParams, "decoder-only transformer language model (default 4x256)", kind="lm")
)
MODELS.add(
    "tiny-gpt",
    ModelSpec("tiny-gpt", gpt, TinyGPTParams, "the gpt preset 2 layers x 128 wide (CPU-sized)", kind="lm"),
)

from perennial.models.bn import CNNBNParams, ResNetParams, cnn_bn, resnet  # noqa: E402

MODELS.add("cnn-bn", ModelSpec("cnn-bn", cnn_bn, CNNBNParams, "small 2D CNN with batch normalisation (TTA source)"))
MODELS.add("resnet", ModelSpec("resnet", resnet, ResNetParams, "small ResNet (ResNet-8) with batch normalisation"))


from perennial.models.icl import ICLParams, icl  # noqa: E402

MODELS.add(
    "icl",
    ModelSpec(
        "icl",
        icl,
        ICLParams,
        "transformer reading the last C labelled examples as context (in-context + SGD; strategy in-context)",
    ),
)


def _timm_spec(name: str) -> ModelSpec:
    from functools import partial

    from perennial.models.timm import TimmParams, timm_backbone

    return ModelSpec(f"timm:{name}", partial(timm_backbone, name), TimmParams, f"timm backbone {name}")


def _hf_spec(name: str) -> ModelSpec:
    from functools import partial

    from perennial.models.hf import HFParams, hf_causal_lm

    return ModelSpec(f"hf:{name}", partial(hf_causal_lm, name), HFParams, f"Hugging Face causal LM {name}", kind="lm")


MODELS.add_prefix("timm", _timm_spec)
MODELS.add_prefix("hf", _hf_spec)


def build_model(
    name: str,
    input_shape: Sequence[int],
    n_classes: int,
    task_classes: Sequence[Sequence[int]] | None = None,
    **params: Any,
) -> nn.Module:
    spec = MODELS.get(name, field="model.name")
    p = spec.params(**params)
    return spec.build(input_shape, n_classes, task_classes=task_classes, **p.model_dump())


__all__ = [
    "MASK_VALUE",
    "MODELS",
    "Classifier",
    "ModelSpec",
    "MultiHead",
    "SingleHead",
    "build_model",
    "cnn",
    "generate",
    "gpt",
    "mlp",
]
