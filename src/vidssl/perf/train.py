"""`make perf-train`: training throughput.

- CPU demo: images/s of the default experiment's training (its own config: small ResNet, 64 px,
  its method on nearby pairs) over a fixed number of steps, and the demo's projected training time.
- Input pipeline alone at 224 px (the ResNet-50 configuration's loader, workers and batch, no
  model): how many images/s the CPU cores can feed a GPU.
- GPU (when one is present): ResNet-50 224 px, the demo's method with a 2048-d projection,
  through the trainer (bf16 autocast,
  channels_last, loader workers, transforms v2 on uint8 tensors) next to a plain loop of the
  same model and batch (fp32, no channels_last, PIL transforms), in the same run, with the GPU's
  utilisation sampled from nvidia-smi while each runs.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import threading
import time
import uuid
from typing import NamedTuple

import torch

from vidssl.config import Experiment, load_experiment
from vidssl.perf import save_results
from vidssl.stages.base import store_for
from vidssl.stages.prepare import prepared_clips
from vidssl.train.methods import build_method, total_loss
from vidssl.train.trainer import Trainer


def trainer_images_per_second(
    experiment: Experiment, clips_url: str, steps: int, warmup: int = 10
) -> float:
    """Images/s (examples x views) of the trainer over `steps` steps, timed from the end of the
    `warmup`-th step of the same run (loader workers started, buffers filled)."""
    store = store_for(experiment)
    prefix = f"perf/train/{uuid.uuid4().hex[:8]}"
    cfg = experiment.train.model_copy(update={"checkpoint_every": 10**9})
    torch.manual_seed(cfg.seed)
    trainer = Trainer(
        build_method(cfg), cfg, store, prefix, experiment.store_uri(), store.key_of(clips_url),
        steps_per_epoch=10**6,
    )  # fmt: skip
    cuda = trainer.device.type == "cuda"
    marks: dict[int, float] = {}

    def mark(step: int) -> None:
        if step in (warmup, warmup + steps):
            if cuda:
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()

    trainer.fit(stop_after_step=warmup + steps, on_step=mark)
    store.delete_prefix(prefix + "/")
    seconds = marks[warmup + steps] - marks[warmup]
    return steps * cfg.batch_size * len(cfg.sampler.views) / seconds


def loader_images_per_second(experiment: Experiment, clips_url: str, batches: int) -> float:
    """What the trainer's input pipeline alone delivers (its DataLoader, workers and batch; no
    model), after 2 warm-up batches: the ceiling on the trainer's rate."""
    store = store_for(experiment)
    trainer = Trainer(
        build_method(experiment.train), experiment.train, store, "perf/loader",
        experiment.store_uri(), store.key_of(clips_url), steps_per_epoch=10**6,
    )  # fmt: skip
    loader = iter(trainer.loader(0))
    for _ in range(2):
        next(loader)
    started = time.perf_counter()
    images = sum(sum(len(view) for view in next(loader).values()) for _ in range(batches))
    return images / (time.perf_counter() - started)


class GpuUtilisation:
    """GPU utilisation (%) sampled every `interval` s while the block runs, through NVML
    (`pynvml`, nvidia-ml-py) where it imports, else `nvidia-smi`. Each sample keeps its time, so
    a measurement can average over its timed window alone (`mean_between`), leaving out loader
    start-up and compilation, when the GPU idles by design."""

    def __init__(self, interval: float = 0.5, device_index: int | None = None) -> None:
        self.interval = interval
        if device_index is None and torch.cuda.is_available():
            device_index = torch.cuda.current_device()
        self.device_index = device_index or 0

    def __enter__(self) -> GpuUtilisation:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._read = self._nvml_reader() or self._smi_reader
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _nvml_reader(self):  # type: ignore[no-untyped-def]
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        except Exception:  # no pynvml, or NVML unusable here: nvidia-smi instead
            return None
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def _smi_reader(self) -> float | None:
        out = subprocess.run(
            ["nvidia-smi", f"--id={self.device_index}", "--query-gpu=utilization.gpu",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return parse_utilisation(out.stdout) if out.returncode == 0 else None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                value = self._read()
            except Exception:  # one failed read must not end the sampling
                value = None
            if value is not None:
                self.samples.append((time.perf_counter(), value))

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean_between(self, start: float, end: float = float("inf")) -> float:
        """Mean of the samples taken in [start, end] (perf_counter times); NaN if none."""
        values = [value for at, value in self.samples if start <= at <= end]
        return sum(values) / len(values) if values else float("nan")

    @property
    def mean(self) -> float:
        return self.mean_between(float("-inf"))


def parse_utilisation(text: str) -> float | None:
    """nvidia-smi's `utilization.gpu` (csv, noheader, nounits) as a number; None where it
    reads `[N/A]` (MIG slices, some virtualised GPUs) or is empty."""
    first = text.strip().split("\n")[0].strip() if text.strip() else ""
    try:
        return float(first)
    except ValueError:
        return None


class TimedLoop(NamedTuple):
    """A timed loop's rate, its timed steps and their window's perf_counter times."""

    images_per_second: float
    steps: int
    start: float
    end: float


def plain_loop_images_per_second(
    experiment: Experiment, clips_url: str, steps: int, seconds: float = float("inf"),
    warmup: int = 5,
) -> TimedLoop:  # fmt: skip
    """The same model and batch, fp32, default memory format, PIL transforms (v1): images/s over
    `steps` steps after `warmup`, or over as many as fit in `seconds`."""
    from PIL import Image
    from torch.utils.data import DataLoader, IterableDataset
    from torchvision import transforms as T

    from vidssl.config import PairsSampler
    from vidssl.shards import decode_json, read_split
    from vidssl.train.data import frame_box
    from vidssl.train.samplers import build_sampler
    from vidssl.train.views import shared_crop_window

    cfg = experiment.train
    store = store_for(experiment)
    prefix = store.key_of(clips_url)
    transform = T.Compose(
        [
            T.RandomResizedCrop(cfg.image_size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    class PilPairs(IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            import random

            rng = random.Random(0)
            nearby = build_sampler(PairsSampler(pairing="nearby"))
            for sample in read_split(store, prefix, "train", resampled=True, seed=1):
                meta = decode_json(sample)
                a, b = nearby.positions(meta["num_frames"], rng, None)
                images = [
                    Image.open(io.BytesIO(sample[f"f{p:03d}.jpg"])).convert("RGB") for p in (a, b)
                ]
                window = shared_crop_window(
                    [frame_box(meta, a), frame_box(meta, b)], *images[0].size
                )
                yield [transform(image.crop(window)) for image in images]

    device = torch.device("cuda")
    model = build_method(cfg).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = iter(DataLoader(PilPairs(), batch_size=cfg.batch_size, num_workers=cfg.loader_workers))
    timed = 0
    started = float("inf")
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        elif step > warmup and time.perf_counter() - started >= seconds:
            break
        first, second = (v.to(device) for v in next(loader))
        losses, _ = model({"first": first, "second": second})
        loss = total_loss(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timed += step >= warmup
    torch.cuda.synchronize()
    ended = time.perf_counter()
    return TimedLoop(timed * cfg.batch_size * 2 / (ended - started), timed, started, ended)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--gpu-steps", type=int, default=100)
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--loader-batches", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("VIDSSL_STORE_URI", "s3://vidssl")
    demo = load_experiment("siampose_synthetic")
    clips_url = prepared_clips(demo)
    results: dict = {"cores": os.cpu_count()}
    rate = trainer_images_per_second(demo, clips_url, args.steps)
    cfg = demo.train
    total_images = cfg.epochs * (cfg.steps_per_epoch or 0) * cfg.batch_size * len(cfg.sampler.views)
    results["cpu_demo"] = {
        "images_per_second": round(rate, 1),
        "steps_per_second": round(rate / cfg.batch_size / len(cfg.sampler.views), 2),
        "projected_training_minutes": round(total_images / rate / 60, 1),
        "config": {
            k: getattr(cfg, k)
            for k in ("backbone", "image_size", "batch_size", "epochs", "steps_per_epoch")
        },
    }
    setup = f"{cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}"
    minutes = results["cpu_demo"]["projected_training_minutes"]
    steps = cfg.epochs * (cfg.steps_per_epoch or 0)
    print(
        f"CPU demo ({setup}) on {os.cpu_count()} cores: {rate:.1f} images/s; "
        f"{steps} steps take ~{minutes} min"
    )
    workers = min(8, os.cpu_count() or 1)
    gpu_cfg = demo.train.model_copy(
        update={"backbone": "resnet50", "image_size": 224, "batch_size": args.gpu_batch,
                "method": demo.train.method.model_copy(update={"projection_dim": 2048}),
                "loader_workers": workers}
    )  # fmt: skip
    gpu_demo = demo.model_copy(update={"train": gpu_cfg})
    feed = loader_images_per_second(gpu_demo, clips_url, args.loader_batches)
    results["input_pipeline_224px"] = {
        "workers": workers,
        "images_per_second": round(feed, 1),
        "images_per_second_per_worker": round(feed / workers, 1),
    }
    print(
        f"input pipeline alone (224 px, batch {args.gpu_batch}, {workers} workers): "
        f"{feed:.0f} images/s ({feed / workers:.0f} per worker)"
    )
    if torch.cuda.is_available():
        with GpuUtilisation() as ours_util:
            ours = trainer_images_per_second(gpu_demo, clips_url, args.gpu_steps)
        with GpuUtilisation() as plain_util:
            loop = plain_loop_images_per_second(gpu_demo, clips_url, args.gpu_steps)
        plain = loop.images_per_second
        results["gpu"] = {
            "device": torch.cuda.get_device_name(),
            "trainer_images_per_second": round(ours, 1),
            "trainer_gpu_utilisation": round(ours_util.mean, 1),
            "plain_images_per_second": round(plain, 1),
            "plain_gpu_utilisation": round(plain_util.mean, 1),
            "speedup": round(ours / plain, 2),
        }
        print(
            f"GPU {results['gpu']['device']}: trainer {ours:.0f} images/s "
            f"({ours_util.mean:.0f}% busy) vs plain loop {plain:.0f} images/s "
            f"({plain_util.mean:.0f}% busy): {ours / plain:.2f}x"
        )
    else:
        print(
            "no GPU on this machine: the ResNet-50 224 px comparison needs one (run on a GPU node)"
        )
    save_results("train", results)
    return results


if __name__ == "__main__":
    main()
