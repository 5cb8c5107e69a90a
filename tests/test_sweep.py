"""Sweeps: variants of a base experiment, validated like any experiment, scored on val."""

from __future__ import annotations

import pytest
import yaml

from vidssl.config import ConfigError, merge_settings
from vidssl.sweep import load_sweep, main, with_overrides

from .conftest import TINY_EXPERIMENT

#: conftest's tiny training experiment, with the bench settings of a quick sweep.
TINY = merge_settings(TINY_EXPERIMENT, {"bench": {"label_fractions": [1.0], "random_fit_draws": 1}})


def test_dotted_overrides_change_one_key_each():
    raw = {"train": {"augmentation": "full", "batch_size": 4}}
    changed = with_overrides(raw, {"train.augmentation": "px", "bench.seed": 3}, "s")
    assert changed == {"train": {"augmentation": "px", "batch_size": 4}, "bench": {"seed": 3}}
    assert raw["train"]["augmentation"] == "full"  # the base is not touched
    with pytest.raises(ConfigError, match=r"s: train\.augmentation\.x: augmentation is not a sec"):
        with_overrides(raw, {"train.augmentation.x": 1}, "s")


def test_a_mapping_override_merges_or_replaces_as_base_does():
    raw = {"train": {"method": {"kind": "ntxent", "temperature": 0.1, "projection_dim": 512}}}
    same_kind = with_overrides(raw, {"train.method": {"temperature": 0.2}}, "s")
    assert same_kind["train"]["method"] == {
        "kind": "ntxent", "temperature": 0.2, "projection_dim": 512,
    }  # fmt: skip
    other_kind = with_overrides(raw, {"train.method": {"kind": "simsiam"}}, "s")
    assert other_kind["train"]["method"] == {"kind": "simsiam"}
    assert with_overrides(raw, {"train.method.temperature": 0.5}, "s")["train"]["method"] == {
        "kind": "ntxent", "temperature": 0.5, "projection_dim": 512,
    }  # fmt: skip
    # `method: ntxent` is `method: {kind: ntxent}`: a dotted key reaches into it
    shorthand = {"train": {"method": "ntxent"}}
    assert with_overrides(shorthand, {"train.method.temperature": 0.5}, "s")["train"] == {
        "method": {"kind": "ntxent", "temperature": 0.5}
    }
    assert with_overrides(shorthand, {"train.method": {"temperature": 0.5}}, "s")["train"] == {
        "method": {"kind": "ntxent", "temperature": 0.5}
    }


def test_a_base_with_its_own_base_is_resolved(experiment_dir, tmp_path):
    (experiment_dir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (experiment_dir / "child.yaml").write_text(
        yaml.safe_dump({"base": "tiny", "train": {"optimizer": {"base_lr": 0.2}}})
    )
    sweep = tmp_path / "chain.yaml"
    variants = {"t05": {"train.method": {"kind": "ntxent", "temperature": 0.5}}}
    sweep.write_text(yaml.safe_dump({"base": "child", "variants": variants}))
    base, loaded = load_sweep(str(sweep))
    assert base == "child"
    variant = loaded["t05"]
    assert variant.name == "child-t05"
    assert variant.train.optimizer.base_lr == 0.2  # the child's
    assert variant.train.optimizer.warmup_epochs == 1  # the child's base's
    assert variant.train.method.kind == "ntxent" and variant.train.method.temperature == 0.5
    assert variant.train.method.projection_dim == 2048  # replaced, not merged: ntxent's default


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
    variants = {"as-is": {}, "ntxent": {"train.method": {"kind": "ntxent", "projection_dim": 64}}}
    sweep.write_text(yaml.safe_dump({"base": "tiny", "variants": variants}))
    assert main([str(sweep)]) == 0
    table = (tmp_path / "build" / "sweeps" / "tiny-sweep.md").read_text()
    assert "| variant (val queries) | 3D mAP |" in table
    for row in ("| as-is |", "| ntxent |", "| random embeddings |", "| random in-category fit |"):
        assert row in table
    assert table in capsys.readouterr().out
