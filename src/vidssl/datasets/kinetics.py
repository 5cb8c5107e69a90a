"""Kinetics-400: `<root>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`, listed from
the split's CSV (`label,youtube_id,time_start,time_end,split[,is_cc]`). Videos the CSV names
but the disk lacks (many went private on YouTube) are returned with size -1: ingest skips and
records them."""

from __future__ import annotations

import csv
import io

from vidssl.datasets import VideoItem
from vidssl.errors import InputError
from vidssl.store.tree import FileTree


def video_name(youtube_id: str, start: str, end: str) -> str:
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}.mp4"


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    source = dataset.source
    tree = FileTree(source_root or source.root)
    annotations = FileTree(source.annotations)
    items = []
    for split in source.splits:
        sizes = tree.sizes(f"{split}/")
        rows = csv.DictReader(io.StringIO(annotations.read_text(f"{split}.csv")))
        missing = {"label", "youtube_id", "time_start", "time_end"} - set(rows.fieldnames or [])
        if missing:
            raise InputError(
                f"{annotations.describe(f'{split}.csv')}: missing columns {sorted(missing)}"
            )
        per_class: dict[str, int] = {}
        for row in rows:
            label = row["label"]
            per_class[label] = per_class.get(label, 0) + 1
            if source.max_videos_per_class and per_class[label] > source.max_videos_per_class:
                continue
            name = video_name(row["youtube_id"], row["time_start"], row["time_end"])
            relative = f"{split}/{label}/{name}"
            items.append(
                VideoItem(
                    tree.root,
                    relative,
                    f"{label}/{name[:-4]}",
                    label,
                    split,
                    size=sizes.get(relative, -1),
                )
            )
    return items
