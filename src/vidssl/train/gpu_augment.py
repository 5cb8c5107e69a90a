"""SiamPose's view augmentations (the presets of vidssl.train.augment) as batched tensor ops, for
training from frames held in accelerator memory: each view is cropped straight out of a bank of
frames with `roi_align`, then flipped, colour-jittered, greyed and blurred a whole batch at once.
Every op is a plain function of tensors (and a `torch.Generator` for the random ones); all run
on the CPU as well.

Images are float tensors (B, 3, H, W) holding values in [0, 255], uint8's range, so
`vidssl.train.augment.normalize` applies to them unchanged; every op keeps them in that range.

Semantics follow the CPU presets: the same random-resized-crop scale and ratio ranges, drawn as
torchvision draws them (10 tries, then a central crop); one horizontal-flip decision per example,
shared by its views; independent photometric draws per view (colour jitter with probability 0.8,
its four adjustments in a random order per view; greyscale with probability 0.2; Gaussian blur
with probability 0.5, sigma uniform in 0.1-2.0). Unlike the uint8 CPU pipeline, intermediate
images are not rounded to integers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2.functional import rgb_to_grayscale

from vidssl.train.augment import (
    BLUR_P,
    BLUR_SIGMA,
    COLOR_JITTER,
    COLOR_JITTER_P,
    CROP_SCALES,
    GRAYSCALE_P,
    blur_kernel_size,
)

PIXEL_MAX = 255.0


def _uniform(
    count: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def _coin(count: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) < p


# -- geometry --------------------------------------------------------------------------------


def random_resized_boxes(
    windows: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop parameters drawn for each window (x0, y0, x1, y1 pixels)
    at once: `attempts` tries of an area fraction in `scale` and a log-uniform aspect ratio in
    `ratio`, the first that fits wins, else the central crop clamped to `ratio`. Returns the
    chosen boxes in the same coordinates."""
    device, count = windows.device, len(windows)
    windows = windows.float()
    width, height = windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]
    shape = (count, attempts)
    fraction = scale[0] + (scale[1] - scale[0]) * torch.rand(
        shape, generator=generator, device=device
    )
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(
        log_low + (log_high - log_low) * torch.rand(shape, generator=generator, device=device)
    )
    area = (width * height)[:, None] * fraction
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.int().argmax(dim=1, keepdim=True)  # argmax of a 0/1 row: its first 1
    found = fits.any(dim=1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    in_ratio = width / height
    central_w = torch.where(in_ratio > ratio[1], (height * ratio[1]).round(), width)
    central_h = torch.where(in_ratio < ratio[0], (width / ratio[0]).round(), height)
    w, h = torch.where(found, w, central_w), torch.where(found, h, central_h)
    offsets = torch.rand((count, 2), generator=generator, device=device)
    left = torch.where(found, (offsets[:, 0] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    top = torch.where(found, (offsets[:, 1] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    x0, y0 = windows[:, 0] + left, windows[:, 1] + top
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_resize(
    bank: torch.Tensor, frames: torch.Tensor, boxes: torch.Tensor, size: int
) -> torch.Tensor:
    """Box `boxes[i]` (x0, y0, x1, y1 pixels; pixel j spans [j, j + 1)) of bank image
    `frames[i]`, resampled to `size` x `size`. roi_align averages bilinear samples over each
    output pixel's footprint, so shrinking is anti-aliased; samples outside the image are 0 (pad
    the bank to replicate edges). Float32 out."""
    rois = torch.cat([frames[:, None].to(bank.dtype), boxes.to(bank.dtype)], dim=1)
    crops = roi_align(
        bank, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    return crops.float()


def flip_decisions(count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """One horizontal-flip decision (probability 0.5) per example."""
    return _coin(count, 0.5, generator, device)


def flip_horizontally(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror the images whose flag is set."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


# -- photometric ops -------------------------------------------------------------------------


def _blend(images: torch.Tensor, other: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    factors = factors[:, None, None, None]
    return (factors * images + (1 - factors) * other).clamp(0, PIXEL_MAX)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale each image by its factor (torchvision's adjust_brightness, per image)."""
    return (images * factors[:, None, None, None]).clamp(0, PIXEL_MAX)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level (torchvision's adjust_contrast, per image)."""
    mean = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with its greyscale version (torchvision's adjust_saturation)."""
    return _blend(images, rgb_to_grayscale(images), factors)


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV in [0, 1] (torchvision's formulas)."""
    r, g, b = rgb.unbind(dim=-3)
    maxc, minc = rgb.amax(dim=-3), rgb.amin(dim=-3)
    equal = maxc == minc
    chroma = maxc - minc
    saturation = chroma / torch.where(equal, torch.ones_like(maxc), maxc)
    divisor = torch.where(equal, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.remainder((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([hue, saturation, maxc], dim=-3)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> RGB in [0, 1] (torchvision's formulas)."""
    h, s, v = hsv.unbind(dim=-3)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    mask = sector.unsqueeze(-3) == torch.arange(6, device=sector.device).view(-1, 1, 1)
    red = torch.stack([v, q, p, p, t, v], dim=-3)
    green = torch.stack([t, v, v, q, p, p], dim=-3)
    blue = torch.stack([p, p, t, v, v, q], dim=-3)
    table = torch.stack([red, green, blue], dim=-4)  # (..., 3, 6, H, W)
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(hsv.dtype), table)


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by its shift (a fraction of the hue circle, in [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(images / PIXEL_MAX)
    hue = torch.remainder(hsv[:, 0] + shifts[:, None, None], 1.0)
    hsv = torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)
    return (_hsv_to_rgb(hsv) * PIXEL_MAX).clamp(0, PIXEL_MAX)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    strengths: tuple[float, float, float, float] = COLOR_JITTER,
    p: float = COLOR_JITTER_P,
) -> torch.Tensor:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue) applied with probability
    `p`, drawn per image: factors uniform in [1 - s, 1 + s] (hue shift in [-h, h]), the four
    adjustments in a random order per image. Sync-free: each op runs on the whole batch and
    `torch.where` keeps it for the images whose turn it is."""
    count, device = len(images), images.device
    applied = _coin(count, p, generator, device)
    brightness, contrast, saturation, hue = strengths
    factors = [
        _uniform(count, 1 - brightness, 1 + brightness, generator, device),
        _uniform(count, 1 - contrast, 1 + contrast, generator, device),
        _uniform(count, 1 - saturation, 1 + saturation, generator, device),
        _uniform(count, -hue, hue, generator, device),
    ]
    order = torch.rand((count, len(JITTER_OPS)), generator=generator, device=device).argsort(1)
    for slot in range(len(JITTER_OPS)):
        for index, op in enumerate(JITTER_OPS):
            turn = applied & (order[:, slot] == index)
            images = torch.where(turn[:, None, None, None], op(images, factors[index]), images)
    return images


def random_grayscale(
    images: torch.Tensor, generator: torch.Generator, p: float = GRAYSCALE_P
) -> torch.Tensor:
    """Each image replaced by its grey level (3 equal channels) with probability `p`."""
    chosen = _coin(len(images), p, generator, images.device)
    grey = rgb_to_grayscale(images).expand_as(images)
    return torch.where(chosen[:, None, None, None], grey, images)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image, reflected borders (as
    vidssl.train.augment.SeparableGaussianBlur does to one image)."""
    count, channels, height, width = images.shape
    half = kernel_size // 2
    x = torch.linspace(-half, half, kernel_size, device=images.device)
    kernels = torch.exp(-0.5 * (x[None, :] / sigmas[:, None]) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    groups = count * channels
    out = images.reshape(1, groups, height, width)
    out = F.pad(out, (half, half, 0, 0), mode="reflect")
    out = F.conv2d(out, kernels.view(groups, 1, 1, kernel_size), groups=groups)
    out = F.pad(out, (0, 0, half, half), mode="reflect")
    out = F.conv2d(out, kernels.view(groups, 1, kernel_size, 1), groups=groups)
    return out.view(count, channels, height, width).clamp(0, PIXEL_MAX)


def random_gaussian_blur(
    images: torch.Tensor,
    generator: torch.Generator,
    p: float = BLUR_P,
    sigma: tuple[float, float] = BLUR_SIGMA,
) -> torch.Tensor:
    """SimCLR's blur (kernel 10% of the image side) with probability `p`, sigma uniform."""
    count, device = len(images), images.device
    chosen = _coin(count, p, generator, device)
    sigmas = _uniform(count, sigma[0], sigma[1], generator, device)
    blurred = gaussian_blur(images, sigmas, blur_kernel_size(images.shape[-1]))
    return torch.where(chosen[:, None, None, None], blurred, images)


def pixel_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The presets' pixel operations in their order: colour jitter, greyscale, blur."""
    images = color_jitter(images, generator)
    images = random_grayscale(images, generator)
    return random_gaussian_blur(images, generator)


# -- a preset on a batch of examples ---------------------------------------------------------


def augment_views(
    bank: torch.Tensor,
    frames: torch.Tensor,
    windows: torch.Tensor,
    preset: str,
    size: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The views of a batch of examples under a preset (px, ulc_px, lc_px, full).

    `frames` (B, V): bank indices of each example's V frames; `windows` (B, 4): each example's
    shared crop window in bank pixels. Every view gets its own random resized crop of the window
    (`px`: the whole window) and its own pixel draws; the flip is decided once per example.
    Returns V tensors (B, 3, size, size) in [0, 255]."""
    count, views = frames.shape
    if preset == "px":
        boxes = windows.float().repeat(views, 1)
    elif preset in CROP_SCALES:
        scale, ratio = CROP_SCALES[preset]
        boxes = random_resized_boxes(windows.repeat(views, 1), scale, ratio, generator)
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; use px, ulc_px, lc_px or full")
    view_major = frames.T.reshape(-1)  # all first views, then all second views, ...
    images = pixel_augment(crop_resize(bank, view_major, boxes, size), generator)
    flips = flip_decisions(count, generator, bank.device).repeat(views)
    return list(flip_horizontally(images, flips).split(count))
