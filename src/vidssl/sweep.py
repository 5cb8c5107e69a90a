"""Choosing a configuration on val: a sweep file names a base experiment and variants of it
(dotted keys changed), and every variant is trained, exported and scored with val frames as the
pose queries, never test. The table printed (and written to `build/sweeps/<SWEEP>.md`) is what
a configuration is chosen from; the chosen one is then reported on test.

    python -m vidssl.sweep demo            # pipelines/sweeps/demo.yaml
    make sweep SWEEP=demo

A sweep file:

    base: siampose_synthetic
    variants:
      as-is: {}
      light-crops: {train.augmentation: lc_px}
      simsiam: {train.method: {kind: simsiam, projection_dim: 512}}

A dotted key whose value is a mapping merges into the base's mapping as an experiment file's
`base:` does (vidssl.config.merge_settings): key by key, unless its `kind` differs, when it
replaces the base's mapping (another method, sampler or source).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import yaml

from vidssl.config import (
    ConfigError,
    Experiment,
    expand_kind_shorthand,
    experiment_path,
    merge_settings,
    parse_experiment,
    resolve_settings,
)
from vidssl.evaluate.report import markdown_table
from vidssl.store import StoreError

log = logging.getLogger(__name__)

SWEEPS_DIR = Path("pipelines/sweeps")
OUT_DIR = Path("build/sweeps")


def with_overrides(raw: dict, overrides: dict, source: str) -> dict:
    """`raw` with each dotted key of `overrides` set (`train.augmentation: lc_px`); a mapping
    value merges into the base's mapping, or replaces it when its `kind` differs
    (`train.method: {kind: simsiam}`), as `base:` does."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = result
        for part in parents:
            child = node[part] = expand_kind_shorthand(part, node.get(part, {}))
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {dotted}: {part} is not a section")
            node = child
        if leaf in node:
            node[leaf] = expand_kind_shorthand(leaf, node[leaf])
        node.update(merge_settings(node, {leaf: copy.deepcopy(expand_kind_shorthand(leaf, value))}))
    return result


def load_sweep(name_or_path: str) -> tuple[str, dict[str, Experiment]]:
    """(base experiment name, {variant: experiment}) of a sweep file, every variant validated."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SWEEPS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ConfigError(f"{path}: no such sweep file; known sweeps: {known}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"base", "variants"}
    if unknown or "base" not in spec or not spec.get("variants"):
        raise ConfigError(f"{path}: a sweep has `base` and `variants` only (got {sorted(spec)})")
    base = resolve_settings(experiment_path(spec["base"]))  # its own `base:` chain merged in
    variants = {}
    for variant, overrides in spec["variants"].items():
        source = f"{path}: variants.{variant}"
        raw = with_overrides(base, overrides or {}, source)
        raw["name"] = f"{base['name']}-{variant}"
        variants[variant] = parse_experiment(raw, source=source)
    return base["name"], variants


def score_variant(experiment: Experiment) -> dict:
    """Train, export (trained and random embeddings) and score on val; the bench metrics."""
    from vidssl.stages import bench, export, train
    from vidssl.stages.prepare import prepared_clips, training_tracks

    clips = prepared_clips(experiment)
    model = train.run(experiment, clips, tracks_url=training_tracks(experiment, clips))
    trained = export.run(experiment, clips, model_url=model.model_url)
    random = export.run(experiment, clips, baseline="random")
    return bench.run(
        experiment, {"trained": trained.url, "random": random.url}, run_id="sweep", queries="val"
    )


def _row(name: str, model: dict | None, baselines: dict | None = None) -> list[str]:
    if model is not None:
        pose = model["pose"]["1"]
        cells = [pose["3d_map"], pose["pooled"]["fraction_iou_over_0.5"], model["reid_map"]]
        cells.append(model["category_accuracy"])
    else:
        cells = [baselines["3d_map"], baselines["pooled"]["fraction_iou_over_0.5"], None, None]
    return [name, *("" if value is None else f"{value:.3f}" for value in cells)]


def sweep_table(results: dict[str, dict]) -> str:
    rows = [_row(variant, metrics["models"]["trained"]) for variant, metrics in results.items()]
    first = next(iter(results.values()))  # baselines of the first variant's data
    rows.append(_row("random embeddings", first["models"]["random"]))
    for name, table in first.get("baselines", {}).items():
        rows.append(_row(name, None, table))
    header = ("variant (val queries)", "3D mAP", "IoU>0.5 pooled", "re-ID mAP", "category acc.")
    return markdown_table(header, rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vidssl.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", help="sweep name (pipelines/sweeps/<name>.yaml) or path")
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        base, variants = load_sweep(args.sweep)
        results = {}
        for index, (variant, experiment) in enumerate(variants.items(), start=1):
            if args.only is not None and variant not in args.only:
                continue
            log.info("sweep %s: variant %d/%d: %s", args.sweep, index, len(variants), variant)
            results[variant] = score_variant(experiment)
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = f"# Sweep {args.sweep} (base {base}), scored on val\n\n" + sweep_table(results)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{Path(args.sweep).stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
