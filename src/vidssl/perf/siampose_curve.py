"""SiamPose's pose curve: zero-shot 9-DoF pose accuracy against training steps, for SimSiam on
same / nearby / distant frame pairs and NT-Xent on nearby pairs, on a GPU that holds every frame
in its memory and augments there (the trainer's CPU loader, ~270 images/s, cannot feed one).

    prepare EXP --out DIR     on this machine (the full package): the experiment's cleaned clips,
                              every split, as DIR/frames.npz (each frame's JPEG, as the clip
                              shards hold it) and DIR/records.json (one record per frame)
    train DIR --out RESULTS   one run; needs only torch, torchvision, numpy, scipy and OpenCV
                              (never minio, webdataset, pydantic, kfp, vidssl.config or
                              vidssl.stages); one JSON line per evaluation, appended to
                              RESULTS/<method>-<pairing>-seed<S>.jsonl
    sweep DIR --out RESULTS   several runs as parallel processes on one GPU, then `plot`
    plot RESULTS --out PNG    the curves, and a Markdown table of the final steps on stdout

A step samples `batch_size` training videos, two frames of each as the pairing picks them
(vidssl.train.views), crops both from their shared window (roi_align on the training frames,
held on the device with their edges replicated) and augments each view there
(vidssl.train.gpu_augment). An evaluation embeds every frame's object crop (the square crop the
export stage embeds, made once on the CPU with the same functions) and scores it with the bench
stage's definitions
(vidssl.evaluate.metrics): each test query's box is fitted from its cosine-nearest training crop
(vidssl.evaluate.boxfit) and scored by 3D IoU; the paper's "3D mAP" (the fraction of queries
with IoU > 0.5, averaged over categories) and the same fraction pooled; re-identification mAP of
the test queries in a val + test gallery; the 1-NN category accuracy of the test queries. Step 0
is the untrained encoder: the random-embedding baseline of its seed. The random in-category fit
(each query fitted from a random training frame of its category, averaged over the benchmark's
draws) is computed once per run and written on every line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.evaluate.boxfit import FrameGeometry, fitted_iou
from vidssl.evaluate.metrics import (
    category_accuracy,
    mean_tables,
    nearest_neighbours,
    pose_table,
    reidentification_map,
)
from vidssl.evaluate.report import markdown_table
from vidssl.progress import format_eta
from vidssl.train.augment import eval_transform, normalize
from vidssl.train.gpu_augment import augment_views
from vidssl.train.methods import build_method, total_loss
from vidssl.train.monitor import collapse_std
from vidssl.train.samplers import build_sampler
from vidssl.train.views import crop_with_padding, shared_crop_window
from vidssl.video import decode_jpeg

FRAMES_FILE = "frames.npz"
RECORDS_FILE = "records.json"
METHODS = ("simsiam", "ntxent")
PAIRINGS = ("same", "nearby", "distant")
PRESETS = ("px", "ulc_px", "lc_px", "full")
VIEWS = 2
# What records.json carries of the experiment's `bench` section.
BENCH_SETTINGS = ("refinements", "symmetric_categories", "random_fit_draws", "seed")
# The curve's metric, the paper's "3D mAP": the fraction of test queries fitted with IoU > 0.5,
# averaged over categories (vidssl.evaluate.metrics.pose_table); and the same pooled.
POSE_METRIC = ("pose", "3d_map")
POOLED_METRIC = ("pose", "pooled", "fraction_iou_over_0.5")


def metric(row: dict, path: tuple[str, ...]) -> float:
    """The number at `path` in a result line."""
    value = row
    for key in path:
        value = value[key]
    return float(value)


# -- prepare (this machine, the full package) -------------------------------------------------


def prepare(experiment_name: str, out: Path) -> Path:
    """Write the experiment's cleaned clips of every split to `out`: frames.npz (`jpeg`: every
    frame's JPEG bytes end to end, `offsets`: where each starts, N + 1 of them) and records.json
    (the experiment, its benchmark settings and one record per frame: vidssl.train.embed's
    `frame_record` plus `box`, the normalised crop box). Returns `out`."""
    from vidssl.clips import frame_name
    from vidssl.config import load_experiment
    from vidssl.progress import track
    from vidssl.shards import decode_json, read_manifest, read_split
    from vidssl.stages.base import store_for
    from vidssl.stages.prepare import prepared_clips
    from vidssl.train.data import annotation_box
    from vidssl.train.embed import frame_record

    experiment = load_experiment(experiment_name)
    clips_url = prepared_clips(experiment)
    store = store_for(experiment)
    prefix = store.key_of(clips_url)
    manifest = read_manifest(store, prefix)
    jpegs: list[bytes] = []
    records: list[dict] = []
    for split, entry in sorted(manifest.splits.items()):
        samples = read_split(store, prefix, split, split_by_node=False, split_by_worker=False)
        for sample in track(samples, entry.samples, f"reading {split} clips", unit="clips"):
            meta = decode_json(sample)
            if "frames" not in meta:
                raise ValueError(
                    f"{experiment_name}: clip {sample['__key__']!r} has no box annotations; the "
                    "pose curve needs Objectron-format data (objectron or synthetic_objectron)"
                )
            for position in range(meta["num_frames"]):
                record = frame_record(meta, position)
                record["box"] = annotation_box(meta["frames"][position])
                records.append(record)
                jpegs.append(sample[frame_name(position)])
    out.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(data) for data in jpegs], dtype=np.int64)
    np.savez(out / FRAMES_FILE, jpeg=np.frombuffer(b"".join(jpegs), np.uint8), offsets=offsets)
    bench = experiment.bench
    contents = {
        "experiment": experiment.name,
        "clips_url": clips_url,
        "bench": {
            "refinements": bench.refinements,
            "symmetric_categories": bench.symmetric_categories if bench.symmetric else [],
            "random_fit_draws": bench.random_fit_draws,
            "seed": bench.seed,
        },
        "frames": records,
    }
    (out / RECORDS_FILE).write_text(json.dumps(contents, separators=(",", ":")))
    megabytes = sum(p.stat().st_size for p in (out / FRAMES_FILE, out / RECORDS_FILE)) / 2**20
    print(f"{len(records)} frames of {experiment.name} in {out} ({megabytes:.1f} MiB)")
    return out


# -- the frames, in memory ----------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSet:
    """What `prepare` wrote: every frame (N x H x W x 3 uint8 RGB) and its record."""

    images: np.ndarray
    records: list[dict]
    bench: dict

    def indices(self, *splits: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.records) if r["split"] in splits], int)

    def subset(self, split: str) -> FrameSet:
        indices = self.indices(split)
        records = [self.records[i] for i in indices]
        return FrameSet(self.images[indices], records, self.bench)

    @property
    def boxes(self) -> np.ndarray:
        return np.array([r["box"] for r in self.records], float)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return self.images.shape[2], self.images.shape[1]


def load_frame_set(folder: Path) -> FrameSet:
    for name in (FRAMES_FILE, RECORDS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: run `prepare EXP --out {folder}`")
    archive = np.load(folder / FRAMES_FILE)
    data, offsets = archive["jpeg"], archive["offsets"]
    images = [
        decode_jpeg(data[start:end].tobytes())[..., ::-1]  # BGR -> RGB
        for start, end in pairwise(offsets)
    ]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: frames of several sizes {sorted(shapes)}; the bank needs one")
    contents = json.loads((folder / RECORDS_FILE).read_text())
    missing = [key for key in BENCH_SETTINGS if key not in contents["bench"]]
    if missing:
        raise ValueError(
            f"{folder / RECORDS_FILE} lacks the benchmark settings {missing} (an older "
            f"`prepare` wrote it): run `prepare EXP --out {folder}` again"
        )
    return FrameSet(np.stack(images), contents["frames"], contents["bench"])


def training_clips(frames: FrameSet) -> list[np.ndarray]:
    """Indices (into `frames`) of each training clip's frames, in the clip's order."""
    clips: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for index in frames.indices("train"):
        record = frames.records[index]
        key = (record["video_id"], record["clip_index"])
        clips.setdefault(key, []).append((record["frame_position"], index))
    return [np.array([i for _, i in sorted(clips[key])]) for key in sorted(clips)]


def bank_margin(boxes: np.ndarray, width: int, height: int) -> int:
    """Pixels of padding every crop window of these boxes fits in: a window is a square around a
    union of boxes, so it reaches at most half the boxes' widest extent beyond them."""
    x0, y0 = boxes[:, 0].min() * width, boxes[:, 1].min() * height
    x1, y1 = boxes[:, 2].max() * width, boxes[:, 3].max() * height
    beyond = max(0.0, -x0, -y0, x1 - width, y1 - height)
    return math.ceil(beyond + max(x1 - x0, y1 - y0, 2.0) / 2) + 1


def frame_bank(
    images: np.ndarray, margin: int, device: torch.device, limit_gib: float = 32.0
) -> torch.Tensor:
    """Every frame as one float32 tensor (N, 3, H + 2m, W + 2m) on the device, its edge pixels
    replicated `margin` pixels outward: a window reaching past the image sees edge pixels, as
    vidssl.train.views.crop_with_padding gives them."""
    count, height, width, _ = images.shape
    shape = (count, 3, height + 2 * margin, width + 2 * margin)
    gib = math.prod(shape) * 4 / 2**30
    if gib > limit_gib:
        raise ValueError(
            f"the padded frame bank {shape} would take {gib:.0f} GiB: the training crop boxes "
            f"reach {margin} pixels beyond the frames; train on clips whose boxes stay near them"
        )
    bank = torch.empty(shape, device=device)
    for start in range(0, count, 256):
        chunk = torch.from_numpy(images[start : start + 256]).to(device).permute(0, 3, 1, 2)
        padding = (margin, margin, margin, margin)
        bank[start : start + len(chunk)] = F.pad(chunk.float(), padding, mode="replicate")
    return bank


class PairWindows:
    """The shared crop window (vidssl.train.views.shared_crop_window) of two frames, in bank
    pixels; remembered, since the same pairs come back step after step."""

    def __init__(self, boxes: np.ndarray, width: int, height: int, margin: int) -> None:
        self.boxes, self.width, self.height, self.margin = boxes, width, height, margin
        self.known: dict[tuple[int, int], tuple[int, ...]] = {}

    def __call__(self, first: int, second: int) -> tuple[int, ...]:
        key = (first, second)
        if key not in self.known:
            window = shared_crop_window(
                [self.boxes[first], self.boxes[second]], self.width, self.height
            )
            self.known[key] = tuple(v + self.margin for v in window)
        return self.known[key]


def object_crops(frames: FrameSet, size: int) -> torch.Tensor:
    """Every frame's object crop as the export stage embeds it (vidssl.train.data.frame_crops:
    the square window around the crop box, edges replicated, resized by eval_transform), uint8
    (N, 3, size, size). Made once: the crops never change, and test boxes may reach far past
    their frames, where a padded bank would not fit in memory."""
    width, height = frames.size
    resize = eval_transform(size)
    crops = []
    for image, box in zip(frames.images, frames.boxes, strict=True):
        crop = crop_with_padding(image, shared_crop_window([box], width, height))
        crops.append(resize(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)))
    return torch.stack(crops)


def clip_batches(count: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of clip numbers: shuffled passes over all clips, back to back."""
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            order = list(range(count))
            rng.shuffle(order)
            pending += order
        yield pending[:batch_size]
        pending = pending[batch_size:]


@dataclass
class PairSampler:
    """Per step: a batch of training clips, two frames of each as the pairing picks them, and
    the pair's shared crop window."""

    clips: list[np.ndarray]
    windows: PairWindows
    pairing: str
    offset: int
    batch_size: int
    rng: random.Random
    batches: Iterator[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        if not self.clips:
            raise ValueError("no training clips: the train split is empty")
        self.batches = clip_batches(len(self.clips), self.batch_size, self.rng)
        self.pairs = build_sampler(
            SimpleNamespace(
                kind="pairs",
                pairing=self.pairing,
                nearby_offset=self.offset,
                views=("first", "second"),
            )
        )

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames (B, 2) bank indices, windows (B, 4) bank pixels), on the CPU."""
        frames, windows = [], []
        for clip_number in next(self.batches):
            clip = self.clips[clip_number]
            positions = self.pairs.positions(len(clip), self.rng, None)
            first, second = (int(i) for i in clip[positions])
            frames.append((first, second))
            windows.append(self.windows(first, second))
        return torch.tensor(frames), torch.tensor(windows, dtype=torch.float32)


# -- the benchmark (on the CPU) ---------------------------------------------------------------


class PoseBenchmark:
    """Zero-shot pose of test queries fitted from training frames, re-identification over
    val + test, category accuracy; fitted IoUs are remembered per (query, reference)."""

    def __init__(self, frames: FrameSet) -> None:
        self.records = frames.records
        self.train, self.test = frames.indices("train"), frames.indices("test")
        self.gallery = frames.indices("val", "test")
        if not len(self.train) or not len(self.test):
            raise ValueError("the pose benchmark needs frames in both the train and test splits")
        self.refinements = int(frames.bench["refinements"])
        self.symmetric_categories = set(frames.bench["symmetric_categories"])
        self.seed = int(frames.bench["seed"])
        self.draws = int(frames.bench["random_fit_draws"])
        self.geometries: dict[int, FrameGeometry] = {}
        self.ious: dict[tuple[int, int], float] = {}

    def geometry(self, index: int) -> FrameGeometry:
        if index not in self.geometries:
            annotation = self.records[index]["annotation"]
            self.geometries[index] = FrameGeometry.from_annotation(annotation)
        return self.geometries[index]

    def fitted_iou(self, query: int, reference: int) -> float:
        """3D IoU of the query's box and the box fitted from the reference frame."""
        if (query, reference) not in self.ious:
            self.ious[(query, reference)] = fitted_iou(
                self.geometry(query),
                self.geometry(reference),
                self.refinements,
                self.records[query]["category"] in self.symmetric_categories,
            )
        return self.ious[(query, reference)]

    def categories(self, indices: np.ndarray) -> list[str]:
        return [self.records[i]["category"] for i in indices]

    def pose(self, references: np.ndarray) -> dict:
        """The pose table (vidssl.evaluate.metrics.pose_table) of the test queries fitted from
        `references`, one training frame a query."""
        ious = [self.fitted_iou(q, r) for q, r in zip(self.test, references, strict=True)]
        return pose_table(np.array(ious), self.categories(self.test))

    def score(self, features: np.ndarray) -> dict:
        """Every benchmark for L2-normalised features of every frame: pose and category
        accuracy from each test query's nearest training frame, re-identification of the test
        queries in the val + test gallery."""
        pairs = nearest_neighbours(features[self.test], features[self.train], k=1)
        references = self.train[np.concatenate([indices[:, 0] for indices, _ in pairs])]
        return {
            "pose": self.pose(references),
            "reid_map": reidentification_map(
                features[self.gallery],
                [self.records[i]["video_id"] for i in self.gallery],
                np.isin(self.gallery, self.test),
            ),
            "category_accuracy": category_accuracy(
                self.categories(self.test), self.categories(references)
            ),
        }

    def random_in_category_fit(self) -> dict:
        """The pose table of each query fitted from a random training frame of its category (any
        training frame where its category has none), averaged over the benchmark's draws."""
        rng = np.random.default_rng(self.seed)
        by_category: dict[str, list[int]] = {}
        for index in self.train:
            by_category.setdefault(self.records[index]["category"], []).append(int(index))
        tables = []
        for _ in range(self.draws):
            references = [
                rng.choice(by_category.get(c, self.train)) for c in self.categories(self.test)
            ]
            tables.append(self.pose(np.array(references)))
        return mean_tables(tables)


# -- training (the accelerator) ----------------------------------------------------------------

TRAINING_OPTIONS: dict[str, dict] = {
    "--steps": {"type": int, "default": 20000, "help": "optimizer steps"},
    "--eval-every": {"type": int, "default": 1000, "help": "steps between evaluations"},
    "--batch-size": {"type": int, "default": 256, "help": "training videos (examples) a step"},
    "--image-size": {"type": int, "default": 64, "help": "side of a view, pixels"},
    "--backbone": {"type": str, "default": "resnet18", "help": "vidssl.train.backbones name"},
    "--base-lr": {"type": float, "default": 0.05, "help": "scaled by batch-size / 256"},
    "--warmup-fraction": {
        "type": float, "default": 0.1, "help": "of the steps: linear warm-up, then cosine to 0",
    },
    "--momentum": {"type": float, "default": 0.9, "help": "SGD momentum"},
    "--weight-decay": {"type": float, "default": 1e-4, "help": "SGD weight decay"},
    "--augmentation": {"type": str, "default": "lc_px", "choices": PRESETS, "help": "preset"},
    "--nearby-offset": {"type": int, "default": 1, "help": "kept frames between nearby views"},
    "--projection-dim": {"type": int, "default": 2048, "help": "projector output"},
    "--predictor-dim": {"type": int, "default": 512, "help": "SimSiam predictor bottleneck"},
    "--temperature": {"type": float, "default": 0.1, "help": "NT-Xent temperature"},
    "--embed-batch": {"type": int, "default": 1024, "help": "crops a forward when embedding"},
    "--threads": {"type": int, "default": 4, "help": "CPU threads of a run"},
    "--log-every": {"type": float, "default": 30.0, "help": "seconds between progress lines"},
    "--device": {
        "type": str, "default": "auto", "choices": ("auto", "cuda", "cpu"),
        "help": "auto: cuda when torch sees one",
    },
}  # fmt: skip


def option_name(flag: str) -> str:
    return flag[2:].replace("-", "_")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    for flag, settings in TRAINING_OPTIONS.items():
        parser.add_argument(
            flag, **{**settings, "help": f"{settings['help']} (default {settings['default']})"}
        )


def training_argv(options: argparse.Namespace) -> list[str]:
    """The command-line form of the shared training options (a sweep hands them to runs)."""
    return [
        part
        for flag in TRAINING_OPTIONS
        for part in (flag, str(getattr(options, option_name(flag))))
    ]


def run_name(method: str, pairing: str, seed: int) -> str:
    return f"{method}-{pairing}-seed{seed}"


def train_config(options: argparse.Namespace) -> SimpleNamespace:
    """What vidssl.train.methods.build_method reads of a `train:` section (as attributes: no
    pydantic on the GPU machine)."""
    return SimpleNamespace(
        backbone=options.backbone,
        weights=None,
        method=SimpleNamespace(
            kind=options.method,
            projection_dim=options.projection_dim,
            predictor_dim=options.predictor_dim,
            temperature=options.temperature,
        ),
    )


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine to 0 at `total` (the trainer's)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sgd(model: nn.Module, options: argparse.Namespace) -> torch.optim.SGD:
    """The trainer's optimiser: one group at the scheduled lr, one (SimSiam's predictor) fixed."""
    return torch.optim.SGD(
        [
            {"params": group["params"], "fix_lr": group.get("fixed_lr", False)}
            for group in model.learnable_params()
        ],
        lr=0.0,
        momentum=options.momentum,
        weight_decay=options.weight_decay,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, scheduled: float, fixed: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = fixed if group["fix_lr"] else scheduled


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device here (use --device cpu)")
    return torch.device(name)


@torch.no_grad()
def embed_crops(
    encoder: nn.Module, crops: torch.Tensor, batch: int, memory_format: torch.memory_format
) -> np.ndarray:
    """L2-normalised encoder features (float32, CPU) of uint8 crops, the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    features = []
    try:
        for start in range(0, len(crops), batch):
            images = normalize(crops[start : start + batch]).contiguous(memory_format=memory_format)
            with torch.autocast(crops.device.type, torch.bfloat16, enabled=crops.is_cuda):
                output = encoder(images)
            features.append(F.normalize(output.float(), dim=-1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(features).numpy()


class Meter:
    """Training since the last evaluation: steps, summed loss (left on the device, so a step
    never waits for the accelerator) and time, read after the accelerator caught up."""

    def __init__(self) -> None:
        self.steps, self.loss_sum, self.started = 0, None, time.monotonic()

    def add(self, loss: torch.Tensor) -> None:
        self.steps += 1
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss

    def summary(self, batch_size: int) -> dict:
        seconds = time.monotonic() - self.started
        rate = self.steps / seconds if self.steps else None
        return {
            "loss": float(self.loss_sum) / self.steps if self.loss_sum is not None else None,
            "steps_per_s": rate,
            "images_per_s": rate * batch_size * VIEWS if rate else None,
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(options: argparse.Namespace, device: torch.device) -> dict:
    """What a result line records of its run."""
    return {
        "run": run_name(options.method, options.pairing, options.seed),
        "method": options.method,
        "pairing": options.pairing,
        "seed": options.seed,
        "data": str(options.data),
        **{option_name(flag): getattr(options, option_name(flag)) for flag in TRAINING_OPTIONS},
        "device": str(device),
    }


class CurveRun:
    """One training run: the frame bank and the model on the device, the pair sampler and the
    benchmark on the CPU, and the JSONL file of evaluations."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.started = time.monotonic()
        self.options = options
        torch.set_num_threads(options.threads)
        self.device = resolve_device(options.device)
        self.name = run_name(options.method, options.pairing, options.seed)
        frames = load_frame_set(Path(options.data))
        self.eval_crops = object_crops(frames, options.image_size).to(self.device)
        training = frames.subset("train")
        width, height = training.size
        margin = bank_margin(training.boxes, width, height)
        self.bank = frame_bank(training.images, margin, self.device)
        self.sampler = PairSampler(
            training_clips(training), PairWindows(training.boxes, width, height, margin),
            options.pairing, options.nearby_offset, options.batch_size,
            random.Random(options.seed),
        )  # fmt: skip
        self.benchmark = PoseBenchmark(frames)
        self.baseline = self.benchmark.random_in_category_fit()
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        torch.backends.cudnn.benchmark = self.cuda
        torch.manual_seed(options.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(options.seed)
        self.model = build_method(train_config(options)).to(
            self.device, memory_format=self.memory_format
        )
        self.optimizer = sgd(self.model, options)
        self.peak_lr = options.base_lr * options.batch_size / 256
        self.warmup = round(options.warmup_fraction * options.steps)
        self.config = run_config(options, self.device)
        Path(options.out).mkdir(parents=True, exist_ok=True)
        self.results = Path(options.out) / f"{self.name}.jsonl"
        self.results.write_text("")  # a new run replaces an old file of the same name
        print(
            f"{self.name}: {len(frames.records)} frames, {len(self.sampler.clips)} training "
            f"clips, on {self.device}; random in-category fit "
            f"{self.baseline['3d_map']:.3f}",
            flush=True,
        )

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.peak_lr, self.warmup, self.options.steps)

    def views(self) -> list[torch.Tensor]:
        """A batch of augmented, normalised views, on the device."""
        frames, windows = self.sampler.sample()
        if self.cuda:  # pinned: the copies below then leave the host free to queue more work
            frames, windows = frames.pin_memory(), windows.pin_memory()
        frames = frames.to(self.device, non_blocking=True)
        windows = windows.to(self.device, non_blocking=True)
        views = augment_views(
            self.bank, frames, windows,
            self.options.augmentation, self.options.image_size, self.generator,
        )  # fmt: skip
        return [normalize(v).contiguous(memory_format=self.memory_format) for v in views]

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, projections), both detached."""
        set_learning_rate(self.optimizer, self.learning_rate(step), self.peak_lr)
        first, second = self.views()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.cuda):
            losses, projections = self.model({"first": first, "second": second})
        loss = total_loss(losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), projections

    def evaluate(self, step: int, meter: Meter, projections: torch.Tensor | None) -> dict:
        """Score the encoder, append the line to the results, print it."""
        synchronize(self.device)
        training = meter.summary(self.options.batch_size)
        began = time.monotonic()
        features = embed_crops(
            self.model.encoder, self.eval_crops, self.options.embed_batch, self.memory_format
        )
        row = {
            "step": step,
            **training,
            "collapse_std": collapse_std(projections) if projections is not None else None,
            "lr": self.learning_rate(max(step - 1, 0)),
            **self.benchmark.score(features),
            "eval_s": round(time.monotonic() - began, 2),
            "wall_s": round(time.monotonic() - self.started, 2),
            "random_in_category_fit": self.baseline,
            "config": self.config,
        }
        with self.results.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        print(evaluation_line(self.name, row), flush=True)
        return row

    def log_progress(self, done: int, loss: torch.Tensor) -> None:
        rate = done / (time.monotonic() - self.started)
        eta = format_eta((self.options.steps - done) / rate)
        print(
            f"{self.name} step {done}/{self.options.steps} loss {float(loss):.4f} "
            f"lr {self.learning_rate(done - 1):.4g}, {rate:.2f} steps/s overall, ETA {eta}",
            flush=True,
        )

    def fit(self) -> Path:
        """Train for `steps`, evaluating at 0, every `eval_every` and at the last step."""
        options = self.options
        self.evaluate(0, Meter(), None)
        meter, last_log = Meter(), time.monotonic()
        for step in range(options.steps):
            loss, projections = self.train_step(step)
            meter.add(loss)
            done = step + 1
            if done % options.eval_every == 0 or done == options.steps:
                row = self.evaluate(done, meter, projections)
                if not math.isfinite(row["loss"]):
                    raise SystemExit(f"{self.name}: the loss is {row['loss']}; lower --base-lr")
                meter = Meter()
            elif time.monotonic() - last_log >= options.log_every:
                last_log = time.monotonic()
                self.log_progress(done, loss)
        return self.results


def evaluation_line(name: str, row: dict) -> str:
    text = (
        f"{name} step {row['step']}: 3D mAP {metric(row, POSE_METRIC):.3f} "
        f"(pooled {metric(row, POOLED_METRIC):.3f}), re-ID mAP {row['reid_map']:.3f}, "
        f"category accuracy {row['category_accuracy']:.3f}"
    )
    if row["loss"] is not None:
        text += (
            f"; loss {row['loss']:.4f}, collapse-std {row['collapse_std']:.4f}, "
            f"{row['steps_per_s']:.2f} steps/s ({row['images_per_s']:.0f} images/s)"
        )
    return text


# -- several runs on one GPU -------------------------------------------------------------------


def parse_run(text: str) -> tuple[str, str]:
    method, _, pairing = text.partition(":")
    if method not in METHODS or pairing not in PAIRINGS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a run is METHOD:PAIRING, METHOD in {METHODS}, PAIRING in {PAIRINGS}"
        )
    return method, pairing


def _forward_lines(name: str, stream: Iterable[str]) -> None:
    for line in stream:
        print(f"[{name}] {line}", end="", flush=True)


def train_command(options: argparse.Namespace, method: str, pairing: str, seed: int) -> list[str]:
    """The `train` command of one run of a sweep."""
    return [
        sys.executable, "-m", "vidssl.perf.siampose_curve", "train", str(options.data),
        "--out", str(options.out), "--method", method, "--pairing", pairing, "--seed", str(seed),
        *training_argv(options),
    ]  # fmt: skip


def sweep(options: argparse.Namespace) -> None:
    """Every (run, seed) as its own `train` process, at most `parallel` at once, their output
    prefixed with the run's name; then `plot`. Exits with an error if a run failed."""
    jobs = deque(
        (method, pairing, seed) for method, pairing in options.runs for seed in options.seeds
    )
    environment = {**os.environ, "OMP_NUM_THREADS": str(options.threads), "PYTHONUNBUFFERED": "1"}
    running: list[tuple[str, subprocess.Popen, threading.Thread]] = []
    failed: list[str] = []
    try:
        while jobs or running:
            while jobs and len(running) < options.parallel:
                method, pairing, seed = jobs.popleft()
                name = run_name(method, pairing, seed)
                process = subprocess.Popen(
                    train_command(options, method, pairing, seed), stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, env=environment,
                )  # fmt: skip
                forwarder = threading.Thread(
                    target=_forward_lines, args=(name, process.stdout), daemon=True
                )
                forwarder.start()
                running.append((name, process, forwarder))
                print(f"started {name} ({len(jobs)} waiting)", flush=True)
            for entry in list(running):
                name, process, forwarder = entry
                if process.poll() is not None:
                    forwarder.join()
                    running.remove(entry)
                    if process.returncode:
                        failed.append(f"{name} (exit {process.returncode})")
            time.sleep(0.5)
    finally:
        for _, process, _ in running:  # interrupted: stop the runs this sweep started
            process.terminate()
    if any(Path(options.out).glob("*.jsonl")):
        print(plot(Path(options.out), Path(options.out) / "curve.png"))
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: {', '.join(failed)}")


# -- the curves ----------------------------------------------------------------------------------


def load_runs(folder: Path) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """(method, pairing) -> seed -> that run's rows, in step order."""
    runs: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            config = rows[0]["config"]
            key = (config["method"], config["pairing"])
            runs.setdefault(key, {})[config["seed"]] = sorted(rows, key=lambda r: r["step"])
    if not runs:
        raise FileNotFoundError(f"{folder}: no results (*.jsonl); run `train` or `sweep` first")
    return runs


def curve(seeds: dict[int, list[dict]], path: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values seeds x steps; NaN where a seed has no row at a step)."""
    steps = np.array(sorted({row["step"] for rows in seeds.values() for row in rows}))
    values = np.full((len(seeds), len(steps)), np.nan)
    for i, rows in enumerate(seeds.values()):
        for row in rows:
            values[i, np.searchsorted(steps, row["step"])] = metric(row, path)
    return steps, values


def random_embedding_rows(runs: dict) -> list[dict]:
    """One step-0 row per seed: the untrained encoder (built first, from the seed, whatever the
    method), the random-embedding baseline."""
    first = {seed: rows[0] for seeds in runs.values() for seed, rows in seeds.items()}
    return [row for row in first.values() if row["step"] == 0]


def random_fit(runs: dict) -> dict:
    """The random in-category fit (every run draws it with the benchmark's seed)."""
    seeds = next(iter(runs.values()))
    return next(iter(seeds.values()))[0]["random_in_category_fit"]


def mean_std(values: list[float]) -> str:
    array = np.asarray(values, float)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.3f} ± {spread:.3f}"


TABLE_COLUMNS = (
    ("3D mAP (category mean)", POSE_METRIC),
    ("IoU > 0.5 (pooled)", POOLED_METRIC),
    ("re-ID mAP", ("reid_map",)),
    ("category accuracy", ("category_accuracy",)),
)


def table_cells(label: str, rows: list[dict]) -> list[str]:
    """Mean ± std over `rows` (one a seed) of each column."""
    steps = sorted({row["step"] for row in rows})
    step = f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0])
    cells = [mean_std([metric(row, path) for row in rows]) for _, path in TABLE_COLUMNS]
    return [label, str(len(rows)), step, *cells]


def results_table(runs: dict) -> str:
    """Final-step scores per method and pairing (mean ± std over seeds), and the baselines."""
    rows = [
        table_cells(f"{method} {pairing}", [rows[-1] for rows in seeds.values()])
        for (method, pairing), seeds in sorted(runs.items())
    ]
    random_rows = random_embedding_rows(runs)
    if random_rows:
        rows.append(table_cells("random embedding (step 0)", random_rows))
    fit = random_fit(runs)
    pose = [f"{fit['3d_map']:.3f}", f"{fit['pooled']['fraction_iou_over_0.5']:.3f}"]
    rows.append(["random in-category fit", "-", "-", *pose, "-", "-"])
    header = ["run", "seeds", "step", *(name for name, _ in TABLE_COLUMNS)]
    return markdown_table(header, rows, align="l" * len(header))


def plot(folder: Path, out: Path) -> str:
    """Draw the curves to `out` (3D mAP and re-ID mAP against steps: mean over seeds, min-max
    band; the random baselines as horizontal lines); returns the Markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(folder)
    random_rows = random_embedding_rows(runs)
    fit = random_fit(runs)["3d_map"]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = ((axes[0], POSE_METRIC, "3D mAP (IoU > 0.5, category mean)"),
              (axes[1], ("reid_map",), "re-identification mAP"))  # fmt: skip
    for axis, path, title in panels:
        for (method, pairing), seeds in sorted(runs.items()):
            steps, values = curve(seeds, path)
            label = f"{method} {pairing} ({len(seeds)} seeds)"
            (drawn,) = axis.plot(steps, np.nanmean(values, axis=0), label=label)
            axis.fill_between(
                steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                color=drawn.get_color(), alpha=0.2,
            )  # fmt: skip
        if random_rows:
            level = np.mean([metric(row, path) for row in random_rows])
            axis.axhline(level, color="grey", linestyle="--", label="random embedding (step 0)")
        if path == POSE_METRIC:
            axis.axhline(fit, color="black", linestyle=":", label="random in-category fit")
        axis.set_xlabel("training steps")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return results_table(runs)


# -- command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m vidssl.perf.siampose_curve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)
    step = commands.add_parser("prepare", help="write an experiment's frames and records")
    step.add_argument("experiment", help="experiment name, e.g. siampose_synthetic")
    step.add_argument("--out", type=Path, required=True)
    step = commands.add_parser("train", help="one run, one JSONL file of evaluations")
    step.add_argument("data", type=Path, help="a folder `prepare` wrote")
    step.add_argument("--out", type=Path, required=True, help="results folder")
    step.add_argument("--method", choices=METHODS, required=True)
    step.add_argument("--pairing", choices=PAIRINGS, required=True)
    step.add_argument("--seed", type=int, default=0)
    add_training_options(step)
    step = commands.add_parser("sweep", help="several runs in parallel on one GPU, then plot")
    step.add_argument("data", type=Path, help="a folder `prepare` wrote")
    step.add_argument("--out", type=Path, required=True, help="results folder")
    step.add_argument("--runs", type=parse_run, nargs="+", required=True, help="METHOD:PAIRING")
    step.add_argument("--seeds", type=int, nargs="+", default=[0])
    step.add_argument("--parallel", type=int, default=4, help="runs at once")
    add_training_options(step)
    step = commands.add_parser("plot", help="curves and the final-step table of a results folder")
    step.add_argument("results", type=Path)
    step.add_argument("--out", type=Path, required=True, help="PNG file")
    return root


def main(argv: list[str] | None = None) -> None:
    options = parser().parse_args(argv)
    if options.command == "prepare":
        prepare(options.experiment, options.out)
    elif options.command == "train":
        CurveRun(options).fit()
    elif options.command == "sweep":
        sweep(options)
    else:
        print(plot(options.results, options.out))


if __name__ == "__main__":
    main()
