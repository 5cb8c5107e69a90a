"""The official Objectron layout: which sequences exist, their split and category.

    videos/<class>/batch-<i>/<j>/video.MOV
    annotations/<class>/batch-<i>/<j>.pbdata
    index/<class>_annotations_{train,test}     one sequence id (<class>/batch-<i>/<j>) a line

The category comes from the path, never from the annotation (raw annotations can be wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORIES = ("bike", "book", "bottle", "camera", "cereal_box", "chair", "cup", "laptop", "shoe")


@dataclass(frozen=True)
class SequenceRef:
    sequence_id: str  # <class>/batch-<i>/<j>
    category: str
    official_split: str  # train | test

    @property
    def video_key(self) -> str:
        return f"videos/{self.sequence_id}/video.MOV"

    @property
    def annotation_key(self) -> str:
        return f"annotations/{self.sequence_id}.pbdata"


def index_key(category: str, split: str) -> str:
    return f"index/{category}_annotations_{split}"


def parse_index(text: str, category: str, split: str, source: str) -> list[SequenceRef]:
    refs = []
    for number, line in enumerate(text.splitlines(), start=1):
        sequence_id = line.strip()
        if not sequence_id:
            continue
        parts = sequence_id.split("/")
        if len(parts) != 3 or parts[0] != category or not parts[1].startswith("batch-"):
            raise ValueError(
                f"{source}:{number}: expected '{category}/batch-<i>/<j>', got {sequence_id!r}"
            )
        refs.append(SequenceRef(sequence_id, category, split))
    return refs
