"""Sweeps: variants of a base experiment, validated like any experiment, scored on val."""

from __future__ import annotations

import pytest
import yaml

from vidssl.config import ConfigError
from vidssl.sweep import load_sweep, main, with_overrides

TINY = {
    "name": "tiny",
    "pipeline": "siampose",
    "dataset": {
        "name": "tiny-synthetic",
        "source": {
            "kind": "synthetic_objectron",
            "videos_per_class": 3,
            "frames": 20,
            "width": 64,
            "height": 80,
            "categories": ["cup", "laptop"],
        },
        "val_fraction": 0.5,
    },
    "ingest": {"frame_stride": 5, "workers": 1},
    "train": {
        "backbone": "resnet_small",
        "image_size": 32,
        "batch_size": 4,
        "projection_dim": 32,
        "predictor_dim": 8,
        "epochs": 2,
        "warmup_epochs": 1,
        "steps_per_epoch": 2,
        "loader_workers": 0,
        "shuffle_buffer": 4,
    },
    "bench": {"label_fractions": [1.0], "random_fit_draws": 1},
}


def test_dotted_overrides_change_one_key_each():
    raw = {"train": {"objective": "simsiam", "batch_size": 4}}
    changed = with_overrides(raw, {"train.objective": "ntxent", "bench.seed": 3}, "s")
    assert changed == {"train": {"objective": "ntxent", "batch_size": 4}, "bench": {"seed": 3}}
    assert raw["train"]["objective"] == "simsiam"  # the base is not touched
    with pytest.raises(ConfigError, match=r"s: train\.objective\.x: objective is not a section"):
        with_overrides(raw, {"train.objective.x": 1}, "s")


def test_a_bad_variant_is_named(experiment_dir, tmp_path):
    (experiment_dir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(yaml.safe_dump({"base": "tiny", "variants": {"oops": {"train.lr": 1}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: variants.oops: train.lr: unknown key"):
        load_sweep(str(sweep))


def test_every_shipped_sweep_loads():
    for name in ("demo", "demo_simsiam"):
        base, variants = load_sweep(name)
        assert base == "siampose_synthetic" and len(variants) >= 5
        assert all(v.name.startswith("siampose_synthetic-") for v in variants.values())


def test_a_sweep_scores_its_variants_on_val(experiment_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path / 'store'}")
    monkeypatch.chdir(tmp_path)
    (experiment_dir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    sweep = tmp_path / "tiny-sweep.yaml"
    variants = {"as-is": {}, "ntxent": {"train.objective": "ntxent"}}
    sweep.write_text(yaml.safe_dump({"base": "tiny", "variants": variants}))
    assert main([str(sweep)]) == 0
    table = (tmp_path / "build" / "sweeps" / "tiny-sweep.md").read_text()
    assert "| variant (val queries) | 3D mAP |" in table
    for row in ("| as-is |", "| ntxent |", "| random embeddings |", "| random in-category fit |"):
        assert row in table
    assert table in capsys.readouterr().out
