"""The bench stage: label subsets, and the retrieval path for whole-frame (UCF101-style) data."""

from __future__ import annotations

import pytest

from vidssl.config import TrainConfig
from vidssl.evaluate.metrics import mean_tables
from vidssl.evaluate.report import paper_rows
from vidssl.stages import bench, export, ingest
from vidssl.stages.bench import training_subset
from vidssl.store import open_store

from .conftest import write_video


def test_label_subsets_take_whole_sequences():
    records = [{"video_id": f"v{i // 3}"} for i in range(300)]  # 100 videos x 3 frames
    tenth = training_subset(records, 0.1, seed=0)
    assert len(tenth) == 30 and len({records[i]["video_id"] for i in tenth}) == 10
    assert len(training_subset(records, 0.001, seed=0)) == 3  # never empty: one sequence
    assert list(training_subset(records, 0.1, seed=0)) == list(tenth)  # seeded


def test_whole_frame_data_gets_retrieval_recall(tmp_path, make_experiment):
    for label in ("walking", "running"):
        for index in range(4):
            write_video(tmp_path / "videos" / label / f"{label}{index}.avi", frames=15)
    experiment = make_experiment(  # on file://{tmp_path}/store
        {
            "name": "retrieval",
            "dataset": {
                "name": "frames",
                "source": {"kind": "folder", "root": str(tmp_path / "videos")},
                "val_fraction": 0.5,
            },
            "ingest": {"fps": 5, "frame_stride": None, "workers": 1},
            "shards": None,
            # Nothing is trained: the schema's defaults, not the tiny run's, but a small encoder.
            "train": {
                **TrainConfig().model_dump(),
                "backbone": "resnet_small",
                "image_size": 32,
                "views_from": "frame",
            },
        }
    )
    clips = ingest.run(experiment)
    assert set(clips.manifest.splits) == {"train", "val"}
    embeddings = export.run(experiment, clips.url, baseline="random")
    result = bench.run(experiment, {"random": embeddings.url}, run_id="r")
    recall = result["models"]["random"]["retrieval"]
    assert set(recall) == {"R@1", "R@5", "R@10", "R@20"}
    assert 0 <= recall["R@1"] <= recall["R@5"] <= recall["R@20"] == 1.0  # only 2 classes
    report = open_store(f"file://{tmp_path / 'store'}").get_text("runs/retrieval/r/report.md")
    assert "| random |" in report and "R@20" in report


def test_paper_rows_are_those_of_the_runs_configuration():
    nearby_lc = paper_rows({"method": "simsiam", "pairing": "nearby", "augmentation": "lc_px"})
    assert next(iter(nearby_lc)) == "SimSiam, nearby pairs, lc_px (Table 5)"
    assert nearby_lc["SimSiam, nearby pairs, lc_px (Table 5)"] == (95.7, 0.53, 0.69)
    # The demo's NT-Xent with ultra-light crops is no row of the paper: only the random rows.
    demo = paper_rows({"method": "ntxent", "pairing": "nearby", "augmentation": "ulc_px"})
    assert list(demo) == [
        "random embeddings (Tables 1-2)",
        "random fit (Tables 1-2)",
        "random in-category fit (Tables 1-2)",
    ]
    ntxent = paper_rows({"method": "ntxent", "pairing": "nearby", "augmentation": "full"})
    assert ntxent["ntxent, nearby, full (Table 2)"] == (96.36, 0.63, 0.64)


def test_random_fit_draws_average_entry_by_entry():
    first = {"3d_map": 0.2, "pooled": {"queries": 4, "mean_iou": 0.1}}
    second = {"3d_map": 0.4, "pooled": {"queries": 4, "mean_iou": 0.3}}
    assert mean_tables([first, second]) == {
        "3d_map": pytest.approx(0.3),
        "pooled": {"queries": 4.0, "mean_iou": pytest.approx(0.2)},
    }
