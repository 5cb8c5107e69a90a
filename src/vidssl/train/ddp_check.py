"""DDP checked against one process on the CPU: the trainer's own step (vidssl.train.trainer:
SGD, warm-up + cosine, DDP's gradient averaging, batch norm over the global batch) run on the
same global batch at every step, each process given its rows `rank * B/world : (rank + 1) *
B/world`, must give the loss curve (each step's loss averaged over the processes) and the final
weights of one process given the whole batch. tests/test_ddp_curve.py runs it under gloo:

    python -m torch.distributed.run --nproc_per_node=2 -m vidssl.train.ddp_check OUT.pt [float32]

which writes, from rank 0, the curve and weights with batch statistics over the global batch
(`global_bn`) and with each process's own (`per_rank_bn`, the method's `sync_batch_norm` off).

The model and images are float64 by default: training a randomly initialised network is chaotic
(at a peak learning rate of 0.00625, a 1e-7 relative change of the initial weights changes the
loss by 6e-3 within 10 steps), so float32 sums taken in another order, as two processes take
them, drift apart within a few steps whatever DDP does; float64 leaves only the mathematics."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from vidssl.config import TrainConfig
from vidssl.store import open_store
from vidssl.train.augment import normalize
from vidssl.train.backbones import build_backbone
from vidssl.train.methods import Batch, Method, method_class
from vidssl.train.trainer import Trainer


def check_config(seed: int = 0) -> TrainConfig:
    """SimSiam on `resnet_small` at 32 px, global batch 16, 10 steps: 5 of warm-up, 5 of cosine
    (peak learning rate 0.00125, the predictor's all along)."""
    return TrainConfig(
        method={"kind": "simsiam", "projection_dim": 64, "predictor_dim": 16},
        optimizer={"base_lr": 0.02, "warmup_epochs": 1},
        backbone="resnet_small",
        image_size=32,
        batch_size=16,
        epochs=2,
        steps_per_epoch=5,
        loader_workers=0,
        seed=seed,
    )


def global_batch(cfg: TrainConfig) -> Batch:
    """The global batch every step trains on, fixed by `cfg.seed`: uint8 frames (B, 3, S, S) of
    smooth colour fields (4 x 4 random colours upsampled); `first` and `second` are two windows
    of one field 2 px apart (two views of the same content)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    colours = torch.rand((cfg.batch_size, 3, 4, 4), generator=generator)
    size = cfg.image_size
    field = F.interpolate(colours, size=(size, size + 2), mode="bilinear", align_corners=False)
    frames = (field * 255).round().to(torch.uint8)
    return {"first": frames[..., :-2].contiguous(), "second": frames[..., 2:].contiguous()}


def rank_rows(batch: Batch, rank: int, world: int) -> Batch:
    """Process `rank`'s share of a global batch: rows rank * B/world to (rank + 1) * B/world."""
    size = len(next(iter(batch.values())))
    if size % world:
        raise ValueError(f"train.batch_size {size} does not split over {world} processes")
    share = size // world
    return {name: rows[rank * share : (rank + 1) * share] for name, rows in batch.items()}


def build_checked_method(cfg: TrainConfig, sync_batch_norm: bool) -> Method:
    """The configured method at `cfg.seed`'s initial weights; `sync_batch_norm=False` turns the
    method's own choice off, so under DDP each process normalises by its rows only."""
    cls = method_class(cfg.method)
    if not sync_batch_norm:
        cls = type(f"{cls.__name__}PerRankBatchNorm", (cls,), {"sync_batch_norm": False})
    torch.manual_seed(cfg.seed)
    encoder, dimension = build_backbone(cfg.backbone, cfg.weights)
    return cls(cfg.method, encoder, dimension)


def train_curve(
    cfg: TrainConfig,
    batch: Batch,
    sync_batch_norm: bool = True,
    dtype: torch.dtype = torch.float64,
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """(each step's loss averaged over the processes, the final state dict): the trainer's step,
    `cfg.epochs * cfg.steps_per_epoch` times, over this process's rows of `batch`; one process,
    or DDP as torchrun's environment says. Model and images in `dtype`: the images normalised
    here as the trainer normalises uint8 ones (augment.normalize), which it passes on as they
    are when they are float already."""
    with tempfile.TemporaryDirectory() as scratch:  # the trainer needs a store; nothing is saved
        trainer = Trainer(
            build_checked_method(cfg, sync_batch_norm).to(dtype),
            cfg,
            open_store(f"file://{scratch}"),
            output_prefix="ddp-check",
            store_uri=f"file://{scratch}",
            clips_prefix="unused",  # batches are given, never loaded
            steps_per_epoch=cfg.steps_per_epoch,
            device=torch.device("cpu"),
        )
        rank, world = trainer.distributed.rank, trainer.distributed.world
        curve = []
        rows = {name: normalize(x).to(dtype) for name, x in rank_rows(batch, rank, world).items()}
        for _ in range(trainer.total_steps):
            values, _ = trainer._train_step(rows)
            loss = torch.tensor(values["loss"], dtype=torch.float64)
            if world > 1:
                torch.distributed.all_reduce(loss)
            curve.append(float(loss) / world)
    state = {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}
    return curve, state


def main(output: str, dtype: torch.dtype = torch.float64) -> None:
    torch.set_num_threads(1)
    cfg = check_config()
    batch = global_batch(cfg)
    results = {
        variant: dict(zip(("curve", "state"), train_curve(cfg, batch, sync, dtype), strict=True))
        for variant, sync in (("global_bn", True), ("per_rank_bn", False))
    }
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save(results, Path(output))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["float32"], ["float64"]):
        raise SystemExit(
            "usage: python -m vidssl.train.ddp_check OUTPUT.pt [float32|float64] (under torchrun)"
        )
    main(sys.argv[1], getattr(torch, sys.argv[2] if len(sys.argv) == 3 else "float64"))
