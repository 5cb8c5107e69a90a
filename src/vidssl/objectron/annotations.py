"""Reading Objectron annotation files (`.pbdata`, a protobuf `Sequence`) into plain metadata.

Malformed files raise `AnnotationError` naming the file: a protobuf parser accepts many byte
strings, so the structure is checked too (one object at least, 9 keypoints per box, camera
matrices of the right sizes).

Non-finite numbers follow the cleaning design (vidssl.objectron.cleaning): keypoints and the
object's box are kept, NaN for inf, and the clean stage drops such frames as `non_finite`.
A frame whose camera or ground plane is not finite is refused here instead (`read_annotation`):
cleaning does not look at them, and box fitting would turn them into NaN scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from vidssl.errors import VidsslError
from vidssl.objectron.schema import annotation_data_pb2

_CAMERA_FIELD_SIZES = {"transform": 16, "intrinsics": 9, "projection_matrix": 16, "view_matrix": 16}
BOX_KEYPOINTS = 9


class AnnotationError(VidsslError, ValueError):
    """A malformed annotation file; the message names it."""


def parse_sequence(data: bytes, source: str) -> annotation_data_pb2.Sequence:
    sequence = annotation_data_pb2.Sequence()
    try:
        sequence.ParseFromString(data)
    except DecodeError as exc:
        raise AnnotationError(f"{source}: not an Objectron annotation (protobuf: {exc})") from None
    if not sequence.objects:
        raise AnnotationError(f"{source}: malformed annotation: no object")
    if not sequence.frame_annotations:
        raise AnnotationError(f"{source}: malformed annotation: no frame annotation")
    for frame in sequence.frame_annotations:
        for name, size in _CAMERA_FIELD_SIZES.items():
            if len(getattr(frame.camera, name)) != size:
                raise AnnotationError(
                    f"{source}: malformed annotation: frame {frame.frame_id} camera.{name} has "
                    f"{len(getattr(frame.camera, name))} values, expected {size}"
                )
        for annotation in frame.annotations:
            if len(annotation.keypoints) != BOX_KEYPOINTS:
                raise AnnotationError(
                    f"{source}: malformed annotation: frame {frame.frame_id} object "
                    f"{annotation.object_id} has {len(annotation.keypoints)} keypoints, expected 9"
                )
    return sequence


def _floats(values) -> list[float]:  # type: ignore[no-untyped-def]
    return [float(v) if math.isfinite(v) else float("nan") for v in values]


def objects_meta(sequence: annotation_data_pb2.Sequence) -> list[dict]:
    """The sequence's boxes in the world frame (rotation row-major 3x3, translation, scale)."""
    return [
        {
            "object_id": obj.id,
            "annotated_category": obj.category,
            "rotation": _floats(obj.rotation),
            "translation": _floats(obj.translation),
            "scale": _floats(obj.scale),
        }
        for obj in sequence.objects
    ]


def frame_meta(frame: annotation_data_pb2.FrameAnnotation) -> dict:
    """One frame's annotation as JSON-able metadata (Objectron's fields, Objectron's units)."""
    camera = frame.camera
    return {
        "frame_id": frame.frame_id,
        "timestamp": frame.timestamp,
        "camera": {
            "transform": _floats(camera.transform),
            "intrinsics": _floats(camera.intrinsics),
            "projection_matrix": _floats(camera.projection_matrix),
            "view_matrix": _floats(camera.view_matrix),
            "image_width": camera.image_resolution_width,
            "image_height": camera.image_resolution_height,
        },
        "plane_center": _floats(frame.plane_center),
        "plane_normal": _floats(frame.plane_normal),
        "objects": [
            {
                "object_id": annotation.object_id,
                "visibility": annotation.visibility,
                "keypoints_2d": [
                    _floats([k.point_2d.x, k.point_2d.y, k.point_2d.depth])
                    for k in annotation.keypoints
                ],
                "keypoints_3d": [
                    _floats([k.point_3d.x, k.point_3d.y, k.point_3d.z])
                    for k in annotation.keypoints
                ],
            }
            for annotation in frame.annotations
        ],
    }


@dataclass(frozen=True)
class Annotation:
    """What ingest takes from one `.pbdata`: the objects, each usable frame's metadata by frame
    id, and the frame annotations refused ((frame id, why) each), so none goes unrecorded."""

    source: str
    objects: list[dict]
    frames: dict[int, dict]
    refused: list[tuple[int, str]] = field(default_factory=list)


def frame_problem(frame: annotation_data_pb2.FrameAnnotation) -> str | None:
    """Why this frame's camera or ground plane cannot be used (a non-finite field), or None."""
    if not math.isfinite(frame.timestamp):
        return "timestamp is not finite"
    for name in _CAMERA_FIELD_SIZES:
        if not all(math.isfinite(v) for v in getattr(frame.camera, name)):
            return f"camera.{name} has non-finite values"
    for name in ("plane_center", "plane_normal"):
        if not all(math.isfinite(v) for v in getattr(frame, name)):
            return f"{name} has non-finite values"
    return None


def read_annotation(data: bytes, source: str) -> Annotation:
    """Parse and check one annotation file into metadata; AnnotationError (naming the file and
    the field) when it is malformed or when no frame is usable. A frame id annotated twice
    is judged by its first annotation; later ones are refused."""
    sequence = parse_sequence(data, source)
    frames: dict[int, dict] = {}
    refused: list[tuple[int, str]] = []
    seen: set[int] = set()
    for frame in sequence.frame_annotations:
        problem = "frame id annotated twice" if frame.frame_id in seen else frame_problem(frame)
        seen.add(frame.frame_id)
        if problem is not None:
            refused.append((frame.frame_id, problem))
            continue
        frames[frame.frame_id] = frame_meta(frame)
    if not frames:
        first_id, first_problem = refused[0]
        raise AnnotationError(
            f"{source}: no usable frame: all {len(sequence.frame_annotations)} refused "
            f"(first: frame {first_id}: {first_problem})"
        )
    return Annotation(source, objects_meta(sequence), frames, refused)
