"""Small image classifiers with batch normalisation: source models for test-time adaptation.

Test-time adaptation methods such as BN-adapt, Tent, EATA and SAR adapt the normalisation
layers (their statistics, and their affine parameters), so their source models need them.
Both builders take images (C, H, W) and are small enough to train on the CPU in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from perennial.models import Classifier, make_head
from perennial.models.resnet import BasicBlock  # the one residual block (also the CIFAR ResNets)


class CNNBNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(default=[32, 64], description="channels of the conv-BN-ReLU-pool blocks")
    hidden: int = Field(default=128, ge=1, description="width of the dense layer (followed by BatchNorm1d)")


class ResNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    widths: list[int] = Field(default=[16, 32, 64], description="channels of the stages (one basic block each)")
    blocks: int = Field(default=1, ge=1, description="basic blocks per stage (1: ResNet-8)")


def _check_image(input_shape: Sequence[int], name: str) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs images of shape (C, H, W), got {tuple(input_shape)}; use mlp or cnn")


def cnn_bn(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> Classifier:
    """[Conv3x3 -> BatchNorm2d -> ReLU -> MaxPool2] per channel width, then Linear -> BatchNorm1d -> ReLU."""
    _check_image(input_shape, "cnn-bn")
    layers: list[nn.Module] = []
    c_in, h, w = input_shape
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c_in = c
    layers += [nn.Flatten(), nn.Linear(c_in * h * w, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
    return Classifier(nn.Sequential(*layers), make_head(hidden, n_classes, task_classes), hidden)


def resnet(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int = 1,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> Classifier:
    """A small ResNet: conv-BN-ReLU stem, stages of basic blocks (stride 2 after the first), global average pool."""
    _check_image(input_shape, "resnet")
    if not widths:
        raise ValueError("resnet needs at least one stage width, e.g. widths=[16, 32, 64]")
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    c_in = widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks):
            layers.append(BasicBlock(c_in, w, 2 if i > 0 and b == 0 else 1))
            c_in = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), make_head(c_in, n_classes, task_classes), c_in)
