"""PASCAL VOC 2012 semantic segmentation as the devkit lays it out (`VOCdevkit/VOC2012`, on disk
or under `s3://bucket/prefix`): `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (a palette
PNG whose pixel values are class indices 0..20, 255 = the void boundary) and
`ImageSets/Segmentation/<split>.txt` (one id a line; `train`, `val`, `trainval`). The augmented
set (SBD's masks as `SegmentationClassAug/<id>.png`, split `train_aug`) reads the same way with
`masks="SegmentationClassAug"`.

`VocSegmentation(root, split)[i]` is (image RGB uint8 (H, W, 3), mask uint8 (H, W), id). Every
error names the file, and for a split file the line.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np

from vidssl.errors import VidsslError
from vidssl.store.tree import FileTree

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOID = 255
_ID = re.compile(r"[A-Za-z0-9_.\-]+")


class VocError(VidsslError, ValueError):
    """A malformed VOC file (split list, image or mask); the message names it."""


def voc_palette(entries: int = 256) -> np.ndarray:
    """(entries, 3) uint8 colours of the devkit's `labelcolormap`: class c's bits spread over
    the high bits of R, G and B (0 black, 1 dark red, ..., 255 cream)."""
    palette = np.zeros((entries, 3), np.uint8)
    for index in range(entries):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def read_split(tree: FileTree, split: str) -> list[str]:
    """The ids of `ImageSets/Segmentation/<split>.txt`, in file order."""
    relative = f"ImageSets/Segmentation/{split}.txt"
    if not tree.exists(relative):
        found = [
            name.rsplit("/", 1)[-1][: -len(".txt")]
            for name in tree.list("ImageSets/Segmentation/")
            if name.endswith(".txt")
        ]
        raise FileNotFoundError(
            f"{tree.describe(relative)}: VOC split file missing (splits found: {found or 'none'})"
        )
    ids = []
    for number, line in enumerate(tree.read_text(relative).splitlines(), start=1):
        if not line.strip():
            continue
        if not _ID.fullmatch(line.strip()):
            raise VocError(
                f"{tree.describe(relative)}: line {number}: {line.strip()[:80]!r} is not one "
                "image id (a segmentation split lists one id such as 2007_000032 per line)"
            )
        ids.append(line.strip())
    return ids


def _open(tree: FileTree, relative: str, referrer: str):  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    if not tree.exists(relative):
        raise FileNotFoundError(f"{tree.describe(relative)}: missing (listed in {referrer})")
    try:
        image = Image.open(io.BytesIO(tree.read_bytes(relative)))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise VocError(f"{tree.describe(relative)}: not a readable image ({error})") from None
    return image


class VocSegmentation:
    """The images and class masks of one split of a VOC-layout tree at `root` (`classes`:
    how many classes its masks may hold; 21 for VOC itself)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        masks: str = "SegmentationClass",
        classes: int = len(VOC_CLASSES),
    ) -> None:
        self.tree = FileTree(root)
        self.split = split
        self.masks = masks
        self.classes = classes  # mask values 0..classes-1 and VOID are valid
        self.ids = read_split(self.tree, split)
        self._split_file = self.tree.describe(f"ImageSets/Segmentation/{split}.txt")

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for index in range(len(self.ids)):
            yield self[index]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_id = self.ids[index]
        image = np.asarray(
            _open(self.tree, f"JPEGImages/{image_id}.jpg", self._split_file).convert("RGB")
        )
        mask = self.mask(image_id)
        if mask.shape != image.shape[:2]:
            raise VocError(
                f"{self.tree.describe(f'{self.masks}/{image_id}.png')}: mask is "
                f"{mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, mask, image_id

    def mask(self, image_id: str) -> np.ndarray:
        """(H, W) uint8 class indices of one image; 255 = void."""
        relative = f"{self.masks}/{image_id}.png"
        png = _open(self.tree, relative, self._split_file)
        if png.mode not in ("P", "L"):
            raise VocError(
                f"{self.tree.describe(relative)}: a {png.mode} image; a VOC mask is a palette (P) "
                "or greyscale (L) PNG whose values are class indices, not colours"
            )
        mask = np.asarray(png, np.uint8)
        wrong = np.unique(mask[(mask >= self.classes) & (mask != VOID)])
        if wrong.size:
            raise VocError(
                f"{self.tree.describe(relative)}: values {wrong[:5].tolist()} are neither a class "
                f"(0..{self.classes - 1}) nor void ({VOID})"
            )
        return mask
