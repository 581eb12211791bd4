"""``timm:NAME``: any timm backbone (ResNets, ConvNeXts, ViT-S/B, ...) as a :class:`Classifier`.

The backbone is created with ``num_classes=0`` (its pooled features), behind the same
:class:`~perennial.models.resnet.InputStage` as the built-in ResNets (uint8 -> float, device,
normalisation, augmentation) and in front of perennial's heads (single, multi-head), so every
strategy sees ``body`` / ``head`` / ``features`` as with a built-in model.

``pretrained``: ``"hub"`` downloads timm's weights (online), a file path loads local weights
(``.safetensors``, ``.pth``, ``.bin``: timm's own checkpoint of that model), unset: random init.

timm imports torchvision. Where torchvision is installed but its compiled operators do not
load with this torch (a CPU-only torch next to a torchvision wheel built for another one:
``RuntimeError: operator torchvision::nms does not exist``), perennial declares the schemas
of torchvision's operators with ``torch.library`` and imports again: the Python parts of
torchvision that timm uses (module definitions, transforms) then work; its compiled
detection operators (nms, roi_align, ...) still do not, and no backbone needs them. Without
torchvision, ``timm:`` gives an error that says what to install.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from perennial.errors import ConfigError
from perennial.models.resnet import InputStage, Normalize

#: torchvision operators whose fake/meta kernels torchvision registers at import
TORCHVISION_OPS = (
    "nms",
    "qnms",
    "roi_align",
    "_roi_align_backward",
    "ps_roi_align",
    "_ps_roi_align_backward",
    "roi_pool",
    "_roi_pool_backward",
    "ps_roi_pool",
    "_ps_roi_pool_backward",
    "qroi_align",
    "deform_conv2d",
    "_deform_conv2d_backward",
)
_declared: list[Any] = []  # keeps the torch.library.Library alive


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pretrained: str | None = Field(
        default=None, description="timm: 'hub' (download, online) or a local weights file; unset: random init"
    )
    img_size: int | None = Field(default=None, ge=1, description="timm: input size for ViTs (default: the data's)")
    normalize: Normalize = Field(default="none", description="input normalisation (pre-trained ViTs: imagenet)")
    options: dict[str, Any] = Field(default_factory=dict, description="timm: extra timm.create_model arguments")


def _fix(torch_version: str) -> str:
    return (
        f"install timm and the torchvision built for your torch {torch_version} "
        "(pip install 'perennial[timm]' torchvision; see docs/real-data.md)"
    )


def _declare_torchvision_schemas() -> None:
    if _declared:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for op in TORCHVISION_OPS:
        if not hasattr(torch.ops.torchvision, op):
            lib.define(f"{op}(Tensor[] args) -> Tensor")
    _declared.append(lib)


def _purge(*packages: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]


def import_timm() -> ModuleType:
    """``import timm``, working around a torchvision whose operators do not load; else a clear error."""
    try:
        return importlib.import_module("timm")
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing in ("timm", "torchvision", "huggingface_hub", "safetensors", "yaml"):
            raise ConfigError(
                [
                    (
                        "model.name",
                        f"timm:NAME needs the package {missing!r}, which is not installed; {_fix(torch.__version__)}",
                    )
                ]
            ) from None
        raise
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    _purge("timm", "torchvision")
    _declare_torchvision_schemas()
    try:
        return importlib.import_module("timm")
    except Exception as e:
        raise ConfigError(
            [("model.name", f"timm cannot be imported here ({type(e).__name__}: {e}); {_fix(torch.__version__)}")]
        ) from None


def timm_backbone(
    name: str,
    input_shape: Sequence[int],
    n_classes: int,
    *,
    pretrained: str | None = None,
    img_size: int | None = None,
    normalize: str = "none",
    options: dict[str, Any] | None = None,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    from perennial.models import Classifier, make_head

    if len(input_shape) != 3:
        raise ValueError(f"timm:{name} needs images of shape (C, H, W), got inputs of shape {tuple(input_shape)}")
    timm = import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"timm has no model {name!r}; {hint}list them with: python -c \"import timm; print(timm.list_models('*vit*'))\""
        )
    kw: dict[str, Any] = {"num_classes": 0, "in_chans": int(input_shape[0]), **(options or {})}
    if img_size is not None or "vit" in name or "deit" in name:
        kw.setdefault("img_size", img_size or int(input_shape[-1]))
    if pretrained is not None:
        kw["pretrained"] = True
        if pretrained != "hub":
            kw["pretrained_cfg_overlay"] = {"file": pretrained}
    try:
        body = timm.create_model(name, **kw)
    except (TypeError, ValueError, RuntimeError, OSError) as e:
        raise ValueError(f"timm could not create {name!r} with {kw}: {e}") from None
    width = int(body.num_features)
    stage = InputStage(int(input_shape[0]), normalize)
    return Classifier(nn.Sequential(stage, body), make_head(width, n_classes, task_classes), width)
