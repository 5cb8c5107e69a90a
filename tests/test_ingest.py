"""Ingest and the stage cache: clip samples, skipped inputs, digests, --force, leftovers."""

from __future__ import annotations

import pytest

from vidssl.config import Experiment
from vidssl.shards import decode_json, read_split
from vidssl.stages import ingest, inspect
from vidssl.stages.base import stage_digest
from vidssl.video import decode_jpeg, keep_frame

from .conftest import OPENCV_SAMPLES, build_experiment, write_video


def _experiment(root, store_uri, **ingest_cfg) -> Experiment:
    return build_experiment(
        store_uri,
        {
            "name": "t",
            "dataset": {
                "name": "gen",
                "source": {"kind": "folder", "root": str(root)},
                "val_fraction": 0.5,
            },
            "ingest": {
                "fps": 5,
                "frame_stride": None,
                "resize_short": 32,
                "clip_frames": None,
                "workers": 1,
                **ingest_cfg,
            },
            "shards": {"max_samples": 2},
            "train": None,
        },
    )


def test_keep_frame_resamples_to_the_target_rate():
    kept = [i for i in range(50) if keep_frame(i, 25.0, 5.0)]
    assert kept == list(range(0, 50, 5))
    assert all(keep_frame(i, 10.0, None) for i in range(10))
    assert all(keep_frame(i, 4.0, 5.0) for i in range(10))  # never upsamples


def test_ingest_writes_clip_samples_and_skips_bad_videos(video_folder, file_store):
    experiment = _experiment(video_folder, file_store.base_url)
    output = ingest.run(experiment)
    manifest = output.manifest
    assert not output.cached
    skipped = {s.input.rsplit("/", 1)[-1]: s.reason for s in manifest.skipped}
    assert set(skipped) == {"empty.mp4", "garbage.avi"}
    assert all(str(video_folder) in reason for reason in skipped.values())
    samples = {}
    for split in manifest.splits:
        for sample in read_split(file_store, file_store.key_of(output.url), split):
            samples[sample["__key__"]] = sample
    assert set(samples) == {"walking_a", "walking_b_v2", "running_c"}
    meta = decode_json(samples["walking_a"])
    assert meta["category"] == "walking" and meta["video_id"] == "walking/a"
    assert meta["source_frame_indices"] == list(range(0, 50, 5))  # 25 fps -> 5 fps
    assert meta["timestamps"][1] == pytest.approx(0.2)
    assert meta["num_frames"] == 10
    image = decode_jpeg(samples["walking_a"]["f009.jpg"])
    assert min(image.shape[:2]) == 32
    assert decode_json(samples["running_c"])["source_frame_indices"] == list(range(0, 40, 2))
    records = {r["video"]: r for r in manifest.details["videos"]}
    assert records["walking/a"]["kept_frames"] == 10


def test_clips_split_a_video_into_fixed_length_samples(video_folder, file_store):
    experiment = _experiment(
        video_folder, file_store.base_url, clip_frames=4, max_clips_per_video=2
    )
    output = ingest.run(experiment)
    keys = sorted(
        s["__key__"]
        for split in output.manifest.splits
        for s in read_split(file_store, file_store.key_of(output.url), split)
    )
    assert keys == [
        "running_c_c000",
        "running_c_c001",
        "walking_a_c000",
        "walking_a_c001",
        "walking_b_v2_c000",  # 30 frames at 25 fps -> 6 kept frames -> one full clip
    ]


def test_second_run_is_cached_and_force_recomputes(video_folder, s3_store):
    experiment = _experiment(video_folder, s3_store.base_url)
    first = ingest.run(experiment)
    second = ingest.run(experiment)
    assert second.cached and second.url == first.url and second.manifest == first.manifest
    forced = ingest.run(experiment, force=True)
    assert not forced.cached and forced.url == first.url
    assert forced.manifest.created >= first.manifest.created


def test_digest_depends_on_what_the_stage_reads(video_folder, file_store):
    base = ingest.run(_experiment(video_folder, file_store.base_url)).url
    other_quality = ingest.run(_experiment(video_folder, file_store.base_url, jpeg_quality=50)).url
    more_workers = ingest.run(_experiment(video_folder, file_store.base_url, workers=2))
    assert other_quality != base
    assert more_workers.url == base and more_workers.cached  # workers do not change the output
    write_video(video_folder / "walking" / "a.avi", frames=20)  # changed
    assert ingest.run(_experiment(video_folder, file_store.base_url)).url != base
    assert stage_digest("s", 1, {"a": 1}, ["x"]) != stage_digest("s", 2, {"a": 1}, ["x"])


def test_rerun_after_a_crash_replaces_leftovers(video_folder, file_store):
    experiment = _experiment(video_folder, file_store.base_url)
    output = ingest.run(experiment)
    prefix = file_store.key_of(output.url)
    file_store.delete(f"{prefix}/manifest.json")  # as if the run died before publishing
    file_store.put(f"{prefix}/train/shard-000099.tar", b"half-written leftover")
    rerun = ingest.run(experiment)
    assert not rerun.cached
    assert not file_store.exists(f"{prefix}/train/shard-000099.tar")
    assert file_store.exists(f"{prefix}/manifest.json")


def test_no_videos_is_a_clear_error(tmp_path, file_store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"dataset\.source \(folder\): no videos found under .*empty"
    ):
        ingest.run(_experiment(tmp_path / "empty", file_store.base_url))


def test_parallel_ingest_matches_serial(video_folder, tmp_path):
    serial = ingest.run(_experiment(video_folder, f"file://{tmp_path}/a", workers=1)).manifest
    parallel = ingest.run(_experiment(video_folder, f"file://{tmp_path}/b", workers=2)).manifest
    assert {k: [s.sha256 for s in v.shards] for k, v in serial.splits.items()} == {
        k: [s.sha256 for s in v.shards] for k, v in parallel.splits.items()
    }


def test_real_opencv_sample_videos(s3_store, tmp_path):
    folder = OPENCV_SAMPLES / "opencv"
    assert (folder / "vtest.avi").exists(), "run `make data` to fetch OpenCV's sample videos"
    damaged = OPENCV_SAMPLES.parent / "opencv-samples-damaged" / "Megamind_bugy.avi"
    root = tmp_path / "real"
    (root / "opencv").mkdir(parents=True)
    for path in [*folder.iterdir(), damaged]:
        (root / "opencv" / path.name).symlink_to(path)
    experiment = _experiment(root, s3_store.base_url, workers=2, clip_frames=8)
    output = ingest.run(experiment)
    report = inspect.run(experiment, output.url, run_id="test")
    videos = {r["video"]: r for r in output.manifest.details["videos"]}
    assert {"opencv/vtest", "opencv/tree", "opencv/Megamind", "opencv/box"} <= set(videos)
    assert videos["opencv/vtest"]["decoded_frames"] == 398  # 795 frames at 10 fps -> 5 fps
    total = sum(counts["samples"] for counts in report["splits"].values())
    assert total == output.manifest.samples > 0
    assert s3_store.exists("runs/t/test/data.md")
