"""Objectron (real or synthetic): sequences from the index files; the official train index is
split 90/10 into train/val by a seeded hash of the sequence id, the test index is `test`."""

from __future__ import annotations

from vidssl.datasets import VideoItem, train_or_val
from vidssl.objectron.layout import index_key, parse_index
from vidssl.store.tree import FileTree


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    source = dataset.source
    root = source_root or getattr(source, "root", None)
    if root is None:
        raise ValueError("dataset.source: synthetic Objectron needs the synth stage's output URL")
    tree = FileTree(root)
    sizes = tree.sizes("videos/")
    limit = getattr(source, "max_sequences_per_class", None)
    items = []
    for category in source.categories:
        refs = []
        for split in ("train", "test"):
            key = index_key(category, split)
            if not tree.exists(key):
                raise FileNotFoundError(f"{tree.describe(key)}: Objectron index file missing")
            refs += parse_index(tree.read_text(key), category, split, tree.describe(key))
        for ref in refs[:limit] if limit else refs:
            split = (
                "test"
                if ref.official_split == "test"
                else train_or_val(ref.sequence_id, dataset.val_fraction, dataset.split_seed)
            )
            items.append(
                VideoItem(
                    tree.root,
                    ref.video_key,
                    ref.sequence_id,
                    ref.category,
                    split,
                    annotation=ref.annotation_key,
                    size=sizes.get(ref.video_key, -1),
                )
            )
    return items
