"""The default demo's promise (`make pipeline-run`, EXP=siampose_synthetic): on its fixed seed,
nearby-pair embeddings beat random embeddings and the random in-category box fit on pose 3D mAP
(the fraction of test queries fitted with IoU > 0.5). Checked on a shortened run: the demo's data
and settings, fewer training epochs, on the CPU."""

from __future__ import annotations

from vidssl.config import load_experiment
from vidssl.stages import bench, export, train
from vidssl.stages.prepare import prepared_clips

SHORT_EPOCHS = 3  # of the demo's 10 (100 steps each)


def test_demo_nearby_pairs_beat_random_embeddings_and_random_in_category_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path}")
    demo = load_experiment("siampose_synthetic")
    assert demo.train.pairing == "nearby" and demo.train.epochs > SHORT_EPOCHS
    short = demo.model_copy(
        update={"train": demo.train.model_copy(update={"epochs": SHORT_EPOCHS})}
    )
    clips = prepared_clips(short)
    model = train.run(short, clips)
    trained = export.run(short, clips, model_url=model.model_url)
    random = export.run(short, clips, baseline="random")
    metrics = bench.run(short, {"nearby": trained.url, "random": random.url}, run_id="short")

    def pose(table: dict) -> float:
        return table["all"]["fraction_iou_over_0.5"]

    nearby = pose(metrics["models"]["nearby"]["pose"]["1"])
    random_embeddings = pose(metrics["models"]["random"]["pose"]["1"])
    in_category = pose(metrics["baselines"]["random in-category fit"])
    assert metrics["models"]["nearby"]["pose"]["1"]["all"]["queries"] > 100
    assert nearby > random_embeddings, (nearby, random_embeddings)
    assert nearby > in_category, (nearby, in_category)
