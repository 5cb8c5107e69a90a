"""Ingest through each dataset adapter: Objectron (local and s3://, with malformed annotations),
UCF101 with its split files, Kinetics-400 with its CSV."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vidssl.config import Experiment
from vidssl.objectron.schema import annotation_data_pb2
from vidssl.shards import decode_json, read_split
from vidssl.stages import ingest
from vidssl.synth.objectron import SynthSpec, generate

from .conftest import build_experiment, write_video

SYNTH = SynthSpec(
    videos_per_class=3,
    frames=16,
    width=64,
    height=80,
    seed=3,
    workers=1,
    categories=("cup", "shoe"),
    test_fraction=0.34,
)


@pytest.fixture(scope="module")
def objectron_root(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("objectron")
    truths = generate(root, SYNTH)
    return root, truths


def _experiment(store_uri: str, source: dict, **ingest_cfg) -> Experiment:
    return build_experiment(
        store_uri,
        {
            "name": "t",
            "dataset": {"name": "d", "source": source, "val_fraction": 0.3},
            "ingest": {"frame_stride": None, "workers": 1, **ingest_cfg},
            "shards": None,
            "train": None,
        },
    )


def _samples(store, output) -> dict[str, dict]:
    prefix = store.key_of(output.url)
    return {
        sample["__key__"]: sample
        for split in output.manifest.splits
        for sample in read_split(store, prefix, split)
    }


def test_objectron_ingest_keeps_annotations_per_frame(objectron_root, file_store, tmp_path):
    original, truths = objectron_root
    root = tmp_path / "objectron"
    shutil.copytree(original, root)
    broken = truths[0].sequence_id
    (root / "annotations" / f"{broken}.pbdata").write_bytes(b"\x0a\xff\xff garbage")
    short = annotation_data_pb2.Sequence()
    short.ParseFromString((root / "annotations" / f"{truths[1].sequence_id}.pbdata").read_bytes())
    del short.frame_annotations[0].annotations[0].keypoints[3:]
    (root / "annotations" / f"{truths[1].sequence_id}.pbdata").write_bytes(
        short.SerializeToString()
    )

    source = {"kind": "objectron", "root": str(root), "categories": ["cup", "shoe"]}
    output = ingest.run(_experiment(file_store.base_url, source, frame_stride=5))
    skipped = {s.input: s.reason for s in output.manifest.skipped}
    assert len(skipped) == 2
    assert any(str(root / "annotations" / f"{broken}.pbdata") in r for r in skipped.values())
    assert any("has 3 keypoints, expected 9" in r for r in skipped.values())

    samples = _samples(file_store, output)
    assert len(samples) == len(truths) - 2
    by_id = {t.sequence_id: t for t in truths}
    for sample in samples.values():
        meta = decode_json(sample)
        truth = by_id[meta["video_id"]]
        assert meta["category"] == truth.category  # from the path, whatever the annotation says
        assert meta["source_frame_indices"] == [0, 5, 10, 15]
        assert [f["frame_id"] for f in meta["frames"]] == meta["source_frame_indices"]
        assert len(meta["frames"][0]["objects"][0]["keypoints_2d"]) == 9
        assert (meta["split"] == "test") == (truth.split == "test")
        assert meta["fps"] == pytest.approx(6.0)
        assert {f"f{i:03d}.jpg" for i in range(4)} <= set(sample)


def test_objectron_from_s3_matches_local(objectron_root, s3_store, file_store):
    root, _ = objectron_root
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3_store.put_file(f"raw/objectron/{path.relative_to(root).as_posix()}", str(path))
    source = {"kind": "objectron", "root": "", "categories": ["cup", "shoe"]}
    local = _samples(
        file_store,
        ingest.run(_experiment(file_store.base_url, {**source, "root": str(root)}, frame_stride=4)),
    )
    remote_root = f"{s3_store.base_url}/raw/objectron"
    remote = _samples(
        s3_store,
        ingest.run(_experiment(s3_store.base_url, {**source, "root": remote_root}, frame_stride=4)),
    )
    assert local.keys() == remote.keys()
    for key in local:
        assert decode_json(local[key]) == decode_json(remote[key])
        assert local[key]["f001.jpg"] == remote[key]["f001.jpg"]


def test_ucf101_split_files_and_group_wise_validation(tmp_path, file_store):
    root = tmp_path / "ucf"
    train, test = [], []
    for category in ("ApplyEyeMakeup", "Biking"):
        for group in (1, 2, 8, 9):
            for clip in (1, 2):
                name = f"{category}/v_{category}_g{group:02d}_c{clip:02d}.avi"
                write_video(root / "UCF-101" / name, frames=12, size=(48, 32))
                (test if group <= 2 else train).append(name)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("".join(f"{n} 1\n" for n in train))
    (lists / "testlist01.txt").write_text("".join(f"{n}\n" for n in test))
    output = ingest.run(
        _experiment(file_store.base_url, {"kind": "ucf101", "root": str(root)}, fps=5)
    )
    metas = [decode_json(s) for s in _samples(file_store, output).values()]
    assert len(metas) == 16
    assert {m["split"] for m in metas if "_g01_" in m["video_id"] or "_g02_" in m["video_id"]} == {
        "test"
    }
    groups: dict[str, set] = {}
    for meta in metas:
        if meta["split"] != "test":
            group = meta["video_id"].rsplit("_c", 1)[0]
            groups.setdefault(group, set()).add(meta["split"])
    assert all(len(splits) == 1 for splits in groups.values())  # a group never straddles
    assert {m["category"] for m in metas} == {"ApplyEyeMakeup", "Biking"}


def test_kinetics_csv_and_missing_videos(tmp_path, file_store):
    root, notes = tmp_path / "k400", tmp_path / "k400-annotations"
    notes.mkdir()
    rows = ["label,youtube_id,time_start,time_end,split"]
    for split in ("train", "val"):
        for label in ("abseiling", "zumba"):
            for index in range(2):
                youtube_id = f"{label[:3]}{split[:1]}{index}-x_Y"
                rows.append(f"{label},{youtube_id},10,20,{split}")
                write_video(
                    root / split / label / f"{youtube_id}_000010_000020.mp4",
                    frames=10,
                    size=(40, 32),
                )
        (notes / f"{split}.csv").write_text("\n".join(rows) + "\n")
        rows = rows[:1]
    with open(notes / "val.csv", "a") as handle:
        handle.write("zumba,gone_video,0,10,val\n")
    source = {"kind": "kinetics400", "root": str(root), "annotations": str(notes)}
    output = ingest.run(_experiment(file_store.base_url, source))
    assert [s.reason.endswith("missing from disk") for s in output.manifest.skipped] == [True]
    assert "gone_video_000000_000010.mp4" in output.manifest.skipped[0].input
    metas = [decode_json(s) for s in _samples(file_store, output).values()]
    assert sorted((m["split"], m["category"]) for m in metas).count(("val", "zumba")) == 2
    assert len(metas) == 8


def test_missing_index_file_is_named(tmp_path, file_store):
    (tmp_path / "empty" / "index").mkdir(parents=True)
    source = {"kind": "objectron", "root": str(tmp_path / "empty"), "categories": ["cup"]}
    with pytest.raises(
        FileNotFoundError, match=r"index/cup_annotations_train: Objectron index file missing"
    ):
        ingest.run(_experiment(file_store.base_url, source))


def test_resampling_keeps_frame_rate_metadata_consistent(objectron_root, file_store):
    root, _ = objectron_root
    source = {"kind": "objectron", "root": str(root), "categories": ["cup"]}
    output = ingest.run(_experiment(file_store.base_url, source, fps=10, resize_short=40))
    for sample in _samples(file_store, output).values():
        meta = decode_json(sample)
        assert meta["source_frame_indices"] == [0, 3, 6, 9, 12, 15]
        assert np.diff(meta["timestamps"]) == pytest.approx([0.1] * 5)
        assert min(meta["width"], meta["height"]) == 40
