"""`make perf-input`: the trainer's CPU input path on one core, operation by operation.

The chain is the data path's own (`vidssl.train.data.TrainingExamples` for two-view samplers):
per example, each frame's JPEG decoded (`decode_rgb`, BGR -> RGB included), cropped to the
example's shared object window (`shared_crop_window` + `crop_with_padding`; `views_from: crop`,
the trainer's default), handed over as a uint8 CHW tensor (`to_tensor`), flipped once per example
(`flip_views`), then each view through the preset's `view_transform` one operation at a time (its
`v2.Compose`'s own transforms: random resized crop + resize to `image_size`, colour jitter,
grayscale, Gaussian blur; MoCo-v2 adds a per-view flip). Every call is the data path's function
on the data path's arguments, so the chain's output is what the trainer gets for the same seeds
(tests/test_perf_input.py checks it against `TrainingExamples` reading a shard).

Frames are real JPEGs: synthetic Objectron frames (`vidssl.synth.objectron.render_frame`) at
the requested sizes, coded as ingest codes them (`vidssl.video.encode_jpeg` at
`ingest.jpeg_quality`), each with its object's box (the object mask's bounding box + 10% a side,
as the clean stage's crop box is the projected 3D box + 10%); an example is two consecutive
frames of one scene, as SiamPose's nearby pairs.

Rates are per core: torch and OpenCV limited to one thread, no loader workers. Each operation's
time is its thread's CPU time (`time.thread_time`), so other processes sharing the machine slow
the wall clock but not the rate; wall-clock rates are recorded beside. Per operation:
`frames_per_s` counts every frame through the chain (a random operation skipped on a frame
costs nearly nothing, so this is the rate the op would allow in the chain), `applied_share` the
frames it actually changed, `frames_per_s_applied` the rate over those alone, `share` its part of
the whole chain's time. The slowest operation is the one with the largest share.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from vidssl.clips import frame_name
from vidssl.config import IngestConfig, TrainConfig
from vidssl.perf import save_results
from vidssl.progress import track
from vidssl.synth.objectron import SynthSpec, build_scene, render_frame
from vidssl.synth.shapes import CATEGORIES
from vidssl.train.augment import ColorJitter, SeparableGaussianBlur, flip_views, view_transform
from vidssl.train.data import decode_rgb, frame_box, to_tensor
from vidssl.train.views import crop_with_padding, shared_crop_window
from vidssl.video import encode_jpeg

#: Operations before the photometric ones: with the geometric op of the preset (resized_crop,
#: or resize for `px`) they make "decode + crop + flip" to a uint8 tensor of the output size.
GEOMETRY_OPS = ("decode", "object_crop", "to_tensor", "flip", "resized_crop", "resize")
#: Public per-core anchors (issue 14): one CPU thread decodes about 400 ImageNet-size JPEGs/s;
#: decode + random crop + flip reaches about 550 frames/s at 480p.
ANCHOR_DECODE_IMAGENET = 400.0
ANCHOR_DECODE_CROP_FLIP_480P = 550.0
#: Box margin around the object mask, a fraction of its size on each side (the clean stage's).
BOX_MARGIN = 0.1


def op_name(transform: torch.nn.Module) -> str:
    """The name an operation of a view transform is reported under."""
    if isinstance(transform, v2.RandomApply):
        (inner,) = transform.transforms
        return op_name(inner)
    names = {
        v2.RandomResizedCrop: "resized_crop",
        v2.Resize: "resize",
        ColorJitter: "color_jitter",
        v2.RandomGrayscale: "grayscale",
        SeparableGaussianBlur: "gaussian_blur",
        v2.RandomHorizontalFlip: "view_flip",
    }
    return names.get(type(transform), type(transform).__name__.lower())


@dataclass
class Clip:
    """One synthetic clip as the data path reads it: its shard sample (frame name -> JPEG
    bytes) and its meta (`num_frames`, per-frame `crop_box`, normalized x0, y0, x1, y1)."""

    sample: dict
    meta: dict


def object_box(mask: np.ndarray, margin: float = BOX_MARGIN) -> list[float] | None:
    """Normalized [x0, y0, x1, y1] of the mask's pixels, enlarged by `margin` of its size on
    each side and clipped to the image; None when the object is not in view."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    height, width = mask.shape
    low = np.array([cols.min(), rows.min()], float)
    high = np.array([cols.max() + 1, rows.max() + 1], float)
    pad = (high - low) * margin
    low = np.clip((low - pad) / (width, height), 0, 1)
    high = np.clip((high + pad) / (width, height), 0, 1)
    return [round(float(v), 6) for v in (*low, *high)]


def synthetic_clips(
    width: int, height: int, clips: int, frames_per_clip: int, quality: int, seed: int = 0
) -> list[Clip]:
    """`clips` clips of `frames_per_clip` frames in view of their object, each from its own
    synthetic Objectron scene (categories in turn), JPEG-coded at `quality`."""
    spec = SynthSpec(width=width, height=height, frames=4 * frames_per_clip, seed=seed)
    result = []
    for index in range(clips):
        scene = build_scene(spec, CATEGORIES[index % len(CATEGORIES)], index)
        sample: dict = {"__key__": f"synthetic-{index}"}
        boxes: list[dict] = []
        for frame in range(spec.frames):
            image, mask = render_frame(scene, spec, frame)
            box = object_box(mask)
            if box is None:
                continue
            sample[frame_name(len(boxes))] = encode_jpeg(image, quality)
            boxes.append({"crop_box": box})
            if len(boxes) == frames_per_clip:
                break
        if len(boxes) < 2:
            raise ValueError(
                f"synthetic scene {index} ({width}x{height}) has its object in view "
                f"on {len(boxes)} frames; a pair needs 2"
            )
        result.append(Clip(sample, {"num_frames": len(boxes), "frames": boxes}))
    return result


@dataclass
class OpClock:
    """Per-operation CPU and wall seconds, frames seen and frames changed."""

    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    applied: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    applied_cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    order: list[str] = field(default_factory=list)

    def run(self, name: str, function: Callable, *args: object, frames: int = 1) -> object:
        """`function(*args)`, timed under `name`; it changed its frames unless it returned its
        first argument itself (how torchvision's random transforms skip)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        out = function(*args)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        if name not in self.order:
            self.order.append(name)
        self.cpu[name] += cpu
        self.wall[name] += wall
        self.frames[name] += frames
        if out is not args[0]:
            self.applied[name] += frames
            self.applied_cpu[name] += cpu
        return out


def augmented_views(
    clip: Clip,
    positions: list[int],
    views_from: str,
    transform: v2.Compose,
    generator: torch.Generator,
    clock: OpClock,
) -> list[torch.Tensor]:
    """One example's views through the data path's calls (`view_images`, then
    `TrainingExamples.example`'s), each operation timed on `clock`."""
    sample, meta = clip.sample, clip.meta
    decoded = {p: clock.run("decode", decode_rgb, sample[frame_name(p)]) for p in set(positions)}
    images = [decoded[p] for p in positions]
    if views_from == "crop":
        height, width = images[0].shape[:2]
        boxes = [frame_box(meta, p) for p in positions]
        window = clock.run("object_crop", shared_crop_window, boxes, width, height, frames=0)
        images = [clock.run("object_crop", crop_with_padding, image, window) for image in images]
    elif views_from != "frame":
        raise ValueError(f"train.views_from must be crop or frame, got {views_from!r}")
    tensors = [clock.run("to_tensor", to_tensor, image) for image in images]
    views = clock.run("flip", flip_views, tensors, generator, frames=len(tensors))
    out = []
    for view in views:  # type: ignore[attr-defined]
        for operation in transform.transforms:
            view = clock.run(op_name(operation), operation, view)
        out.append(view)
    return out


def pair_positions(clips: list[Clip]) -> Iterator[tuple[Clip, list[int]]]:
    """Every consecutive pair (i, i + 1) of every clip, clips in turn, endlessly."""
    pairs = [(clip, [i, i + 1]) for clip in clips for i in range(clip.meta["num_frames"] - 1)]
    while True:
        yield from pairs


@contextmanager
def single_core() -> Iterator[None]:
    """torch and OpenCV limited to one thread inside the block; the previous counts after."""
    saved = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def profile_chain(
    clips: list[Clip],
    examples: int,
    preset: str = "full",
    image_size: int = 224,
    views_from: str = "crop",
    warmup: int = 5,
    seed: int = 0,
    progress: str | None = None,
) -> dict:
    """Per-operation rates of the CPU input path on one core over `examples` pairs (after
    `warmup` untimed ones); see the module docstring for the fields."""
    transform = view_transform(preset, image_size)  # type: ignore[arg-type]
    pairs = pair_positions(clips)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with single_core():
        for _ in range(warmup):
            augmented_views(*next(pairs), views_from, transform, generator, OpClock())
        clock = OpClock()
        loop = range(examples)
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in track(loop, examples, progress, unit="pairs") if progress else loop:
            clip, positions = next(pairs)
            views = augmented_views(clip, positions, views_from, transform, generator, clock)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    frames = 2 * examples
    if examples and not all(
        v.dtype == torch.uint8 and v.shape == (3, image_size, image_size) for v in views
    ):
        raise AssertionError("the chain's views are not uint8 (3, size, size)")
    total = sum(clock.cpu.values())
    ops = {}
    for name in clock.order:
        seconds = clock.cpu[name]
        applied = clock.applied[name]
        ops[name] = {
            "frames_per_s": _rate(frames, seconds),
            "frames_per_s_wall": _rate(frames, clock.wall[name]),
            "applied_share": round(applied / frames, 3) if frames else 0.0,
            "frames_per_s_applied": _rate(applied, clock.applied_cpu[name]),
            "share": round(seconds / total, 4) if total else 0.0,
        }
    geometry = [n for n in clock.order if n in GEOMETRY_OPS]
    geometry_seconds = sum(clock.cpu[n] for n in geometry)
    return {
        "preset": preset,
        "views_from": views_from,
        "image_size": image_size,
        "frames": frames,
        "ops": ops,
        "decode_crop_flip": {"ops": geometry, "frames_per_s": _rate(frames, geometry_seconds)},
        "chain": {
            "frames_per_s": _rate(frames, total),
            "frames_per_s_loop": _rate(frames, cpu),
            "frames_per_s_loop_wall": _rate(frames, wall),
        },
        "slowest_op": max(clock.order, key=lambda n: clock.cpu[n]) if clock.order else None,
    }


def _rate(frames: int, seconds: float) -> float:
    return round(frames / seconds, 1) if seconds > 0 else 0.0


def print_profile(label: str, profile: dict) -> None:
    """The table of one profile, with the public anchors beside the matching rates."""
    print(
        f"\n{label}: preset {profile['preset']}, views from {profile['views_from']}, "
        f"{profile['image_size']} px, {profile['frames']} frames, one core"
    )
    print(
        f"  {'operation':<14}{'frames/s':>10}{'wall f/s':>10}{'applied':>9}"
        f"{'f/s applied':>13}{'share':>8}"
    )
    for name, op in profile["ops"].items():
        print(
            f"  {name:<14}{op['frames_per_s']:>10.0f}{op['frames_per_s_wall']:>10.0f}"
            f"{op['applied_share']:>9.0%}{op['frames_per_s_applied']:>13.0f}"
            f"{op['share']:>8.1%}"
        )
    geometry, chain = profile["decode_crop_flip"], profile["chain"]
    print(
        f"  decode+crop+flip ({' + '.join(geometry['ops'])}): "
        f"{geometry['frames_per_s']:.0f} frames/s"
    )
    print(
        f"  whole chain (+ photometric): {chain['frames_per_s']:.0f} frames/s "
        f"(loop incl. glue: {chain['frames_per_s_loop']:.0f} CPU, "
        f"{chain['frames_per_s_loop_wall']:.0f} wall)"
    )
    slowest = profile["slowest_op"]
    print(f"  slowest operation: {slowest} ({profile['ops'][slowest]['share']:.0%} of the chain)")


def anchors(profiles: dict) -> dict:
    """Our rates next to the public per-core anchors, where a profile matches one."""
    out = {}
    for label, profile in profiles.items():
        size = profile["frame_size"]
        if size == [500, 375]:
            out[f"{label}: decode vs ~{ANCHOR_DECODE_IMAGENET:.0f}/s (ImageNet size)"] = round(
                profile["ops"]["decode"]["frames_per_s"] / ANCHOR_DECODE_IMAGENET, 2
            )
        if size == [640, 480]:
            out[f"{label}: decode+crop+flip vs ~{ANCHOR_DECODE_CROP_FLIP_480P:.0f}/s (480p)"] = (
                round(profile["decode_crop_flip"]["frames_per_s"] / ANCHOR_DECODE_CROP_FLIP_480P, 2)
            )
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size {text!r}: give WIDTHxHEIGHT") from None
    return width, height


def main(argv: list[str] | None = None) -> dict:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes",
        type=parse_size,
        nargs="+",
        default=[(640, 480), (500, 375)],
        help="frame sizes, WIDTHxHEIGHT",
    )
    parser.add_argument(
        "--views-from", nargs="+", choices=["crop", "frame"], default=["crop", "frame"]
    )
    parser.add_argument(
        "--preset",
        default=defaults.augmentation,
        choices=["px", "ulc_px", "lc_px", "full", "mocov2"],
    )
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--examples", type=int, default=300, help="timed pairs per profile")
    parser.add_argument("--clips", type=int, default=9, help="synthetic scenes per frame size")
    parser.add_argument("--frames-per-clip", type=int, default=6)
    parser.add_argument("--jpeg-quality", type=int, default=IngestConfig().jpeg_quality)
    args = parser.parse_args(argv)
    results: dict = {
        "cores_used": 1,
        "machine_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jpeg_quality": args.jpeg_quality,
        "clock": "thread CPU time (wall-clock rates beside)",
        "profiles": {},
    }
    for width, height in args.sizes:
        clips = synthetic_clips(width, height, args.clips, args.frames_per_clip, args.jpeg_quality)
        jpeg_kb = np.mean([len(v) for c in clips for k, v in c.sample.items() if k != "__key__"])
        for views_from in args.views_from:
            label = f"{width}x{height} {views_from}"
            profile = profile_chain(
                clips,
                args.examples,
                args.preset,
                args.image_size,
                views_from,
                progress=f"input path {label}",
            )
            profile["frame_size"] = [width, height]
            profile["mean_jpeg_kb"] = round(jpeg_kb / 1024, 1)
            results["profiles"][label] = profile
            print_profile(f"{label} (JPEG q{args.jpeg_quality}, {jpeg_kb / 1024:.0f} KB)", profile)
    results["vs_public_anchors"] = anchors(results["profiles"])
    print("\nours / public per-core anchor:")
    for name, ratio in results["vs_public_anchors"].items():
        print(f"  {name}: {ratio:.2f}x")
    print(f"(load average {results['load_average_1min']} on {os.cpu_count()} cores while running)")
    path = save_results("input", results)
    print(f"saved {path}")
    return results


if __name__ == "__main__":
    main()
