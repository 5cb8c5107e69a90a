"""Write the committed bad-input corpus (tests/faults/corpus/) that test_bad_inputs.py ingests.

    python tests/faults/make_corpus.py [OUT]        (OUT defaults to tests/faults/corpus)

`videos/` is a folder dataset (category = sub-folder) of tiny videos: good ones in each
container OpenCV writes here (AVI/MJPG, MP4/mp4v, MKV/MJPG, WebM/VP8), and corrupt, empty,
truncated, damaged, too short and awkwardly named ones. `objectron/` is a synthetic Objectron
set (vidssl.synth.objectron) whose annotations are then broken one way each. What each file must
do is stated in test_bad_inputs.py. Everything draws from fixed seeds, so the same OpenCV and
protobuf give the same bytes, except in MKV and WebM files, whose muxer writes random UIDs:
regenerating changes those bytes (not what the tests see). The whole corpus is about 250 KB.
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import cv2
import numpy as np

from vidssl.objectron.schema import annotation_data_pb2, object_pb2
from vidssl.synth.objectron import SynthSpec, generate

HERE = Path(__file__).parent
FOURCC = {"avi": "MJPG", "mp4": "mp4v", "mkv": "MJPG", "webm": "VP80"}
SIZE = (64, 48)
GOOD_FRAMES = 12

#: The Objectron sequences (cup/batch-0/<j>) and how each one's annotation is broken.
OBJECTRON_CASES = (
    "good",
    "random_bytes",
    "truncated",
    "wrong_message",
    "nan_keypoints",
    "nan_camera_some_frames",
    "inf_camera_all_frames",
    "frame_ids_match_nothing",
    "annotation_missing",
    "video_missing",
)
OBJECTRON_SPEC = SynthSpec(
    videos_per_class=len(OBJECTRON_CASES),
    frames=10,
    width=48,
    height=64,
    seed=5,
    categories=("cup",),
    test_fraction=0.0,
    swing_probability=0.0,
    wrong_category_probability=0.0,
    workers=1,
)


def write_video(path: Path, frames: int, fourcc: str | None = None, fps: float = 25.0) -> bytes:
    """A moving square over a gradient; returns the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = fourcc or FOURCC[path.suffix.lstrip(".").lower()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.suffix} ({codec}) here")
    width, height = SIZE
    gradient = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    for t in range(frames):
        image = cv2.merge([gradient, np.full_like(gradient, (t * 19) % 256), gradient[::-1]])
        x = (t * 4) % (width - 12)
        cv2.rectangle(image, (x, 16), (x + 11, 27), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path.read_bytes()


def damage_avi_frame(data: bytes, frame: int, rng: np.random.Generator) -> bytes:
    """The AVI with frame `frame`'s JPEG payload replaced by random bytes of the same size:
    the container stays valid, that one frame cannot be decoded."""
    out = bytearray(data)
    position = out.find(b"movi")
    for _ in range(frame + 1):
        position = out.find(b"00dc", position + 4)
    size = struct.unpack("<I", out[position + 4 : position + 8])[0]
    out[position + 8 : position + 8 + size] = rng.bytes(size)
    return bytes(out)


def make_videos(root: Path, rng: np.random.Generator) -> None:
    for ext in FOURCC:
        good = write_video(root / "good" / f"ok.{ext}", GOOD_FRAMES)
        (root / "corrupt" / f"random.{ext}").parent.mkdir(parents=True, exist_ok=True)
        (root / "corrupt" / f"random.{ext}").write_bytes(rng.bytes(3000))
        (root / "empty").mkdir(parents=True, exist_ok=True)
        (root / "empty" / f"zero_bytes.{ext}").write_bytes(b"")
        half = write_video(root / "truncated" / f"half.{ext}", 30)
        (root / "truncated" / f"half.{ext}").write_bytes(half[: len(half) // 2])
        (root / "corrupt" / f"header_only.{ext}").write_bytes(good[:64])
    write_video(root / "empty" / "no_frames.avi", 0)  # a valid AVI header, no frame
    (root / "corrupt" / "text.mp4").write_text("not a video, just text with a video's name\n")
    damaged = write_video(root / "damaged" / "frame10.avi", 30)
    (root / "damaged" / "frame10.avi").write_bytes(damage_avi_frame(damaged, 10, rng))
    write_video(root / "short" / "two_frames.avi", 2)
    for name in ("a b.mp4", "a_b.mp4", "café.avi", "cafè.avi", "视频.avi"):
        write_video(root / "names" / name, GOOD_FRAMES)


def _sequence(path: Path) -> annotation_data_pb2.Sequence:
    sequence = annotation_data_pb2.Sequence()
    sequence.ParseFromString(path.read_bytes())
    return sequence


def break_annotation(case: str, path: Path, video: Path, rng: np.random.Generator) -> None:
    """Break one sequence's files the way its case says ("good" leaves them alone)."""
    sequence = _sequence(path)
    nan, inf = float("nan"), float("inf")
    if case == "random_bytes":
        path.write_bytes(rng.bytes(2000))
    elif case == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 3])
    elif case == "wrong_message":
        obj = object_pb2.Object(id=3, category="cup", type=object_pb2.Object.BOUNDING_BOX)
        obj.scale.extend([0.1, 0.2, 0.3])
        path.write_bytes(obj.SerializeToString(deterministic=True))
    elif case == "nan_keypoints":
        for frame in sequence.frame_annotations[::2]:
            frame.annotations[0].keypoints[0].point_2d.x = nan
            frame.annotations[0].keypoints[4].point_3d.z = inf
    elif case == "nan_camera_some_frames":
        for frame in sequence.frame_annotations[1::3]:
            frame.camera.intrinsics[0] = nan
    elif case == "inf_camera_all_frames":
        for frame in sequence.frame_annotations:
            frame.camera.transform[5] = -inf
    elif case == "frame_ids_match_nothing":
        for frame in sequence.frame_annotations:
            frame.frame_id += 1000
    elif case == "annotation_missing":
        path.unlink()
    elif case == "video_missing":
        shutil.rmtree(video.parent)
    if case.startswith(("nan_", "inf_", "frame_ids")):
        path.write_bytes(sequence.SerializeToString(deterministic=True))


def make_objectron(root: Path, rng: np.random.Generator) -> None:
    truths = generate(root, OBJECTRON_SPEC)
    shutil.rmtree(root / "masks")  # ingest does not read them
    for case, truth in zip(OBJECTRON_CASES, truths, strict=True):
        annotation = root / "annotations" / f"{truth.sequence_id}.pbdata"
        video = root / "videos" / truth.sequence_id / "video.MOV"
        break_annotation(case, annotation, video, rng)


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(20240610)
    make_videos(out / "videos", rng)
    make_objectron(out / "objectron", rng)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus")
