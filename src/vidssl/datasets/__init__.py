"""Dataset adapters: each lists a source's videos (with category, split and annotation file)
for the ingest stage. `list_videos` picks the adapter from the source's `kind`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class VideoItem:
    tree_root: str  # folder or s3://bucket/prefix the paths below are relative to
    video: str  # a video file, or a folder of numbered JPEGs if `frame_folder_fps` is set
    video_id: str  # the dataset's own name for the video
    category: str
    split: str  # train | val | test
    annotation: str | None = None  # in `annotation_format`
    size: int = 0  # bytes, part of the ingest digest
    frame_folder_fps: float | None = None  # the frame rate of a folder of JPEGs
    #: objectron: a `.pbdata`; trackingnet: an `x,y,w,h` line per frame (see trackingnet.py)
    annotation_format: Literal["objectron", "trackingnet"] = "objectron"


def seeded_fraction(name: str, seed: int) -> float:
    """A stable number in [0, 1) per name: adding items never moves others between splits."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def train_or_val(name: str, val_fraction: float, seed: int) -> str:
    return "val" if seeded_fraction(name, seed) < val_fraction else "train"


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    """Videos of `dataset.source`; `source_root` overrides where the files are (synthetic data
    lives wherever the synth stage wrote it)."""
    from vidssl.datasets import folder, kinetics, objectron, trackingnet, ucf101

    adapters = {
        "folder": folder.list_videos,
        "objectron": objectron.list_videos,
        "synthetic_objectron": objectron.list_videos,
        "ucf101": ucf101.list_videos,
        "kinetics400": kinetics.list_videos,
        "trackingnet": trackingnet.list_videos,
    }
    return adapters[dataset.source.kind](dataset, source_root)
