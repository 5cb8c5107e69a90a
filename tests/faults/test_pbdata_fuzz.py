"""Fuzzing the Objectron annotation reader that ingest runs on every `.pbdata`.

Whatever the bytes (random, a valid file with bits flipped, cut short or spliced, raw wire
records with absurd lengths, or well-formed messages full of NaN, inf, huge and negative
values), `read_annotation` must either return metadata ingest can use and JSON-encode, or raise
`AnnotationError` naming the file: never another exception, never a hang.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidssl.objectron.annotations import (
    BOX_KEYPOINTS,
    Annotation,
    AnnotationError,
    read_annotation,
)
from vidssl.objectron.schema import annotation_data_pb2

SOURCE = "corpus/fuzz.pbdata"
SEED = (Path(__file__).parent / "corpus/objectron/annotations/cup/batch-0/0.pbdata").read_bytes()
FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per example: a hang fails instead of stalling the suite
    derandomize=True,  # the same examples every run: a failure here is a real bug, not luck
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(data: bytes) -> None:
    """The property: usable metadata, or AnnotationError naming the file."""
    try:
        annotation = read_annotation(data, SOURCE)
    except AnnotationError as exc:
        assert str(exc).startswith(f"{SOURCE}: "), str(exc)
        return
    assert isinstance(annotation, Annotation) and annotation.frames and annotation.objects
    for frame_id, frame in annotation.frames.items():
        assert isinstance(frame_id, int) and frame["frame_id"] == frame_id
        camera = frame["camera"]
        for name in ("transform", "intrinsics", "projection_matrix", "view_matrix"):
            assert all(math.isfinite(v) for v in camera[name]), (frame_id, name)
        assert all(math.isfinite(v) for v in frame["plane_center"] + frame["plane_normal"])
        assert all(len(obj["keypoints_2d"]) == BOX_KEYPOINTS for obj in frame["objects"])
    meta = {"objects": annotation.objects, "frames": list(annotation.frames.values())}
    json.dumps(meta, sort_keys=True, separators=(",", ":"))  # as the shard writer encodes it


def test_the_seed_file_is_a_usable_annotation():
    annotation = read_annotation(SEED, SOURCE)
    assert sorted(annotation.frames) == list(range(10)) and not annotation.refused


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(st.lists(st.integers(0, len(SEED) * 8 - 1), min_size=1, max_size=8))
def test_bit_flips(bits):
    data = bytearray(SEED)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    check(bytes(data))


@FUZZ
@given(st.integers(0, len(SEED)), st.integers(0, len(SEED)), st.binary(max_size=64))
def test_cuts_and_splices(start, end, insert):
    check(SEED[:start])  # truncated
    check(SEED[: min(start, end)] + insert + SEED[max(start, end) :])  # a span replaced


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as protobuf writes them: ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_RECORD = st.tuples(
    st.integers(1, 20),  # field number
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]),  # wire type, the invalid 6 and 7 included
    st.one_of(st.integers(-(2**63), 2**64 - 1), st.integers(-5, 300)),  # value or length
    st.binary(max_size=40),  # payload
)


@FUZZ
@given(st.lists(_RECORD, max_size=12), st.booleans())
def test_raw_wire_records_with_absurd_lengths(records, after_seed):
    """Hand-made records: lengths larger than the data, negative, or 2**64-1."""
    data = b"".join(
        _varint(field << 3 | wire) + _varint(value) + payload
        for field, wire, value, payload in records
    )
    check(SEED + data if after_seed else data)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
_INT32 = st.integers(-(2**31), 2**31 - 1)


def _count(draw, right: int) -> int:  # type: ignore[no-untyped-def]
    """Mostly the right number of values (so most messages get past the structure checks
    to the values), sometimes any number from 0 to 17."""
    return draw(st.integers(0, 17)) if draw(st.integers(0, 9)) == 7 else right


@st.composite
def sequences(draw) -> bytes:  # type: ignore[no-untyped-def]
    """Well-formed messages with any values: NaN, inf, huge, negative ids, wrong sizes."""
    sequence = annotation_data_pb2.Sequence()
    for _ in range(_count(draw, 1)):
        obj = sequence.objects.add(id=draw(_INT32), category=draw(st.text(max_size=8)))
        count = _count(draw, 3)
        obj.scale.extend(draw(st.lists(_FLOATS, min_size=count, max_size=count)))
        obj.rotation.extend(draw(st.lists(_FLOATS, max_size=10)))
    for _ in range(_count(draw, 3)):
        frame = sequence.frame_annotations.add(frame_id=draw(_INT32))
        frame.timestamp = draw(st.floats(allow_nan=True, allow_infinity=True))
        for name, size in (("transform", 16), ("intrinsics", 9), ("projection_matrix", 16)):
            count = _count(draw, size)
            values = draw(st.lists(_FLOATS, min_size=count, max_size=count))
            getattr(frame.camera, name).extend(values)
        frame.camera.view_matrix.extend([1.0] * _count(draw, 16))
        frame.camera.image_resolution_width = draw(_INT32)
        frame.plane_normal.extend(draw(st.lists(_FLOATS, max_size=4)))
        for _ in range(_count(draw, 1)):
            annotation = frame.annotations.add(object_id=draw(st.integers(-5, 5)))
            for _ in range(_count(draw, BOX_KEYPOINTS)):
                keypoint = annotation.keypoints.add()
                keypoint.point_2d.x, keypoint.point_3d.z = draw(_FLOATS), draw(_FLOATS)
    return sequence.SerializeToString()


@settings(FUZZ, max_examples=100)  # the slowest to generate
@given(sequences())
def test_well_formed_messages_with_any_values(data):
    check(data)


def test_bytes_that_are_not_utf8_in_a_string_field():
    category = _varint(2 << 3 | 2) + _varint(2) + b"\xff\xfe"  # Object.category, not UTF-8
    check(SEED + _varint(1 << 3 | 2) + _varint(len(category)) + category)
