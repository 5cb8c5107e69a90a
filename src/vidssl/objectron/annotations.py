"""Reading Objectron annotation files (`.pbdata`, a protobuf `Sequence`) into plain metadata.

Malformed files raise `AnnotationError` naming the file: a protobuf parser accepts many byte
strings, so the structure is checked too (one object at least, 9 keypoints per box, camera
matrices of the right sizes).
"""

from __future__ import annotations

import math

from google.protobuf.message import DecodeError

from vidssl.objectron.schema import annotation_data_pb2

_CAMERA_FIELD_SIZES = {"transform": 16, "intrinsics": 9, "projection_matrix": 16, "view_matrix": 16}
BOX_KEYPOINTS = 9


class AnnotationError(ValueError):
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


def frames_by_index(
    sequence: annotation_data_pb2.Sequence,
) -> dict[int, annotation_data_pb2.FrameAnnotation]:
    return {frame.frame_id: frame for frame in sequence.frame_annotations}
