"""Augmentation presets of SiamPose's Table 5, with torchvision transforms v2, on uint8 CHW
tensors. Each view gets its own draw; the horizontal flip is decided once per example
(`flip_views`), as in the paper's synchronised video-level flips.

- PX: pixel-only: colour jitter, grayscale, Gaussian blur (SimCLR's parameters)
- ULC+PX: ultra-light crop (rescale < 20%, aspect kept) + PX
- LC+PX: light crop (rescale < 40%, aspect kept) + PX
- Full: SimCLR's random resized crop (scale 0.2-1, aspect 3/4-4/3) + PX
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

Preset = Literal["px", "ulc_px", "lc_px", "full"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CROP_SCALE = {
    "ulc_px": ((0.8, 1.0), (1.0, 1.0)),
    "lc_px": ((0.6, 1.0), (1.0, 1.0)),
    "full": ((0.2, 1.0), (3 / 4, 4 / 3)),
}


def _pixel_ops(size: int) -> list:
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return [
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
    ]


def view_transform(preset: Preset, size: int) -> v2.Compose:
    """uint8 CHW (any size) -> augmented uint8 CHW of `size` x `size` (see `normalize`)."""
    if preset == "px":
        geometry = [v2.Resize((size, size), antialias=True)]
    elif preset in _CROP_SCALE:
        scale, ratio = _CROP_SCALE[preset]
        geometry = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; use px, ulc_px, lc_px or full")
    return v2.Compose([*geometry, *_pixel_ops(size)])


def eval_transform(size: int) -> v2.Resize:
    """Deterministic: resize the (already cropped) view; uint8 in, uint8 out."""
    return v2.Resize((size, size), antialias=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float32 normalised with ImageNet's statistics. Done on the
    device the model runs on: loader workers hand over uint8 views, 4x fewer bytes than floats."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255 - mean) / std


def flip_views(views: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """One horizontal-flip decision for every view of an example."""
    if torch.rand((), generator=generator) < 0.5:
        return [view.flip(-1) for view in views]
    return views
