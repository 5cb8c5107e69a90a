"""Augmentation presets of SiamPose's Table 5, with torchvision transforms v2, on uint8 CHW
tensors. Each view gets its own draw; the horizontal flip is decided once per example
(`flip_views`), as in the paper's synchronised video-level flips.

- PX: pixel-only: colour jitter, grayscale, Gaussian blur (SimCLR's parameters)
- ULC+PX: ultra-light crop (rescale < 20%, aspect kept) + PX
- LC+PX: light crop (rescale < 40%, aspect kept) + PX
- Full: SimCLR's random resized crop (scale 0.2-1, aspect 3/4-4/3) + PX
- MoCo-v2 (Chen et al. 2020, moco's main_moco.py with --aug-plus): Full's crop and pixel
  operations with a horizontal flip drawn for each view (on top of the shared flip: each view is
  then flipped with probability 1/2 independently of the other)
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

Preset = Literal["px", "ulc_px", "lc_px", "full", "mocov2"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Random-resized-crop (scale, ratio) ranges of the cropping presets (`px` does not crop).
CROP_SCALES = {
    "ulc_px": ((0.8, 1.0), (1.0, 1.0)),
    "lc_px": ((0.6, 1.0), (1.0, 1.0)),
    "full": ((0.2, 1.0), (3 / 4, 4 / 3)),
    "mocov2": ((0.2, 1.0), (3 / 4, 4 / 3)),
}
#: Presets that flip each view on its own as well.
PER_VIEW_FLIP = {"mocov2"}
# SimCLR's pixel operations: jitter strengths (brightness, contrast, saturation, hue), the
# probability of each operation, and the blur's sigma range.
COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)


class SeparableGaussianBlur(torch.nn.Module):
    """SimCLR's blur (sigma drawn uniformly from `sigma`, reflected borders) on uint8 CHW, as a
    horizontal then a vertical 1-D pass: torchvision's 2-D kernel is the outer product of the
    same 1-D one, so the output matches it (to rounding) at 2k instead of k^2 multiplies a
    pixel (at 224 px, k = 23: the blur took 40% of a worker's time)."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size, self.sigma = kernel_size, sigma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        sigma = float(torch.empty(1).uniform_(*self.sigma))
        half = self.kernel_size // 2
        x = torch.linspace(-half, half, self.kernel_size)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        channels = image.shape[-3]
        out = F.pad(image.float().unsqueeze(0), (half, half, half, half), mode="reflect")
        out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
        return out.squeeze(0).round_().clamp_(0, 255).to(image.dtype)


def shift_hue(image: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """torchvision's `adjust_hue` of a uint8 RGB image (3, H, W) through OpenCV's float32 HSV:
    the same rotation of the hue circle by `hue_factor` (a fraction of it, in [-0.5, 0.5]),
    with value and saturation kept, and torchvision's float -> uint8 step (x (256 - 1e-3),
    truncated). The two agree to one grey level, on about 1e-5 of the values (float rounding
    at a level's edge), at about 5x the speed (torchvision's tensor HSV took ~90 % of the CPU
    path's colour jitter). Other dtypes and channel counts go to torchvision."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        return v2.functional.adjust_hue(image, hue_factor)
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor ({hue_factor}) is not in [-0.5, 0.5]")
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) * np.float32(1 / 255)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float: hue in degrees [0, 360)
    hue = hsv[..., 0]
    hue += np.float32(360 * hue_factor)
    np.mod(hue, np.float32(360), out=hue)
    shifted = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(256 - 1e-3)
    return torch.from_numpy(shifted.astype(np.uint8)).permute(2, 0, 1).contiguous()


class ColorJitter(v2.ColorJitter):
    """torchvision's ColorJitter (the same draws: a random order of the four operations and
    their factors) with its hue step done by `shift_hue`; the other three by torchvision."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        order = [int(op) for op in params["fn_idx"]]
        if params["hue_factor"] is None or type(inpt) is not torch.Tensor:
            return super().transform(inpt, params)
        hue_at = order.index(3)
        without_hue = {**params, "hue_factor": None}
        out = super().transform(inpt, {**without_hue, "fn_idx": order[:hue_at]})
        out = shift_hue(out, params["hue_factor"])
        return super().transform(out, {**without_hue, "fn_idx": order[hue_at + 1 :]})


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, odd, at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _pixel_ops(size: int) -> list:
    return [
        v2.RandomApply([ColorJitter(*COLOR_JITTER)], p=COLOR_JITTER_P),
        v2.RandomGrayscale(p=GRAYSCALE_P),
        v2.RandomApply([SeparableGaussianBlur(blur_kernel_size(size), sigma=BLUR_SIGMA)], p=BLUR_P),
    ]


def view_transform(preset: Preset, size: int) -> v2.Compose:
    """uint8 CHW (any size) -> augmented uint8 CHW of `size` x `size` (see `normalize`)."""
    if preset == "px":
        geometry = [v2.Resize((size, size), antialias=True)]
    elif preset in CROP_SCALES:
        scale, ratio = CROP_SCALES[preset]
        geometry = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
    else:
        raise ValueError(
            f"unknown augmentation preset {preset!r}; use px, ulc_px, lc_px, full or mocov2"
        )
    flips = [v2.RandomHorizontalFlip()] if preset in PER_VIEW_FLIP else []
    return v2.Compose([*geometry, *_pixel_ops(size), *flips])


def pixel_transform(size: int) -> v2.Compose:
    """The pixel operations alone (PX without its resize), for views whose geometry is already
    done and must not change (PiCo's point views): uint8 CHW in, uint8 CHW out, same size;
    `size` sets the blur kernel."""
    return v2.Compose(_pixel_ops(size))


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
