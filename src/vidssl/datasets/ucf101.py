"""UCF101 with the official split files: `trainlist0<k>.txt` lines are `<Class>/<file> <label>`,
`testlist0<k>.txt` lines `<Class>/<file>`. Validation takes whole groups (`_g<NN>_`) out of
training, so clips of one group never sit on both sides."""

from __future__ import annotations

import re

from vidssl.datasets import VideoItem, train_or_val
from vidssl.store.tree import FileTree

_GROUP = re.compile(r"_g(\d+)_c\d+")


def _read_list(tree: FileTree, relative: str) -> list[str]:
    if not tree.exists(relative):
        raise FileNotFoundError(f"{tree.describe(relative)}: UCF101 split file missing")
    return [line.split()[0] for line in tree.read_text(relative).splitlines() if line.strip()]


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    source = dataset.source
    tree = FileTree(source_root or source.root)
    sizes = tree.sizes("UCF-101/")
    items, per_class = [], {}
    for split, list_name in (("train", "trainlist"), ("test", "testlist")):
        for entry in _read_list(tree, f"ucfTrainTestlist/{list_name}0{source.split}.txt"):
            category = entry.split("/")[0]
            if source.max_videos_per_class:
                per_class[(split, category)] = per_class.get((split, category), 0) + 1
                if per_class[(split, category)] > source.max_videos_per_class:
                    continue
            relative = f"UCF-101/{entry}"
            video_id = entry.rsplit(".", 1)[0]
            assigned = split
            if split == "train":
                group = _GROUP.search(entry)
                group_name = f"{category}/g{group.group(1)}" if group else video_id
                assigned = train_or_val(group_name, dataset.val_fraction, dataset.split_seed)
            items.append(
                VideoItem(
                    tree.root, relative, video_id, category, assigned, size=sizes.get(relative, -1)
                )
            )
    return items
