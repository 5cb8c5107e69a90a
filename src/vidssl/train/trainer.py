"""The one training loop every method shares (it never names one: vidssl.train.methods): SGD
over the method's parameter groups with lr scaled by batch/256 (groups marked `fixed_lr` kept at
the peak), linear warm-up then cosine over the epochs actually trained, the method's hook after
each optimiser step (momentum encoders), the step's speed-up switches (bf16 autocast,
channels_last, torch.compile, CUDA graphs, fused SGD, pinned memory: train.step_options), DDP under
torchrun (batch norm over the global batch when the method asks, on the CPU too:
vidssl.train.global_batch_norm), checkpoints in the store every N steps with exact resume, every
loss term logged, guarded and exported to Prometheus, the collapse monitor, kNN category
accuracy on val each epoch, progress with rate and ETA, and a stop with a clear message when a
loss diverges."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from vidssl.config import TrainConfig
from vidssl.progress import format_eta
from vidssl.store import ObjectStore
from vidssl.train.augment import normalize
from vidssl.train.checkpoint_io import load_state, state_bytes
from vidssl.train.data import TrainingExamples
from vidssl.train.embed import embed_split, knn_accuracy
from vidssl.train.global_batch_norm import synchronise_batch_norm
from vidssl.train.gpu_input import EncodedExamples, GpuViews, collate_encoded
from vidssl.train.methods import Method, total_loss
from vidssl.train.monitor import DivergenceGuard, TrainingDiverged, collapse_std
from vidssl.train.step_options import (
    StepModel,
    build_sgd,
    load_optimizer_state,
    log_cuda_only_switches,
    pin_memory,
)
from vidssl.train.telemetry import TrainMetrics, serving_port

log = logging.getLogger(__name__)

LATEST = "checkpoints/latest.json"


def latest_checkpoint(store: ObjectStore, prefix: str) -> str | None:
    """The key of the newest checkpoint saved under `prefix`, or None."""
    if not store.exists(f"{prefix}/{LATEST}"):
        return None
    return f"{prefix}/{json.loads(store.get_text(f'{prefix}/{LATEST}'))['key']}"


def checkpoint_step(store: ObjectStore, prefix: str) -> int:
    """The step of the newest checkpoint under `prefix` (-1 when there is none)."""
    if not store.exists(f"{prefix}/{LATEST}"):
        return -1
    return int(json.loads(store.get_text(f"{prefix}/{LATEST}"))["step"])


def peak_learning_rate(cfg: TrainConfig) -> float:
    return cfg.optimizer.base_lr * cfg.batch_size / 256


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over `optimizer.warmup_epochs`, then cosine to 0 at the end of `epochs`."""
    peak = peak_learning_rate(cfg)
    warmup = cfg.optimizer.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world)

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        model: Method,
        cfg: TrainConfig,
        store: ObjectStore,
        output_prefix: str,
        store_uri: str,
        clips_prefix: str,
        steps_per_epoch: int,
        job: str = "vidssl-train",
        device: torch.device | None = None,
        resume_from: str | None = None,
        experiment: str = "unnamed",
        tracks_prefix: str | None = None,
    ) -> None:
        """Checkpoints go under `output_prefix`; training resumes from the checkpoint at key
        `resume_from` (another run's), else from `output_prefix`'s latest, if any. Metrics are
        labelled with `experiment` and pushed under `job`. `tracks_prefix`: the flow stage's
        tracks of the clips, read beside them (samplers that learn from tracks)."""
        self.cfg, self.store, self.prefix = cfg, store, output_prefix
        self.resume_from = resume_from
        self.store_uri, self.clips_prefix = store_uri, clips_prefix
        self.tracks_prefix = tracks_prefix
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.epochs * steps_per_epoch
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.distributed = Distributed.from_environment(self.device)
        self.model = model.to(self.device)
        if cfg.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_sgd(
            [
                {"params": group["params"], "name": group["name"],
                 "fix_lr": group.get("fixed_lr", False)}
                for group in self.model.learnable_params()
            ],
            lr=learning_rate(cfg, 0, steps_per_epoch),
            momentum=cfg.optimizer.momentum,
            weight_decay=cfg.optimizer.weight_decay,
            fused=cfg.fused_optimizer,
        )  # fmt: skip
        self.forward_model: torch.nn.Module = self.model
        if self.distributed.world > 1:
            if self.model.sync_batch_norm:
                self.model = synchronise_batch_norm(self.model, self.device)
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.model)
        log_cuda_only_switches(cfg, self.device)
        self.step_model = StepModel(self.forward_model, cfg, self.device)  # train.compile
        self.metrics = TrainMetrics(
            job,
            serving_port(cfg.metrics_port) if self.distributed.main else 0,
            experiment=experiment,
        )
        self.guards: dict[str, DivergenceGuard] = {}
        self.step = 0
        self.history: list[dict] = []
        self.gpu_views = (  # train.input: gpu: views decoded and augmented on the device
            GpuViews(
                cfg,
                self.device,
                seed=cfg.seed * 1000 + self.distributed.rank,
                channels_last=cfg.channels_last and self.device.type == "cuda",
            )
            if cfg.input == "gpu"
            else None
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if not self.distributed.main:
            return
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
        }
        key = f"checkpoints/step-{self.step:08d}.pt"
        self.store.put(f"{self.prefix}/{key}", state_bytes(state))
        previous = latest_checkpoint(self.store, self.prefix)
        self.store.put_text(f"{self.prefix}/{LATEST}", json.dumps({"step": self.step, "key": key}))
        if previous and previous != f"{self.prefix}/{key}":  # keep the newest once it is named
            self.store.delete(previous)
        log.info("checkpoint at step %d: %s", self.step, self.store.url(f"{self.prefix}/{key}"))

    def resume(self) -> bool:
        key = self.resume_from or latest_checkpoint(self.store, self.prefix)
        if key is None:
            return False
        state = load_state(self.store.get(key), self.store.url(key), self.device)
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])  # keeps this run's fused
        self.step, self.history = state["step"], state["history"]
        log.info("resuming from step %d (%s)", self.step, self.store.url(key))
        return True

    # -- the loop --------------------------------------------------------------------------------

    def loader(self, epoch: int) -> DataLoader:
        torch.manual_seed(self.cfg.seed * 1000 + epoch)  # in-process augmentation draws
        encoded = self.cfg.input == "gpu"  # workers hand over JPEG bytes (vidssl.train.gpu_input)
        dataset = (EncodedExamples if encoded else TrainingExamples)(
            self.store_uri,
            self.clips_prefix,
            self.cfg,
            epoch,
            self.distributed.rank,
            tracks_prefix=self.tracks_prefix,
        )
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size // self.distributed.world,
            num_workers=self.cfg.loader_workers,
            pin_memory=pin_memory(self.cfg, self.device),
            drop_last=True,
            collate_fn=collate_encoded if encoded else None,
            generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch),
            persistent_workers=False,
            prefetch_factor=4 if self.cfg.loader_workers else None,
        )

    def _guard(self, losses: dict[str, float]) -> None:
        """Every loss term and their total: finite, and no sudden jump (DivergenceGuard)."""
        for name, value in losses.items():
            guard = self.guards.setdefault(name, DivergenceGuard(self.cfg.explode_factor))
            try:
                guard.check(value, self.step)
            except TrainingDiverged as exc:
                raise TrainingDiverged(f"{name}: {exc}") from None

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], float]:
        cfg = self.cfg
        lr = learning_rate(cfg, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = peak_learning_rate(cfg) if group["fix_lr"] else lr
        if self.gpu_views is not None:  # encoded frames: decoded and augmented on the device
            batch = self.gpu_views(batch, self.step)
        else:
            batch = {name: self._on_device(tensor) for name, tensor in batch.items()}
        use_amp = cfg.amp and self.device.type == "cuda"

        def forward_backward(model: torch.nn.Module) -> tuple[dict, torch.Tensor, torch.Tensor]:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                terms, projections = model(batch)
            loss = total_loss(terms)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return terms, loss, projections

        # compiled or eager (train.compile; run again eagerly if compiling fails)
        terms, loss, projections = self.step_model.run(forward_backward)
        values = {"loss": float(loss.detach())}
        if len(terms) > 1:
            values.update({name: float(term.detach()) for name, term in terms.items()})
        self._guard(values)  # before the optimiser step: a diverged loss changes no weight
        self.optimizer.step()
        self.step += 1
        self.model.after_optimizer_step(self.step, self.total_steps)
        return values, collapse_std(projections)

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the model's device: uint8 images (..., 3, H, W) normalised to
        float (augment.normalize), 4-D float images channels_last when the config asks for it
        on GPU; anything else (points, indices, masks) only moved."""
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.dtype != torch.uint8:
            return tensor
        images = normalize(tensor)
        if images.ndim == 4 and self.cfg.channels_last and self.device.type == "cuda":
            return images.contiguous(memory_format=torch.channels_last)
        return images.contiguous()

    def _log_progress(self, epoch: int, losses: dict[str, float], std: float, rate: float) -> None:
        eta = format_eta((self.total_steps - self.step) * self.cfg.batch_size / max(rate, 1e-9))
        lr = learning_rate(self.cfg, self.step - 1, self.steps_per_epoch)
        terms = " ".join(f"{name} {value:.4f}" for name, value in losses.items())
        log.info(
            "step %d/%d epoch %d %s lr %.4g collapse-std %.4f %.1f samples/s ETA %s",
            self.step, self.total_steps, epoch, terms, lr, std, rate, eta,
        )  # fmt: skip
        self.metrics.push()

    def fit(
        self,
        stop_after_step: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train to `epochs` (or stop early after a given step, as a crash would); `on_step`
        is called with the step number after each step (benchmarks time steady-state steps)."""
        cfg = self.cfg
        self.resume()
        started, done_here = time.monotonic(), 0
        while self.step < self.total_steps:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            batches = iter(self.loader(epoch))
            for _ in range(skip):  # a resumed epoch: draw the batches already trained on
                next(batches)
            sums: dict[str, float] = {}
            stds = []
            for _ in range(skip, self.steps_per_epoch):
                asked = time.perf_counter()
                batch = next(batches)
                waited = time.perf_counter() - asked
                try:
                    losses, std = self._train_step(batch)
                except TrainingDiverged as exc:
                    raise TrainingDiverged(
                        f"training stopped: {exc}. The last good checkpoint is kept at "
                        f"{self.store.url(self.prefix + '/checkpoints/')}; lower "
                        "train.optimizer.base_lr or check the data"
                    ) from None
                self.metrics.observe_step(time.perf_counter() - asked, waited)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value
                stds.append(std)
                done_here += 1
                if on_step is not None:
                    on_step(self.step)
                rate = done_here * cfg.batch_size / (time.monotonic() - started)
                self.metrics.update_losses(losses)
                self.metrics.update(
                    lr=learning_rate(cfg, self.step - 1, self.steps_per_epoch),
                    samples_per_second=rate,
                    collapse_std=std,
                    epoch=epoch,
                    step=self.step,
                )
                if self.step % 10 == 0 or self.step == self.total_steps:
                    self._log_progress(epoch, losses, std, rate)
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if stop_after_step is not None and self.step >= stop_after_step:
                    return TrainResult(self.step, self.history)
            record = {
                "epoch": epoch,
                "step": self.step,
                **{name: total / len(stds) for name, total in sums.items()},
                "collapse_std": sum(stds) / len(stds),
                "samples_per_second": round(
                    done_here * cfg.batch_size / (time.monotonic() - started), 2
                ),
                "knn_accuracy": self.evaluate_knn(),
            }
            self.history.append(record)
            self.metrics.update(knn_accuracy=record["knn_accuracy"])
            self.metrics.push()
            log.info("epoch %d done: %s", epoch, record)
            self.save_checkpoint()
        return TrainResult(self.step, self.history)

    def encoder(self) -> torch.nn.Module:
        return self.model.encoder

    def evaluate_knn(self) -> float:
        """kNN category accuracy of val frames against train frames (encoder features)."""
        if not self.distributed.main:
            return float("nan")
        from vidssl.shards import read_manifest

        splits = read_manifest(self.store, self.clips_prefix).splits
        if "val" not in splits or "train" not in splits:
            return float("nan")

        def embed(split: str, limit: int | None) -> tuple[torch.Tensor, list[str]]:
            features, labels = [], []
            for batch, records in embed_split(  # a dense encoder's map: pooled there
                self.encoder(), self.store, self.clips_prefix, split,
                views_from=self.cfg.views_from, size=self.cfg.image_size, limit=limit,
            ):  # fmt: skip
                features.append(batch)
                labels += [record["category"] for _, record in records]
            return torch.cat(features), labels

        train_features, train_labels = embed("train", self.cfg.knn_max_train)
        val_features, val_labels = embed("val", None)
        return knn_accuracy(train_features, train_labels, val_features, val_labels, self.cfg.knn_k)
