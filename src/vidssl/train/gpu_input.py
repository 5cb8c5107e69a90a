"""The GPU input path (`train.input: gpu`): loader workers only pick the examples, the training
device decodes and augments them a batch at a time.

Workers (`EncodedExamples`: TrainingExamples' seeded stream, the same examples in the same
order) hand over per example the JPEG bytes of its frames (1-D uint8 tensors, each distinct
frame once), which frame each view shows, the example's shared horizontal-flip decision (drawn
from the worker's generator exactly where the CPU path draws it) and, for Objectron crops
(`views_from: crop`), the union of the frames' annotated boxes (normalised x0, y0, x1, y1), from
which the shared crop window follows once the frame size is known. `collate_encoded` packs a
batch's variable-length frames end to end in one tensor, with their sizes.

On the device, `GpuViews` turns such a batch into the views the CPU path gives: every frame
decoded at once (`torchvision.io.decode_jpeg` on a list, nvJPEG on CUDA, libjpeg on the CPU),
the window (vidssl.train.views.shared_crop_window; edges replicated where it leaves the frame,
as crop_with_padding does), then the preset of `train.augmentation` with the batched ops of
vidssl.train.gpu_augment: its random resized crop of the window (`px`: the whole window) resampled
to `image_size`, colour jitter, greyscale, blur, the shared flip (plus a flip per view for
`mocov2`), and `vidssl.train.augment.normalize`. Fields other than the encoded ones pass through,
moved to the device. The device's draws come from a generator seeded by (seed, step), so a
resumed run, which skips the batches already trained on without decoding them, continues with
the same views an uninterrupted run would have had.

Samplers that build whole examples themselves (PiCo's pixel pairs) are not supported.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg

from vidssl.clips import frame_name
from vidssl.config import ConfigError, TrainConfig
from vidssl.train.augment import CROP_SCALES, PER_VIEW_FLIP, normalize
from vidssl.train.data import TrainingExamples, view_boxes
from vidssl.train.gpu_augment import (
    crop_resize,
    flip_decisions,
    flip_horizontally,
    pixel_augment,
    random_resized_boxes,
)
from vidssl.train.samplers import build_sampler
from vidssl.train.views import shared_crop_window

#: Fields of an encoded example (and batch) that GpuViews consumes.
JPEGS, JPEG_SIZES, VIEW_FRAMES = "jpegs", "jpeg_sizes", "view_frames"
FLIP, BOX, KEY = "flip", "box", "key"
ENCODED_FIELDS = (JPEGS, JPEG_SIZES, VIEW_FRAMES, FLIP, BOX, KEY)


def check_gpu_input(cfg: TrainConfig) -> None:
    """A clear error when `train.input: gpu` cannot serve the configured sampler."""
    sampler = build_sampler(cfg.sampler)
    if sampler.builds_examples:
        raise ConfigError(
            f"train.input: gpu does not support train.sampler {cfg.sampler.kind}: it builds "
            "whole examples itself (points carried through its crops); use train.input: cpu"
        )


class EncodedExamples(TrainingExamples):
    """TrainingExamples' stream (same shards, same seeded examples), each example as its encoded
    frames, view -> frame indices, shared flip and object box (see the module docstring)."""

    def __init__(self, store_uri: str, prefix: str, cfg: TrainConfig, *args: Any, **kwargs: Any):
        check_gpu_input(cfg)
        super().__init__(store_uri, prefix, cfg, *args, **kwargs)

    def example(
        self, sample: dict, meta: dict, positions: list[int], generator: torch.Generator
    ) -> dict[str, Any]:
        distinct = list(dict.fromkeys(positions))
        encoded: dict[str, Any] = {
            JPEGS: [
                torch.frombuffer(bytearray(sample[frame_name(p)]), dtype=torch.uint8)
                for p in distinct
            ],
            VIEW_FRAMES: torch.tensor([distinct.index(p) for p in positions]),
            FLIP: torch.rand((), generator=generator) < 0.5,  # as augment.flip_views draws it
            KEY: f"{sample.get('__url__')}: sample {sample['__key__']!r}",
        }
        if self.cfg.views_from == "crop":
            boxes = torch.tensor(view_boxes(sample, meta, positions), dtype=torch.float64)
            encoded[BOX] = torch.cat([boxes[:, :2].amin(0), boxes[:, 2:].amax(0)])
        return encoded


def collate_encoded(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of encoded examples: `jpegs` every example's frames end to end in one uint8
    tensor (one tensor, not hundreds, crosses from a loader worker: each would hold a file
    descriptor), `jpeg_sizes` their byte counts, `view_frames` (B, V) frame indices, `flip`
    (B,), `box` (B, 4) when crops, `key` a list; other fields stacked as the default collate
    does."""
    jpegs: list[torch.Tensor] = []
    view_frames = []
    for example in examples:
        view_frames.append(example[VIEW_FRAMES] + len(jpegs))
        jpegs.extend(example[JPEGS])
    batch: dict[str, Any] = {
        JPEGS: torch.cat(jpegs),
        JPEG_SIZES: torch.tensor([len(jpeg) for jpeg in jpegs]),
        VIEW_FRAMES: torch.stack(view_frames),
        FLIP: torch.stack([example[FLIP] for example in examples]),
        KEY: [example[KEY] for example in examples],
    }
    if BOX in examples[0]:
        batch[BOX] = torch.stack([example[BOX] for example in examples])
    others = [name for name in examples[0] if name not in ENCODED_FIELDS]
    if others:
        batch.update(default_collate([{name: ex[name] for name in others} for ex in examples]))
    return batch


def frame_bank(
    images: list[torch.Tensor], windows: list[tuple[int, int, int, int]]
) -> tuple[torch.Tensor, int]:
    """Decoded frames (3, H, W) as one float bank (N, 3, H', W') for roi_align, each padded by
    replicating its edges: `margin` pixels on every side (returned; bank coordinates = frame
    coordinates + margin), enough for every window plus one pixel so bilinear samples at a
    window's edge see the edge pixel; smaller frames are further padded to the largest."""
    margin = 1 + max(
        max(0, -x0, -y0, x1 - image.shape[-1], y1 - image.shape[-2])
        for image, (x0, y0, x1, y1) in zip(images, windows, strict=True)
    )
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    if all(image.shape[-2:] == (height, width) for image in images):
        bank = torch.stack(images).float()
        return F.pad(bank, (margin,) * 4, mode="replicate"), margin
    padded = [
        F.pad(
            image[None].float(),
            (margin, margin + width - image.shape[-1], margin, margin + height - image.shape[-2]),
            mode="replicate",
        )
        for image in images
    ]
    return torch.cat(padded), margin


class GpuViews:
    """Encoded batches (collate_encoded) -> the method's views on `device`: normalised float
    (B, 3, image_size, image_size) per view name of the sampler, augmented as `train.augmentation`
    says. `seed` (default `train.seed`) with the step seeds the device's draws."""

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device | str,
        seed: int | None = None,
        channels_last: bool = False,
    ) -> None:
        check_gpu_input(cfg)
        if cfg.augmentation != "px" and cfg.augmentation not in CROP_SCALES:
            raise ConfigError(f"train.augmentation {cfg.augmentation!r}: no such preset")
        self.cfg, self.device = cfg, torch.device(device)
        self.views = build_sampler(cfg.sampler).views
        self.seed = cfg.seed if seed is None else seed
        self.channels_last = channels_last
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def __call__(self, batch: dict[str, Any], step: int | None = None) -> dict[str, torch.Tensor]:
        """The views (and the batch's other fields) on the device; `step` reseeds the draws."""
        views, _, _ = self.views_with_geometry(batch, step)
        return views

    def views_with_geometry(
        self, batch: dict[str, Any], step: int | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The views, and what was drawn for them: each view's crop box (B, V, 4) as (x0, y0,
        x1, y1) in its frame's pixels (pixel j spans [j, j + 1)) and whether it was mirrored
        (B, V)."""
        if step is not None:
            self.generator.manual_seed((self.seed * 1_000_003 + step) % (2**63 - 1))
        device, generator, preset = self.device, self.generator, self.cfg.augmentation
        images = self._decode(batch)
        view_frames = batch[VIEW_FRAMES]
        count, per_example = view_frames.shape
        windows = self._windows(batch, images)
        owners = [0] * len(images)
        for example, frames in enumerate(view_frames.tolist()):
            for index in frames:
                owners[index] = example
        bank, margin = frame_bank(images, [windows[owner] for owner in owners])
        frames = view_frames.T.reshape(-1).to(device)  # view-major: all first views, then ...
        example_windows = torch.tensor(windows, dtype=torch.float32, device=device)
        example_windows = example_windows.repeat(per_example, 1) + margin
        if preset == "px":
            boxes = example_windows
        else:
            scale, ratio = CROP_SCALES[preset]
            boxes = random_resized_boxes(example_windows, scale, ratio, generator)
        crops = pixel_augment(crop_resize(bank, frames, boxes, self.cfg.image_size), generator)
        flips = batch[FLIP].to(device).repeat(per_example)
        if preset in PER_VIEW_FLIP:
            flips = flips ^ flip_decisions(len(flips), generator, device)
        crops = normalize(flip_horizontally(crops, flips))
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        named = dict(zip(self.views, crops.split(count), strict=True))
        for name, value in batch.items():
            if name not in ENCODED_FIELDS:
                named[name] = value.to(device, non_blocking=True)
        boxes = (boxes - margin).view(per_example, count, 4).transpose(0, 1)
        return named, boxes, flips.view(per_example, count).T

    def _decode(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        jpegs = list(batch[JPEGS].split(batch[JPEG_SIZES].tolist()))
        try:
            return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            for example, frames in enumerate(batch[VIEW_FRAMES].tolist()):
                for index in frames:
                    try:
                        decode_jpeg(jpegs[index], mode=ImageReadMode.RGB)
                    except RuntimeError:
                        raise ValueError(
                            f"{batch[KEY][example]}: a frame is not a decodable JPEG"
                        ) from None
            raise

    def _windows(
        self, batch: dict[str, Any], images: list[torch.Tensor]
    ) -> list[tuple[int, int, int, int]]:
        """Each example's crop window in its first view's frame pixels (its views share it, as
        on the CPU path): the shared object window (`views_from: crop`), else the whole frame."""
        boxes = batch[BOX].tolist() if self.cfg.views_from == "crop" else None
        windows = []
        for example, first in enumerate(batch[VIEW_FRAMES][:, 0].tolist()):
            height, width = images[first].shape[-2:]
            if boxes is None:
                windows.append((0, 0, width, height))
            else:
                windows.append(shared_crop_window([boxes[example]], width, height))
        return windows
