"""A folder of videos: label = parent folder; train/val by a seeded hash of the path."""

from __future__ import annotations

from pathlib import PurePosixPath

from vidssl.datasets import VideoItem, train_or_val
from vidssl.store.tree import FileTree


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    source = dataset.source
    tree = FileTree(source_root or source.root)
    extensions = {ext.lower() for ext in source.extensions}
    items = []
    for relative, size in tree.sizes().items():
        path = PurePosixPath(relative)
        if path.suffix.lower() not in extensions:
            continue
        video_id = path.with_suffix("").as_posix()
        category = path.parent.name or PurePosixPath(tree.root).name
        split = train_or_val(video_id, dataset.val_fraction, dataset.split_seed)
        items.append(VideoItem(tree.root, relative, video_id, category, split, size=size))
    return items
