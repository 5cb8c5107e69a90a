"""Clean: Objectron clip shards -> cleaned clip shards, each kept frame with its crop box, and
a JSON report (`report.json` beside the manifest) of what was dropped, per reason and category.
Frame JPEGs are copied, never re-encoded."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict

from vidssl.clips import frame_name
from vidssl.config import Experiment
from vidssl.objectron.cleaning import (
    REASONS,
    BlurDetector,
    crop_box,
    geometry_problem,
    laplacian_energy,
)
from vidssl.progress import track
from vidssl.shards import OutputWriter, decode_json, read_split
from vidssl.stages.base import StageOutput, StageSpec, input_manifest, run_cached, store_for
from vidssl.video import decode_jpeg

log = logging.getLogger(__name__)

SPEC = StageSpec(name="clean", version=1)
TOO_FEW_FRAMES = "too_few_frames"


def clean_sample(sample: dict, experiment: Experiment) -> tuple[dict | None, Counter]:
    """The cleaned sample (None if too few frames remain) and the reasons frames were dropped."""
    cfg = experiment.clean
    meta = decode_json(sample)
    if "frames" not in meta:
        raise ValueError(
            f"{sample['__url__']}: sample {sample['__key__']!r} has no Objectron annotation; "
            "the clean stage takes Objectron clip shards"
        )
    scale = meta["objects"][0]["scale"] if meta["objects"] else [float("nan")] * 3
    reasons = [geometry_problem(frame, scale, cfg) for frame in meta["frames"]]
    if meta["category"] in cfg.blur_categories:
        energies = [
            laplacian_energy(decode_jpeg(sample[frame_name(i)])) for i in range(len(reasons))
        ]
        detector = BlurDetector(energies, cfg.blur_ratio, cfg.blur_history)
        for i, energy in enumerate(energies):
            if reasons[i] is None and detector.is_blurred(energy):
                reasons[i] = "blurred"
    dropped = Counter(reason for reason in reasons if reason)
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    if len(kept) < cfg.min_frames:
        dropped[TOO_FEW_FRAMES] += len(kept)
        return None, dropped
    frames = []
    for i in kept:
        frame = dict(meta["frames"][i])
        frame["crop_box"] = crop_box(frame, cfg.crop_margin)
        frames.append(frame)
    cleaned_meta = {
        **meta,
        "frames": frames,
        "source_frame_indices": [meta["source_frame_indices"][i] for i in kept],
        "timestamps": [meta["timestamps"][i] for i in kept],
        "num_frames": len(kept),
        "dropped_frames": dict(dropped),
    }
    cleaned = {"__key__": sample["__key__"], "meta.json": cleaned_meta}
    for position, i in enumerate(kept):
        cleaned[frame_name(position)] = sample[frame_name(i)]
    return cleaned, dropped


def run(experiment: Experiment, clips_url: str, *, force: bool = False) -> StageOutput:
    store = store_for(experiment)
    prefix, manifest = input_manifest(store, clips_url)

    def build(writer: OutputWriter) -> None:
        by_category: dict[str, Counter] = defaultdict(Counter)
        for split, entry in manifest.splits.items():
            samples = read_split(store, prefix, split, split_by_node=False, split_by_worker=False)
            for sample in track(samples, entry.samples, f"clean {split}", unit="clips"):
                category = decode_json(sample)["category"]
                cleaned, dropped = clean_sample(sample, experiment)
                counts = by_category[category]
                counts["frames_in"] += decode_json(sample)["num_frames"]
                counts.update(dropped)
                if cleaned is None:
                    counts["clips_dropped"] += 1
                    continue
                counts["frames_kept"] += cleaned["meta.json"]["num_frames"]
                writer.write(split, cleaned)
        report = summarize(by_category)
        writer.store.put_text(f"{writer.prefix}/report.json", json.dumps(report, indent=2))
        writer.details["report"] = report
        log.info(
            "clean: kept %d of %d frames (%.1f%% dropped): %s",
            report["frames_kept"],
            report["frames_in"],
            100 * report["dropped_fraction"],
            report["dropped_by_reason"],
        )

    return run_cached(
        store,
        SPEC,
        experiment,
        {"clean": experiment.clean.model_dump()},
        [manifest.digest],
        build,
        force=force,
    )


def summarize(by_category: dict[str, Counter]) -> dict:
    total: Counter = Counter()
    for counts in by_category.values():
        total.update(counts)
    reasons = [*REASONS, TOO_FEW_FRAMES]
    return {
        "frames_in": total["frames_in"],
        "frames_kept": total["frames_kept"],
        "dropped_fraction": 1 - total["frames_kept"] / total["frames_in"]
        if total["frames_in"]
        else 0.0,
        "clips_dropped": total["clips_dropped"],
        "dropped_by_reason": {r: total[r] for r in reasons if total[r]},
        "by_category": {
            category: {k: counts[k] for k in ("frames_in", "frames_kept", *reasons) if counts[k]}
            for category, counts in sorted(by_category.items())
        },
    }
