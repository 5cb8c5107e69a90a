"""TrackingNet's layout (as its devkit lays it out): listing, anno parsing, frame folders decoded
in numeric order, and ingest end to end from a folder and from s3://, boxes in the metadata."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vidssl.config import Experiment
from vidssl.datasets import list_videos, train_or_val
from vidssl.datasets.trackingnet import AnnoError, parse_anno
from vidssl.shards import decode_json, read_split
from vidssl.stages import ingest
from vidssl.video import FrameFolder, VideoDecodeError, decode_jpeg

from .conftest import build_experiment

WIDTH, HEIGHT, FRAMES = 64, 48, 12
BAND = 20  # the top rows of frame t are 20 * t grey: a decoded frame says which file it was


def box_of(t: int) -> tuple[float, float, float, float]:
    """The moving square's x, y, w, h in pixels in frame t."""
    return 2.0 + 3 * t, 10.0, 16.0, 12.0


def normalised(t: int) -> list[float]:
    x, y, w, h = box_of(t)
    corners = (x / WIDTH, y / HEIGHT, (x + w) / WIDTH, (y + h) / HEIGHT)
    return [round(value, 6) for value in corners]


def write_frames(folder: Path, frames: int = FRAMES) -> None:
    folder.mkdir(parents=True)
    for t in range(frames):
        image = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
        image[:6] = BAND * t
        x, y, w, h = (int(v) for v in box_of(t))
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), -1)
        assert cv2.imwrite(str(folder / f"{t}.jpg"), image)


def anno_lines(frames: int = FRAMES) -> list[str]:
    return [",".join(f"{v:.1f}" for v in box_of(t)) for t in range(frames)]


def write_anno(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trackingnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training chunks and the test chunk, each video a folder of 12 JPEGs:
    alpha: whole; bravo: 5.jpg missing, an empty box at frame 2; charlie: 7.jpg undecodable,
    anno lines for frames 0-8 only; malformed: anno line 4 has three numbers; empty: no frame;
    delta (TEST): the first frame's box only."""
    root = tmp_path_factory.mktemp("trackingnet")
    for chunk, video in [("TRAIN_0", "alpha"), ("TRAIN_0", "bravo"), ("TRAIN_1", "charlie")]:
        write_frames(root / chunk / "frames" / video)
    (root / "TRAIN_0" / "frames" / "bravo" / "5.jpg").unlink()
    (root / "TRAIN_1" / "frames" / "charlie" / "7.jpg").write_bytes(b"not a JPEG")
    write_frames(root / "TRAIN_1" / "frames" / "malformed")
    (root / "TRAIN_1" / "frames" / "empty").mkdir()
    write_frames(root / "TEST" / "frames" / "delta")

    bravo = anno_lines()
    bravo[2] = "0.0,0.0,0.0,0.0"
    malformed = anno_lines()
    malformed[3] = "11.0,10.0,16.0"
    for chunk, video, lines in [
        ("TRAIN_0", "alpha", anno_lines()),
        ("TRAIN_0", "bravo", bravo),
        ("TRAIN_1", "charlie", anno_lines(9)),
        ("TRAIN_1", "malformed", malformed),
        ("TRAIN_1", "empty", anno_lines()),
        ("TEST", "delta", anno_lines(1)),
    ]:
        write_anno(root / chunk / "anno" / f"{video}.txt", lines)
    (root / "TRAIN_0" / "zips").mkdir()
    (root / "TRAIN_0" / "zips" / "alpha.zip").write_bytes(b"PK zipped frames")
    return root


def _experiment(store_uri: str, root: str, source: dict | None = None, **ingest_cfg) -> Experiment:
    return build_experiment(
        store_uri,
        {
            "name": "t",
            "dataset": {
                "name": "tn",
                "source": {"kind": "trackingnet", "root": root, **(source or {})},
                "val_fraction": 0.3,
            },
            "ingest": {"frame_stride": None, "workers": 1, **ingest_cfg},
            "shards": None,
            "train": None,
        },
    )


def _metas(store, output) -> dict[str, dict]:
    """meta.json of every sample by key, with the band value of each frame added."""
    metas = {}
    for split in output.manifest.splits:
        for sample in read_split(store, store.key_of(output.url), split):
            meta = decode_json(sample)
            meta["bands"] = [
                round(float(decode_jpeg(sample[f"f{i:03d}.jpg"])[:2].mean()) / BAND)
                for i in range(meta["num_frames"])
            ]
            metas[sample["__key__"]] = meta
    return metas


def test_listing_chunks_splits_and_sizes(trackingnet_root):
    root = str(trackingnet_root)
    dataset = _experiment("file:///unused", root, {"include_test": True}).dataset
    items = {item.video_id: item for item in list_videos(dataset)}
    assert sorted(items) == ["alpha", "bravo", "charlie", "delta", "empty", "malformed"]
    alpha = items["alpha"]
    assert alpha.video == "TRAIN_0/frames/alpha" and alpha.annotation == "TRAIN_0/anno/alpha.txt"
    assert alpha.category == "TRAIN_0" and alpha.frame_folder_fps == 30.0
    frames = trackingnet_root / "TRAIN_0" / "frames" / "alpha"
    assert alpha.size == sum(f.stat().st_size for f in frames.iterdir())
    assert items["empty"].size == 0  # listed from its anno file: ingest skips it, saying why
    assert items["delta"].split == "test" and items["delta"].category == "TEST"
    for name in ("alpha", "bravo", "charlie", "empty", "malformed"):
        assert items[name].split == train_or_val(name, 0.3, 0)

    chosen = _experiment("file:///unused", root, {"chunks": [1], "max_videos_per_chunk": 2})
    assert [i.video_id for i in list_videos(chosen.dataset)] == ["charlie", "empty"]
    assert "delta" not in {i.video_id for i in list_videos(_experiment("file:///u", root).dataset)}
    with pytest.raises(FileNotFoundError, match="TRAIN_7: TrackingNet chunk missing"):
        list_videos(_experiment("file:///unused", root, {"chunks": [0, 7]}).dataset)


def test_frame_folder_is_read_in_numeric_order(trackingnet_root, tmp_path):
    files = FrameFolder(str(trackingnet_root / "TRAIN_0" / "frames" / "bravo"), 30.0).frame_files()
    assert [f.name if f else None for f in files] == [
        *(f"{t}.jpg" for t in range(5)),
        None,  # 5.jpg is missing: a damaged frame
        *(f"{t}.jpg" for t in range(6, 12)),
    ]
    (tmp_path / "1.jpg").write_bytes(b"")
    (tmp_path / "01.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(VideoDecodeError, match=r"two files for frame 1: 01\.jpg, 1\.jpg"):
        FrameFolder(str(tmp_path), 30.0).frame_files()
    with pytest.raises(VideoDecodeError, match="empty frame folder"):
        FrameFolder(str(tmp_path / "nothing"), 30.0).frame_files()


@pytest.mark.parametrize(
    "line",
    ["1.0,2.0,3.0", "1,2,3,4,5", "x,2,3,4", "1,2,nan,4", "1 2 3 4", ""],
)
def test_malformed_anno_line_is_named(line):
    data = f"1,2,3,4\r\n5,6,7,8\n{line}\n9,10,11,12\n".encode()
    with pytest.raises(AnnoError, match=r"^anno/v\.txt: line 3: .* is not x,y,w,h"):
        parse_anno(data, "anno/v.txt")
    assert parse_anno(b"1,2,3,4\r\n5.5, 6,7,8\n\n", "v") == [(1, 2, 3, 4), (5.5, 6, 7, 8)]


def test_ingest_frame_folders_with_boxes(trackingnet_root, file_store):
    root = str(trackingnet_root)
    output = ingest.run(_experiment(file_store.base_url, root, {"include_test": True}))
    skipped = {s.input: s.reason for s in output.manifest.skipped}
    assert skipped.keys() == {f"{root}/TRAIN_1/frames/malformed", f"{root}/TRAIN_1/frames/empty"}
    malformed = skipped[f"{root}/TRAIN_1/frames/malformed"]
    assert malformed.startswith(f"{root}/TRAIN_1/anno/malformed.txt: line 4: '11.0,10.0,16.0'")
    assert skipped[f"{root}/TRAIN_1/frames/empty"] == (
        f"{root}/TRAIN_1/frames/empty: empty frame folder: no numbered JPEG (0.jpg, 1.jpg, ...) "
        "in it"
    )

    metas = _metas(file_store, output)
    assert metas.keys() == {"alpha", "bravo", "charlie", "delta"}
    alpha = metas["alpha"]
    assert alpha["source_frame_indices"] == list(range(FRAMES))
    assert alpha["bands"] == list(range(FRAMES))  # 10.jpg after 9.jpg, not after 1.jpg
    assert alpha["num_frames"] == FRAMES and (alpha["width"], alpha["height"]) == (WIDTH, HEIGHT)
    assert alpha["fps"] == alpha["source_fps"] == 30.0
    assert alpha["timestamps"][3] == pytest.approx(0.1)
    assert alpha["boxes"] == [normalised(t) for t in range(FRAMES)]
    assert "frames" not in alpha and "objects" not in alpha  # Objectron's keys

    bravo = metas["bravo"]
    kept = [t for t in range(FRAMES) if t != 5]
    assert bravo["source_frame_indices"] == bravo["bands"] == kept
    assert bravo["boxes"] == [None if t == 2 else normalised(t) for t in kept]
    charlie = metas["charlie"]
    kept = [t for t in range(FRAMES) if t != 7]
    assert charlie["source_frame_indices"] == charlie["bands"] == kept
    assert charlie["boxes"] == [normalised(t) if t < 9 else None for t in kept]
    delta = metas["delta"]
    assert delta["split"] == "test"
    assert delta["boxes"] == [normalised(0)] + [None] * (FRAMES - 1)

    records = {r["video"]: r for r in output.manifest.details["videos"]}
    assert records["bravo"]["file"] == "TRAIN_0/frames/bravo"
    for name in ("bravo", "charlie"):  # a missing or undecodable JPEG: one damaged frame
        assert records[name]["read_frames"] == FRAMES - 1
        assert records[name]["failed_frames"] == 1 and records[name]["truncated"]
    assert records["alpha"]["source_frames"] == records["alpha"]["read_frames"] == FRAMES
    assert not records["alpha"]["truncated"]
    truncated = {t["video"] for t in output.manifest.details["truncated"]}
    assert truncated == {f"{root}/TRAIN_0/frames/bravo", f"{root}/TRAIN_1/frames/charlie"}


@pytest.mark.parametrize(
    ("source_fps", "rate"), [(30.0, {"frame_stride": 3}), (15.0, {"fps": 5.0})]
)
def test_frame_rate_resize_and_clips(trackingnet_root, file_store, source_fps, rate):
    experiment = _experiment(
        file_store.base_url,
        str(trackingnet_root),
        {"chunks": [0], "fps": source_fps},
        resize_short=24,
        clip_frames=2,
        **rate,
    )
    metas = _metas(file_store, ingest.run(experiment))
    assert sorted(metas) == ["alpha_c000", "alpha_c001", "bravo_c000", "bravo_c001"]
    for key, indices in [("alpha_c000", [0, 3]), ("alpha_c001", [6, 9])]:
        meta = metas[key]
        assert meta["source_frame_indices"] == meta["bands"] == indices
        assert meta["fps"] == (10.0 if source_fps == 30.0 else 5.0)
        assert meta["source_fps"] == source_fps
        assert meta["timestamps"] == [pytest.approx(i / source_fps) for i in indices]
        assert (meta["width"], meta["height"]) == (32, 24)
        assert meta["boxes"] == [normalised(t) for t in indices]  # normalised: size-free
    assert metas["bravo_c000"]["boxes"] == [normalised(0), normalised(3)]


def test_ingest_from_s3_matches_local(trackingnet_root, s3_store, file_store):
    for path in sorted(trackingnet_root.rglob("*")):
        if path.is_file():
            relative = path.relative_to(trackingnet_root).as_posix()
            s3_store.put_file(f"raw/trackingnet/{relative}", str(path))
    remote_root = f"{s3_store.base_url}/raw/trackingnet"
    source = {"include_test": True}
    remote = ingest.run(_experiment(s3_store.base_url, remote_root, source, frame_stride=2))
    local = ingest.run(
        _experiment(file_store.base_url, str(trackingnet_root), source, frame_stride=2)
    )
    remote_metas, local_metas = _metas(s3_store, remote), _metas(file_store, local)
    assert remote_metas.keys() == {"alpha", "bravo", "charlie", "delta"}
    assert remote_metas == local_metas
    assert remote_metas["charlie"]["source_frame_indices"] == [0, 2, 4, 6, 8, 10]
    assert remote_metas["charlie"]["boxes"][-1] is None  # frame 10: past the anno's 9 lines
    skipped = {s.input: s.reason for s in remote.manifest.skipped}
    empty = f"{remote_root}/TRAIN_1/frames/empty"  # on S3 only its anno file shows it
    assert (
        skipped[empty] == f"{empty}: empty frame folder: no numbered JPEG (0.jpg, 1.jpg, ...) in it"
    )
    malformed = skipped[f"{remote_root}/TRAIN_1/frames/malformed"]
    assert malformed.startswith(f"{remote_root}/TRAIN_1/anno/malformed.txt: line 4:")
