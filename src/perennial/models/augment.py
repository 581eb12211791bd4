"""Seeded image augmentation as batched tensor operations on the model's device.

Recipes (``train.augment``):

- ``crop-flip`` / ``cifar``: zero-pad by 4 pixels, take a random HxW crop, flip horizontally
  with probability 1/2 (the standard CIFAR recipe). One gather does crop and flip together,
  works on uint8 and float inputs, and keeps uint8 images uint8.
- ``imagenet``: a random resized crop (area 8%-100%, aspect ratio 3/4-4/3) back to HxW
  and a horizontal flip, as one ``affine_grid``/``grid_sample`` over the batch (bilinear);
  returns floats in [0, 1].
- ``flip``: horizontal flip only.

Augmentation runs inside the image models' input stage while the model is in training mode,
so the current batch and replayed samples are augmented alike (as in Mammoth), buffers keep
the raw uint8 images, and evaluation never sees it. ``fit`` re-seeds the generator at every
step from the run seed and the step number, so results do not depend on how many forward
passes came before: exact resume holds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RECIPES = ("none", "flip", "crop-flip", "cifar", "imagenet")


def crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4, crop: bool = True) -> Tensor:
    """Random crop of the zero-padded batch plus a random horizontal flip; any dtype."""
    b, _, h, w = x.shape
    dev = x.device
    flip = torch.rand(b, generator=gen, device=dev) < 0.5
    if crop and pad > 0:
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=dev)
        x = F.pad(x, (pad, pad, pad, pad))
    else:
        oy = ox = torch.zeros(b, dtype=torch.long, device=dev)
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h  # (B, H)
    cols = torch.where(flip[:, None], ox[:, None] + (w - 1 - ar_w), ox[:, None] + ar_w)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = x[bi, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_resized_crop(
    x: Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.75, 4 / 3),
) -> Tensor:
    """Random resized crop + horizontal flip of every image, one ``grid_sample`` for the batch."""
    b = x.shape[0]
    dev = x.device
    xf = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    area = torch.empty(b, device=dev).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = log_r.exp()
    sw = (area * r).sqrt().clamp(max=1.0)  # crop width and height as fractions of the image
    sh = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen, device=dev) * 2 - 1) * (1 - sw)  # centre in [-1, 1] keeping the crop inside
    cy = (torch.rand(b, generator=gen, device=dev) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    return F.grid_sample(xf, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply(x: Tensor, recipe: str, gen: torch.Generator) -> Tensor:
    if recipe == "none" or x.ndim != 4:
        return x
    if recipe in ("crop-flip", "cifar"):
        return crop_flip(x, gen)
    if recipe == "flip":
        return crop_flip(x, gen, crop=False)
    if recipe == "imagenet":
        return random_resized_crop(x, gen)
    raise ValueError(f"unknown augmentation {recipe!r}; use one of {', '.join(RECIPES)}")


class Augmenter:
    """The augmentation state of one model: a recipe and a generator re-seeded every step."""

    def __init__(self, recipe: str = "none"):
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation {recipe!r}; use one of {', '.join(RECIPES)}")
        self.recipe = recipe
        self._gen: torch.Generator | None = None
        self._seed = 0

    def __deepcopy__(self, memo: dict[int, object]) -> Augmenter:  # model copies (teachers) get a fresh generator
        new = Augmenter(self.recipe)
        new._seed = self._seed
        return new

    def reseed(self, seed: int) -> None:
        self._seed = int(seed)
        if self._gen is not None:
            self._gen.manual_seed(self._seed)

    def __call__(self, x: Tensor) -> Tensor:
        if self.recipe == "none":
            return x
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self._seed)
        return apply(x, self.recipe, self._gen)
