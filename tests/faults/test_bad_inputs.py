"""Ingest over the committed bad-input corpus (tests/faults/corpus, written by make_corpus.py).

Each file of the corpus states below what must happen to it: skipped and listed in the
manifest with a reason naming it, or kept with what its record must say. Every test also
checks that nothing else is lost: each corpus file is either skipped by name or kept with all
its samples in the shards.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidssl.clips import assign_keys, ingest_star
from vidssl.config import Experiment
from vidssl.datasets import VideoItem
from vidssl.shards import decode_json, read_split
from vidssl.stages import ingest
from vidssl.store import open_store

from ..conftest import build_experiment

CORPUS = Path(__file__).parent / "corpus"
VIDEOS = CORPUS / "videos"
OBJECTRON = CORPUS / "objectron"
CLIP_FRAMES = 4


@dataclass(frozen=True)
class Skipped:
    reason: str  # the manifest's reason must contain this (and the file's full path)


@dataclass(frozen=True)
class Kept:
    truncated: bool = False  # listed in details["truncated"], fewer frames than declared
    failed_frames: int = 0  # frames that failed to decode mid-stream, skipped
    key: str | None = None  # its sample key (before the clip suffix), when it matters
    refused: int = 0  # annotated frames refused (non-finite camera)


NOT_A_VIDEO = Skipped("cannot be opened as a video")

#: videos/<file> -> what ingest (clip_frames=4) must do with it
VIDEO_CASES: dict[str, Skipped | Kept] = {
    **{f"good/ok.{ext}": Kept() for ext in ("avi", "mp4", "mkv", "webm")},
    **{f"corrupt/random.{ext}": NOT_A_VIDEO for ext in ("avi", "mp4", "mkv", "webm")},
    **{f"corrupt/header_only.{ext}": NOT_A_VIDEO for ext in ("avi", "mp4", "mkv", "webm")},
    "corrupt/text.mp4": NOT_A_VIDEO,
    **{f"empty/zero_bytes.{ext}": NOT_A_VIDEO for ext in ("avi", "mp4", "mkv", "webm")},
    "empty/no_frames.avi": Skipped("no frame could be decoded"),
    # the first half of each file: what decodes is kept and the loss recorded; an MP4's index
    # sits at its end, so half an MP4 cannot be opened at all
    "truncated/half.avi": Kept(truncated=True),
    "truncated/half.mkv": Kept(truncated=True),
    "truncated/half.webm": Kept(truncated=True),
    "truncated/half.mp4": NOT_A_VIDEO,
    "damaged/frame10.avi": Kept(truncated=True, failed_frames=1),  # frames 11-29 still kept
    "short/two_frames.avi": Skipped("too short: 2 frames, a clip needs 4"),
    # `a b` and `a_b` sanitise to the same key: the first in order keeps it
    "names/a b.mp4": Kept(key="names_a_b"),
    "names/a_b.mp4": Kept(key="names_a_b_*"),
    "names/cafè.avi": Kept(key="names_caf_"),
    "names/café.avi": Kept(key="names_caf__*"),
    "names/视频.avi": Kept(key="names___"),
}

#: objectron/ sequence cup/batch-<i>/<j> -> what ingest must do with it (make_corpus.py)
OBJECTRON_CASES: dict[str, Skipped | Kept] = {
    "cup/batch-0/0": Kept(),  # good
    "cup/batch-0/1": Skipped("0/1.pbdata: not an Objectron annotation"),  # random bytes
    "cup/batch-0/2": Skipped("0/2.pbdata: not an Objectron annotation"),  # truncated
    "cup/batch-0/3": Skipped("0/3.pbdata: not an Objectron annotation"),  # an Object message
    "cup/batch-0/4": Kept(),  # NaN / inf keypoints: kept as NaN, the clean stage drops them
    "cup/batch-0/5": Kept(refused=3),  # NaN intrinsics in frames 1, 4, 7: those refused
    "cup/batch-0/6": Skipped("no usable frame: all 10 refused (first: frame 0: camera.transform"),
    "cup/batch-0/7": Skipped("frame ids 1000-1009 (10 ids) match none of the 10 decoded frames"),
    "cup/batch-1/0": Skipped("1/0.pbdata: no such file"),  # annotation missing
    "cup/batch-1/1": Skipped("listed by the dataset but missing from disk"),  # video missing
}


GOOD = {*(name for name in VIDEO_CASES if name.startswith("good/")), "cup/batch-0/0"}


def _experiment(store_url: str, source: dict, **ingest_cfg) -> Experiment:
    return build_experiment(
        store_url,
        {
            "name": "faults",
            "dataset": {"name": "corpus", "source": source, "val_fraction": 0.3},
            "ingest": {
                "frame_stride": None,
                "workers": 1,
                "max_failed_fraction": 1.0,
                **ingest_cfg,
            },
            "shards": {"max_samples": 4},
            "train": None,
        },
    )


def _folder(store_url: str, **ingest_cfg) -> Experiment:
    source = {"kind": "folder", "root": str(VIDEOS)}
    return _experiment(store_url, source, clip_frames=CLIP_FRAMES, **ingest_cfg)


def _objectron(store_url: str, **ingest_cfg) -> Experiment:
    source = {"kind": "objectron", "root": str(OBJECTRON), "categories": ["cup"]}
    return _experiment(store_url, source, **ingest_cfg)


@dataclass
class Ingested:
    manifest: object
    skipped: dict[str, str]  # input -> reason
    records: dict[str, dict]  # input -> the per-video record
    samples: dict[str, dict]  # sample key -> sample


def _ingest(experiment: Experiment, describe) -> Ingested:  # type: ignore[no-untyped-def]
    output = ingest.run(experiment)
    store = open_store(experiment.store_uri())
    prefix = store.key_of(output.url)
    samples = {
        sample["__key__"]: sample
        for split in output.manifest.splits
        for sample in read_split(store, prefix, split)
    }
    return Ingested(
        output.manifest,
        {s.input: s.reason for s in output.manifest.skipped},
        {describe(r): r for r in output.manifest.details["videos"]},
        samples,
    )


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    store = f"file://{tmp_path_factory.mktemp('store')}"
    return _ingest(_folder(store), lambda record: f"{VIDEOS}/{record['file']}")


@pytest.fixture(scope="module")
def objectron_run(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    store = f"file://{tmp_path_factory.mktemp('store')}"
    return _ingest(_objectron(store), lambda record: f"{OBJECTRON}/{record['file']}")


def _problem(name: str, path: str, case: Skipped | Kept, run: Ingested) -> str | None:
    """What is wrong with how ingest treated this corpus file, or None."""
    if isinstance(case, Skipped):
        reason = run.skipped.get(path)
        if reason is None:
            return f"{name}: not skipped"
        if case.reason not in reason:
            return f"{name}: reason {reason!r} lacks {case.reason!r}"
        return None
    record = run.records.get(path)
    if record is None:
        return f"{name}: not kept (skipped: {run.skipped.get(path)})"
    return _kept_problem(name, case, record, run)


def _kept_problem(name: str, case: Kept, record: dict, run: Ingested) -> str | None:
    """A kept video must have every clip its decoded frames make, in order, in the shards."""
    if record["truncated"] != case.truncated or record["failed_frames"] != case.failed_frames:
        return f"{name}: record {record}"
    if record.get("refused_annotations", 0) != case.refused:
        return (
            f"{name}: {record.get('refused_annotations')} annotations refused, not {case.refused}"
        )
    if case.key is not None and not _key_matches(record["key"], case.key):
        return f"{name}: key {record['key']!r}, expected {case.key!r}"
    own = re.compile(re.escape(record["key"]) + r"(_c\d{3})?")
    keys = [k for k in run.samples if own.fullmatch(k)]
    frames = sum(decode_json(run.samples[k])["num_frames"] for k in keys)
    if len(keys) != record["clips"] or frames != record["kept_frames"]:
        return f"{name}: {len(keys)} samples with {frames} frames in the shards; record {record}"
    return None


def _key_matches(key: str, expected: str) -> bool:
    if expected.endswith("*"):
        return key.startswith(expected[:-1]) and len(key) > len(expected) - 1
    return key == expected


def _check_cases(cases: dict, describe, run: Ingested, tally) -> None:  # type: ignore[no-untyped-def]
    problems = []
    for name, case in cases.items():
        problem = _problem(name, describe(name), case, run)
        if name not in GOOD:  # the others are the faults
            tally(problem is None)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)


def test_every_corpus_video_is_kept_whole_or_skipped_by_name(folder_run, tally):
    files = {p.relative_to(VIDEOS).as_posix() for p in VIDEOS.rglob("*") if p.is_file()}
    assert files == set(VIDEO_CASES), "every corpus file states what must happen to it"
    _check_cases(VIDEO_CASES, lambda name: f"{VIDEOS}/{name}", folder_run, tally)
    assert set(folder_run.skipped) | set(folder_run.records) == {f"{VIDEOS}/{f}" for f in files}
    assert not set(folder_run.skipped) & set(folder_run.records)
    assert all(path in reason for path, reason in folder_run.skipped.items())


def test_truncated_and_damaged_videos_are_kept_and_listed(folder_run):
    listed = {line["video"]: line for line in folder_run.manifest.details["truncated"]}
    truncated = {f"{VIDEOS}/{n}" for n, c in VIDEO_CASES.items() if getattr(c, "truncated", 0)}
    assert set(listed) == truncated
    for path, line in listed.items():
        record = folder_run.records[path]
        assert line["source_frames"] == 30  # the container still declares every frame
        assert line["read_frames"] + line["failed_frames"] + line["missing_frames"] == 30
        assert record["read_frames"] == line["read_frames"] < 30
    damaged = folder_run.records[f"{VIDEOS}/damaged/frame10.avi"]
    assert damaged["read_frames"] == 29 and damaged["missing_frames"] == 0
    indices = [
        index
        for clip in range(damaged["clips"])
        for index in decode_json(folder_run.samples[f"damaged_frame10_c{clip:03d}"])[
            "source_frame_indices"
        ]
    ]
    assert indices == [i for i in range(30) if i != 10][: 4 * damaged["clips"]]


def test_colliding_and_unicode_names_keep_distinct_stable_keys(folder_run):
    renamed = {line["video"]: line for line in folder_run.manifest.details["renamed_keys"]}
    line = renamed[f"{VIDEOS}/names/a_b.mp4"]
    assert line["plain_key"] == "names_a_b"
    assert line["collides_with"] == f"{VIDEOS}/names/a b.mp4"  # the record names both files
    keys = [r["key"] for r in folder_run.records.values()]
    assert len(keys) == len(set(keys))
    items = [
        VideoItem(str(VIDEOS), f"names/{name}", f"names/{name.rsplit('.', 1)[0]}", "names", "t")
        for name in ("a_b.mp4", "a b.mp4", "café.avi", "cafè.avi", "视频.avi")
    ]
    first, _ = assign_keys(items)
    again, _ = assign_keys(list(reversed(items)))
    assert first == again  # the same set of files, whatever the order, gives the same keys
    alone, renames = assign_keys(items[:1])
    assert alone == {"names/a_b.mp4": "names_a_b"} and not renames  # no collision, no suffix


def test_objectron_annotations_are_checked_per_file(objectron_run, tally):
    _check_cases(
        OBJECTRON_CASES, lambda name: f"{OBJECTRON}/videos/{name}/video.MOV", objectron_run, tally
    )
    for name, case in OBJECTRON_CASES.items():
        if isinstance(case, Skipped):  # the video is the input; the reason names the culprit
            assert f"{OBJECTRON}/" in objectron_run.skipped[f"{OBJECTRON}/videos/{name}/video.MOV"]


def test_non_finite_keypoints_are_kept_for_clean_and_bad_cameras_refused(objectron_run):
    nan_keypoints = decode_json(objectron_run.samples["cup_batch-0_4"])
    first = nan_keypoints["frames"][0]["objects"][0]
    assert math.isnan(first["keypoints_2d"][0][0]) and math.isnan(first["keypoints_3d"][4][2])
    assert nan_keypoints["num_frames"] == 10
    bad_camera = decode_json(objectron_run.samples["cup_batch-0_5"])
    assert bad_camera["source_frame_indices"] == [0, 2, 3, 5, 6, 8, 9]
    cameras = [f["camera"] for f in bad_camera["frames"]]
    assert all(math.isfinite(v) for camera in cameras for v in camera["intrinsics"])


def test_clean_drops_the_non_finite_frames_ingest_kept(objectron_run):
    from vidssl.stages.clean import clean_sample

    sample = dict(objectron_run.samples["cup_batch-0_4"], __url__="corpus")
    experiment = _objectron("file:///unused")
    _, dropped = clean_sample(sample, experiment, "train")
    assert dropped["non_finite"] == 5  # frames 0, 2, 4, 6, 8


def test_too_many_failures_fail_the_stage_in_one_line(tmp_path):
    store = f"file://{tmp_path / 'store'}"
    with pytest.raises(ingest.IngestFailed) as failed:
        ingest.run(_objectron(store, max_failed_fraction=0.69))  # 7 of 10 fail
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("ingest: 7 of 10 inputs failed, more than ")
    assert "max_failed_fraction=0.69" in message and "and 4 more" in message
    assert f"{OBJECTRON}/annotations/cup/batch-0/1.pbdata" in message
    assert not list((tmp_path / "store").rglob("manifest.json"))  # nothing published
    output = ingest.run(_objectron(store, max_failed_fraction=0.7))  # 7 of 10 is not more
    assert len(output.manifest.skipped) == 7


def test_parallel_ingest_of_the_corpus_matches_serial(folder_run, tmp_path):
    parallel = ingest.run(_folder(f"file://{tmp_path / 'store'}", workers=2)).manifest
    assert _shards(parallel) == _shards(folder_run.manifest)
    assert parallel.skipped == folder_run.manifest.skipped
    assert json.dumps(parallel.details, sort_keys=True) == json.dumps(
        folder_run.manifest.details, sort_keys=True
    )


def _shards(manifest) -> dict:  # type: ignore[no-untyped-def]
    return {name: [s.sha256 for s in split.shards] for name, split in manifest.splits.items()}


def test_a_key_clash_at_write_time_skips_the_video_whole(tmp_path, monkeypatch):
    """Should two videos still get one key, the second is skipped, naming both, before any of
    its samples is written."""
    monkeypatch.setattr(ingest, "assign_keys", lambda items: ({i.video: "same" for i in items}, []))
    output = ingest.run(_folder(f"file://{tmp_path / 'store'}"))
    kept = [r["file"] for r in output.manifest.details["videos"]]
    assert len(kept) == 1
    clashes = [s for s in output.manifest.skipped if "already written" in s.reason]
    assert clashes and all(f"{VIDEOS}/{kept[0]}" in s.reason for s in clashes)


def _die_on_damaged(args: tuple):  # type: ignore[no-untyped-def]
    """A worker killed while decoding one video (as by the OOM killer or a decoder crash)."""
    if args[0].video == "damaged/frame10.avi":
        os.kill(os.getpid(), signal.SIGKILL)
    return ingest_star(args)


def test_a_worker_killed_on_one_video_skips_only_that_video(folder_run, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ingest_star", _die_on_damaged)
    output = ingest.run(_folder(f"file://{tmp_path / 'store'}", workers=2))
    skipped = {s.input: s.reason for s in output.manifest.skipped}
    assert "the worker process died" in skipped.pop(f"{VIDEOS}/damaged/frame10.avi")
    assert skipped == folder_run.skipped
    kept = {r["file"] for r in output.manifest.details["videos"]}
    assert kept == {r["file"] for r in folder_run.records.values()} - {"damaged/frame10.avi"}
