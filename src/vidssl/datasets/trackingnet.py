"""TrackingNet (Muller et al. 2018) as its devkit lays it out: `<root>/TRAIN_<n>/frames/<video>/`
holds the video as `0.jpg`, `1.jpg`, ... (30 fps, unpadded numbers) and
`<root>/TRAIN_<n>/anno/<video>.txt` one `x,y,w,h` line (pixels) per frame for the tracked
object; `<root>/TEST` the same, its anno files with the first frame's box only.

TrackingNet ships no class labels, so a video's category is its chunk (`TRAIN_3`, `TEST`): a
grouping, not a label. Training videos are split into train/val by a seeded hash of the video
name; TEST is the test split. The boxes reach each clip sample's `meta.json` as `"boxes"`
(`boxes_at`); a video without an anno file gets no `"boxes"`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from vidssl.datasets import VideoItem, train_or_val
from vidssl.errors import VidsslError
from vidssl.store.tree import FileTree

TEST_CHUNK = "TEST"
_TRAIN_CHUNK = re.compile(r"TRAIN_(\d+)")

#: A box in pixels: x, y (top-left corner), width, height.
PixelBox = tuple[float, float, float, float]


class AnnoError(VidsslError, ValueError):
    """A malformed anno file; the message names the file and the line."""


def list_videos(dataset, source_root: str | None = None) -> list[VideoItem]:  # type: ignore[no-untyped-def]
    """One item per video of the chosen chunks: its frame folder, and its anno file if there is
    one. A video with an anno file but no frames is listed too (ingest skips it, saying so):
    a folder with no files does not exist on S3, so only its anno file shows it."""
    source = dataset.source
    tree = FileTree(source_root or source.root)
    items = []
    for chunk, files in _chunk_files(tree, source).items():
        frame_bytes: dict[str, int] = {}
        annotated = set()
        for relative, size in files.items():
            kind, _, rest = relative.partition("/")
            if kind == "frames" and "/" in rest:
                video = rest.split("/", 1)[0]
                frame_bytes[video] = frame_bytes.get(video, 0) + size
            elif kind == "anno" and rest.endswith(".txt") and "/" not in rest:
                annotated.add(rest[: -len(".txt")])
        if not frame_bytes:
            raise FileNotFoundError(
                f"{tree.describe(chunk)}: no frames/<video>/<i>.jpg in this TrackingNet chunk "
                "(extract its zips/ first, as the devkit's extract_frame.py does)"
            )
        videos = sorted(frame_bytes.keys() | annotated)
        for video in videos[: source.max_videos_per_chunk]:
            split = (
                "test"
                if chunk == TEST_CHUNK
                else train_or_val(video, dataset.val_fraction, dataset.split_seed)
            )
            items.append(
                VideoItem(
                    tree.root,
                    f"{chunk}/frames/{video}",
                    video,
                    chunk,
                    split,
                    annotation=f"{chunk}/anno/{video}.txt" if video in annotated else None,
                    size=frame_bytes.get(video, 0),
                    frame_folder_fps=source.fps,
                    annotation_format="trackingnet",
                )
            )
    return items


def _chunk_files(tree: FileTree, source) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Chunk name -> {path inside the chunk: size} for the chunks the source asks for."""
    if source.chunks is None:
        by_chunk: dict[str, dict[str, int]] = {}
        for relative, size in tree.sizes().items():
            chunk, _, inside = relative.partition("/")
            by_chunk.setdefault(chunk, {})[inside] = size
        found = sorted(
            (name for name in by_chunk if _TRAIN_CHUNK.fullmatch(name)),
            key=lambda name: int(name.split("_")[1]),
        )
        names = found + ([TEST_CHUNK] if source.include_test else [])
        if not names:
            raise FileNotFoundError(f"{tree.root}: no TRAIN_<n> folder (TrackingNet's chunks)")
        chunks = {name: by_chunk.get(name, {}) for name in names}
    else:
        names = [f"TRAIN_{n}" for n in source.chunks]
        names += [TEST_CHUNK] if source.include_test else []
        chunks = {
            name: {r[len(name) + 1 :]: size for r, size in tree.sizes(f"{name}/").items()}
            for name in names
        }
    for name, files in chunks.items():
        if not files:
            raise FileNotFoundError(f"{tree.describe(name)}: TrackingNet chunk missing or empty")
    return chunks


def parse_anno(data: bytes, source: str) -> list[PixelBox]:
    """The box of each frame, line i for frame i. A line that is not four comma-separated
    finite numbers raises AnnoError naming `source` and the line number."""
    boxes = []
    text = data.decode("utf-8", errors="replace").rstrip()
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            values = [float(field) for field in line.split(",")]
        except ValueError:  # a field that is not a number
            values = []
        if len(values) != 4 or not all(math.isfinite(value) for value in values):
            raise AnnoError(
                f"{source}: line {number}: {line.strip()[:80]!r} is not x,y,w,h "
                "(four comma-separated numbers)"
            )
        x, y, w, h = values
        boxes.append((x, y, w, h))
    return boxes


def boxes_at(
    boxes: Sequence[PixelBox], indices: Sequence[int], width: int, height: int
) -> list[list[float] | None]:
    """`[x0, y0, x1, y1]` of each frame index, normalised by the frame size (not clipped: a box
    leaving the image goes past 0 or 1); None where the anno has no line or an empty box."""
    normalised: list[list[float] | None] = []
    for index in indices:
        if index >= len(boxes) or boxes[index][2] <= 0 or boxes[index][3] <= 0:
            normalised.append(None)
            continue
        x, y, w, h = boxes[index]
        corners = (x / width, y / height, (x + w) / width, (y + h) / height)
        normalised.append([round(value, 6) for value in corners])
    return normalised
