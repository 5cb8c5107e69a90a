"""Objectron cleaning: each rule on hand-made frames, and the stage on synthetic data whose
defects are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidssl.config import CleanConfig, Experiment
from vidssl.objectron.cleaning import BlurDetector, crop_box, geometry_problem
from vidssl.shards import decode_json, read_split
from vidssl.stages import clean, ingest, synth

CFG = CleanConfig()


def _frame() -> dict:
    """A 0.2 m cube, 1 m in front of the camera, standing on a plane below it."""
    corners = [[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (-0.1, 0.1)]
    points_3d = np.array([[0, 0, 0], *corners]) + [0, 0, -1.0]
    points_2d = np.stack(
        [
            0.5 + points_3d[:, 0] / -points_3d[:, 2],
            0.5 - points_3d[:, 1] / -points_3d[:, 2],
            -points_3d[:, 2],
        ],
        1,
    )
    return {
        "objects": [{"keypoints_2d": points_2d.tolist(), "keypoints_3d": points_3d.tolist()}],
        "plane_center": [0.0, -0.1, -1.0],
        "plane_normal": [0.0, 1.0, 0.0],
    }


SCALE = [0.2, 0.2, 0.2]


def test_a_good_frame_passes():
    assert geometry_problem(_frame(), SCALE, CFG) is None


def test_each_rule():
    frame = _frame()
    frame["objects"][0]["keypoints_3d"][2][1] = float("nan")
    assert geometry_problem(frame, SCALE, CFG) == "non_finite"
    assert geometry_problem(_frame(), [0.2, 0.0, 0.2], CFG) == "degenerate_box"

    frame = _frame()
    for point in frame["objects"][0]["keypoints_2d"]:
        point[0] += 0.65  # centre at x = 1.15: beyond the 0.1 margin
    assert geometry_problem(frame, SCALE, CFG) == "centre_outside"

    frame = _frame()
    points = frame["objects"][0]["keypoints_2d"]
    for point in points[1:]:
        point[0] = 1.3 if point[0] > 0.5 else -0.3  # the box is far bigger than the image
    assert geometry_problem(frame, SCALE, CFG) == "few_keypoints_inside"

    floating = _frame()
    floating["plane_center"] = [0.0, -0.5, -1.0]  # the box floats 40 cm above its plane
    assert geometry_problem(floating, SCALE, CFG) == "off_plane"
    tilted = _frame()
    tilted["plane_normal"] = [np.sin(0.6), np.cos(0.6), 0.0]  # 34 degrees off
    assert geometry_problem(tilted, SCALE, CFG) == "off_plane"


def test_blur_detector_adapts_to_recent_sharp_frames():
    energies = [500, 480, 20, 15, 470, 300, 290, 280, 30]
    detector = BlurDetector(energies, ratio=0.35, history=3)
    assert [detector.is_blurred(e) for e in energies] == [
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    # A video that opens blurred is judged against its sharp part.
    opening = [10, 12, 400, 420, 410]
    detector = BlurDetector(opening, ratio=0.35, history=3)
    assert [detector.is_blurred(e) for e in opening] == [True, True, False, False, False]


def test_crop_box_is_enlarged_and_clipped():
    box = crop_box(_frame(), margin=0.1)
    assert all(0 <= v <= 1 for v in box) and box[0] < box[2] and box[1] < box[3]
    frame = _frame()
    for point in frame["objects"][0]["keypoints_2d"]:
        point[0] += 0.45
    assert crop_box(frame, margin=0.1)[2] == 1.0


@pytest.fixture
def defective(file_store, make_experiment) -> tuple[Experiment, object, object]:
    experiment = make_experiment(
        {
            "name": "c",
            "dataset": {
                "name": "s",
                "source": {
                    "kind": "synthetic_objectron",
                    "videos_per_class": 6,
                    "frames": 40,
                    "width": 96,
                    "height": 128,
                    "categories": ["bike", "cup"],
                    "seed": 5,
                },
                "val_fraction": 0.1,
            },
            "ingest": {"frame_stride": 2, "workers": 1},
            "shards": None,
            "train": None,
        },
        store_uri=file_store.base_url,
    )
    synthetic = synth.run(experiment)
    clips = ingest.run(experiment, source_url=synth.raw_url(synthetic))
    return experiment, synthetic, clips


def test_clean_stage_drops_the_known_defects(defective, file_store):
    experiment, synthetic, clips = defective
    cleaned = clean.run(experiment, clips.url)
    report = cleaned.manifest.details["report"]
    report_file = f"{file_store.key_of(cleaned.url)}/{cleaned.manifest.details['report_file']}"
    assert json.loads(file_store.get_text(report_file)) == report
    assert report["frames_in"] == sum(20 for _ in range(12))
    truth = {v["sequence_id"]: v["defects"] for v in synthetic.manifest.details["videos"]}
    blurred_total = blurred_caught = test_frames_kept = test_frames_in = 0
    for split in cleaned.manifest.splits:
        for sample in read_split(file_store, file_store.key_of(cleaned.url), split):
            meta = decode_json(sample)
            defects = truth[meta["video_id"]]
            for frame in meta["frames"]:
                x0, y0, x1, y1 = frame["crop_box"]
                assert x0 < x1 and y0 < y1
                if split != "test":  # query crops may reach past the image (then padded)
                    assert min(x0, y0) >= 0 and max(x1, y1) <= 1
                centre = frame["objects"][0]["keypoints_2d"][0]
                if split == "test":  # pose queries: the reference's validity filter only
                    assert -1 < centre[0] < 2 and -1 < centre[1] < 2
                    assert frame["objects"][0]["keypoints_3d"][0][2] < 0
                else:
                    assert -0.1 <= centre[0] <= 1.1 and -0.1 <= centre[1] <= 1.1
            kept = set(meta["source_frame_indices"])
            if split == "test":
                test_frames_kept += len(kept)
                test_frames_in += meta["num_frames"] + sum(meta["dropped_frames"].values())
                continue
            if "blurred_frames" in defects:
                start, end = defects["blurred_frames"]
                blurred = set(range(start + start % 2, end, 2))
                blurred_total += len(blurred)
                blurred_caught += len(blurred - kept)
            assert len(sample) - 3 == meta["num_frames"]  # besides __key__, __url__, meta.json
    assert blurred_total > 0 and blurred_caught / blurred_total >= 0.9
    # Test frames are not cleaned: only frames no box can be fitted to (far off-image) go.
    assert test_frames_in > 0 and test_frames_kept >= 0.9 * test_frames_in
    assert report["kept_by_split"]["test"]["frames"] == test_frames_kept
    assert report["dropped_by_reason"].get("blurred", 0) <= blurred_total  # no sharp frame taken
    assert report["by_category"]["cup"].get("blurred", 0) == 0  # blur test is for bikes only


def test_clean_is_cached_on_its_input_digest(defective):
    experiment, _, clips = defective
    first = clean.run(experiment, clips.url)
    assert clean.run(experiment, clips.url).cached
    stricter = experiment.model_copy(update={"clean": CleanConfig(centre_margin=0.0)})
    assert clean.run(stricter, clips.url).url != first.url


def test_clean_refuses_clips_without_annotations(file_store, video_folder, make_experiment):
    experiment = make_experiment(
        {
            "name": "c",
            "dataset": {
                "name": "f",
                "source": {"kind": "folder", "root": str(video_folder)},
                "val_fraction": 0.1,
            },
            "ingest": {"frame_stride": None, "workers": 1},
            "shards": None,
            "train": None,
        },
        store_uri=file_store.base_url,
    )
    clips = ingest.run(experiment)
    with pytest.raises(ValueError, match="no Objectron annotation"):
        clean.run(experiment, clips.url)
