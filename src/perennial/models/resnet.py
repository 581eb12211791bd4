"""ResNets for continual learning on small images (CIFAR-sized stems).

- ``resnet18-reduced``: the ResNet-18 of Lopez-Paz & Ranzato (GEM, 2017), also used by
  Mammoth and many replay papers: 3x3 stem without max-pool, four stages of two basic blocks
  with ``nf, 2nf, 4nf, 8nf`` channels and ``nf = 20`` (about 1.1 M parameters), global
  average pooling, 160 features.
- ``resnet18``: the same network at full width (``nf = 64``, 512 features, ~11 M parameters).
- ``resnet32``: the CIFAR ResNet-32 of He et al. (2016) used by iCaRL/PyCIL: three stages of
  five basic blocks with 16, 32, 64 channels (64 features). Shortcuts that change shape are
  1x1 convolutions with batch norm (He et al.'s option B; PyCIL pads with zeros, option A).

Every body starts with an :class:`InputStage`: uint8 images are scaled to [0, 1], moved to the
model's device (non-blocking) and normalised with the chosen per-channel mean and std, so the
data stay uint8 in memory, on disk and in replay buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from perennial.models.augment import Augmenter

#: per-channel (mean, std) of the usual recipes, for inputs scaled to [0, 1]
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
Normalize = Literal["none", "cifar10", "cifar100", "imagenet"]


class InputStage(nn.Module):
    """uint8 -> float in [0, 1] on the model's device, then ``(x - mean) / std`` per channel."""

    def __init__(self, channels: int, normalize: str = "none"):
        super().__init__()
        mean, std = NORMALIZATIONS.get(normalize, ((0.0,) * channels, (1.0,) * channels))
        if len(mean) != channels:  # e.g. grayscale images with an RGB recipe: average the channels
            mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.normalize = normalize
        self.channels_last = False  # set by fit when train.channels_last is on
        self.augment: Augmenter | None = None  # set by fit from train.augment; only in training mode

    def forward(self, x: Tensor) -> Tensor:
        if x.device != self.mean.device:
            x = x.to(self.mean.device, non_blocking=True)
        if self.training and self.augment is not None:
            x = self.augment(x)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.normalize != "none":
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """3x3 stem (CIFAR: no max-pool) -> stages of basic blocks -> global average pool -> (B, width)."""

    def __init__(self, in_channels: int, widths: Sequence[int], blocks: Sequence[int], stem: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        layers: list[nn.Module] = []
        c = stem
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*layers)
        self.out_features = c

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


class ResNet18ReducedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nf: int = Field(default=20, ge=1, description="width of the first stage (20: GEM's reduced ResNet-18)")
    normalize: Normalize = Field(default="none", description="input normalisation: none, cifar10, cifar100, imagenet")


class ResNet18Params(ResNet18ReducedParams):
    nf: int = Field(default=64, ge=1, description="width of the first stage (64: the standard ResNet-18)")


class ResNet32Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nf: int = Field(default=16, ge=1, description="width of the first stage (16: He et al.'s CIFAR ResNet-32)")
    normalize: Normalize = Field(default="none", description="input normalisation: none, cifar10, cifar100, imagenet")


def _check_images(input_shape: Sequence[int], name: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(
            f"{name} needs images of shape (C, H, W), got inputs of shape {tuple(input_shape)}; use mlp or cnn"
        )
    return int(input_shape[0])


def _classifier(body: ResNetTrunk, channels: int, normalize: str, n_classes: int, task_classes: object) -> nn.Module:
    from perennial.models import Classifier, make_head

    full = nn.Sequential(InputStage(channels, normalize), body)
    return Classifier(full, make_head(body.out_features, n_classes, task_classes), body.out_features)  # type: ignore[arg-type]


def resnet18(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    nf: int = 64,
    normalize: str = "none",
    task_classes: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    """ResNet-18 with a CIFAR stem; ``nf=20`` is the reduced ResNet-18 of GEM/Mammoth."""
    c = _check_images(input_shape, "resnet18")
    trunk = ResNetTrunk(c, [nf, 2 * nf, 4 * nf, 8 * nf], [2, 2, 2, 2], stem=nf)
    return _classifier(trunk, c, normalize, n_classes, task_classes)


def resnet32(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    nf: int = 16,
    normalize: str = "none",
    task_classes: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    """CIFAR ResNet-32 (3 stages x 5 basic blocks, 16/32/64 channels)."""
    c = _check_images(input_shape, "resnet32")
    trunk = ResNetTrunk(c, [nf, 2 * nf, 4 * nf], [5, 5, 5], stem=nf)
    return _classifier(trunk, c, normalize, n_classes, task_classes)
