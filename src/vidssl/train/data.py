"""Training examples from clip shards: per example, the frames the sampler picks
(vidssl.train.samplers), cropped (one shared window for Objectron) or whole, flipped together,
augmented independently, handed over as a dict of tensors named by the sampler's views.

One epoch is a fixed number of batches drawn from an endless, seeded stream (shards resampled,
clips shuffled): the same (seed, epoch) gives the same batches, so a resumed run can skip to
where it stopped and continue exactly as an uninterrupted one would. By default
(`examples_per_clip: all`) a clip visit yields every example of the clip (for nearby pairs: every
consecutive pair) and an epoch holds as many examples as the training split has, as the
reference's loader: each is then visited once per epoch on average (the stream resamples clips,
so not exactly).

A sampler that builds whole examples (`Sampler.builds_examples`: PiCo's point pairs) gets each
clip sample (with its tracks merged in when the trainer has the flow stage's tracks:
`read_split(..., beside=[tracks_prefix])`) and returns the example's tensors itself; this code
then only draws `examples_per_clip` of them per clip visit and skips the clips that give none.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vidssl.clips import frame_name
from vidssl.config import TrainConfig
from vidssl.objectron.cleaning import crop_box
from vidssl.shards import decode_json, read_split
from vidssl.store import open_store
from vidssl.train.augment import eval_transform, flip_views, view_transform
from vidssl.train.samplers import Sampler, build_sampler
from vidssl.train.views import crop_with_padding, shared_crop_window


def decode_rgb(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a frame is not a decodable JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def annotation_box(frame: dict) -> list[float]:
    """A frame annotation's crop box: the clean stage's, else the projected box + 10%."""
    return frame.get("crop_box") or crop_box(frame, 0.1)


def frame_box(meta: dict, position: int) -> list[float]:
    return annotation_box(meta["frames"][position])


def object_crop(image: np.ndarray, frame: dict) -> np.ndarray:
    """The square crop of a frame around its annotated object, as the crops are embedded."""
    height, width = image.shape[:2]
    return crop_with_padding(image, shared_crop_window([annotation_box(frame)], width, height))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


def view_images(
    sample: dict, meta: dict, positions: list[int], views_from: str
) -> list[np.ndarray]:
    """The frames at `positions`, cropped to one shared window when views are crops."""
    images = {p: decode_rgb(sample[frame_name(p)]) for p in set(positions)}
    if views_from == "frame":
        return [images[p] for p in positions]
    boxes = view_boxes(sample, meta, positions)
    height, width = images[positions[0]].shape[:2]
    window = shared_crop_window(boxes, width, height)
    return [crop_with_padding(images[p], window) for p in positions]


def view_boxes(sample: dict, meta: dict, positions: list[int]) -> list[list[float]]:
    """The annotated boxes (normalised) of the frames at `positions`, which the views' shared
    crop window covers; a clear error for a clip without boxes."""
    if "frames" not in meta:
        raise ValueError(
            f"{sample.get('__url__')}: sample {sample['__key__']!r} has no boxes; crops need "
            "Objectron clips (or set train.views_from: frame)"
        )
    return [frame_box(meta, p) for p in positions]


class TrainingExamples(IterableDataset):
    """Endless seeded stream of examples (view name -> uint8 tensor) for one epoch."""

    def __init__(
        self,
        store_uri: str,
        prefix: str,
        cfg: TrainConfig,
        epoch: int,
        rank: int = 0,
        tracks_prefix: str | None = None,
    ):
        """Clips under `prefix`; their tracks (the flow stage's output) under `tracks_prefix`,
        read beside them, when given."""
        self.store_uri, self.prefix, self.cfg = store_uri, prefix, cfg
        self.epoch, self.rank, self.tracks_prefix = epoch, rank, tracks_prefix
        self.sampler: Sampler = build_sampler(cfg.sampler)
        if getattr(cfg.sampler, "needs_tracks", False) and not tracks_prefix:
            raise ValueError(
                f"train.sampler {cfg.sampler.kind} reads point tracks (correspondence "
                f"{cfg.sampler.correspondence}, view_frames {cfg.sampler.view_frames}): give "
                "the flow stage's tracks of the clips"
            )
        self.transform = view_transform(cfg.augmentation, cfg.image_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.cfg
        info = get_worker_info()
        worker = info.id if info else 0
        stream_seed = ((cfg.seed * 1000 + self.epoch) * 100 + self.rank) * 100 + worker
        rng = random.Random(stream_seed)
        generator = torch.Generator().manual_seed(stream_seed)
        clips = read_split(
            open_store(self.store_uri),
            self.prefix,
            "train",
            resampled=True,
            shuffle_buffer=cfg.shuffle_buffer,
            seed=stream_seed,
            beside=[self.tracks_prefix] if self.tracks_prefix else [],
        )
        if self.sampler.builds_examples:
            yield from self._built_examples(clips, rng, generator)
            return
        for sample, meta, positions in self._shuffled_examples(clips, rng):
            yield self.example(sample, meta, positions, generator)

    def example(
        self, sample: dict, meta: dict, positions: list[int], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The example of the frames at `positions`: cropped, flipped together, augmented (the
        GPU input path's workers hand over the encoded frames instead: vidssl.train.gpu_input)."""
        images = view_images(sample, meta, positions, self.cfg.views_from)
        views = flip_views([to_tensor(image) for image in images], generator)
        named = zip(self.sampler.views, views, strict=True)
        return {name: self.transform(view) for name, view in named}

    def _built_examples(
        self, clips, rng: random.Random, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
        """`examples_per_clip` examples the sampler builds from each clip visit."""
        for sample in clips:
            meta = decode_json(sample)
            if meta["num_frames"] < self.sampler.min_frames:
                continue
            for _ in range(self.cfg.sampler.examples_per_clip):
                example = self.sampler.example(sample, meta, rng, generator, self.cfg)
                if example is not None:
                    yield example

    def _shuffled_examples(self, clips, rng: random.Random) -> Iterator[tuple]:  # type: ignore[no-untyped-def]
        """(sample, meta, frame positions) of each example. With `examples_per_clip: all` a
        clip gives all its examples at once, so they go through a shuffle buffer of
        `train.shuffle_buffer` examples: a batch then mixes videos instead of holding one
        video's examples."""
        size = self.cfg.shuffle_buffer if self.sampler.every_example else 0
        buffer: list[tuple] = []
        for sample in clips:
            meta = decode_json(sample)
            if meta["num_frames"] < self.sampler.min_frames:
                continue
            for positions in self.sampler.clip_examples(meta["num_frames"], rng):
                buffer.append((sample, meta, positions))
                if len(buffer) > size:
                    index = rng.randrange(len(buffer))
                    buffer[index], buffer[-1] = buffer[-1], buffer[index]
                    yield buffer.pop()
        rng.shuffle(buffer)  # a finite stream's last examples
        yield from buffer


def frame_crops(sample: dict, views_from: str, size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Every frame of a clip as a deterministic evaluation view: (position, tensor)."""
    meta = decode_json(sample)
    transform = eval_transform(size)
    for position in range(meta["num_frames"]):
        (image,) = view_images(sample, meta, [position], views_from)
        yield position, transform(to_tensor(image))
