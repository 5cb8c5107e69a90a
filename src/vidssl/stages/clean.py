"""Clean: Objectron clip shards -> cleaned clip shards, each kept frame with its crop box, and
a JSON report of what was dropped, per reason and category (in the manifest's details, and as
`report.json` in the output: the manifest's `report_file`).
Training data (train, val) gets the seed paper's cleaning; the test split, whose frames are the
pose queries, gets only the reference's query validity filter (`clean.test_queries`).
Frame JPEGs are copied, never re-encoded; synthetic ground truth (vidssl.clips) moves with its
frames, and a flow whose next frame was dropped is dropped with it."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict

from vidssl.clips import frame_name, renumber_ground_truth
from vidssl.config import Experiment
from vidssl.errors import InputError
from vidssl.objectron.cleaning import (
    REASONS,
    BlurDetector,
    crop_box,
    geometry_problem,
    laplacian_energy,
    query_problem,
)
from vidssl.progress import track
from vidssl.shards import OutputWriter, decode_json, read_split
from vidssl.stages.base import StageOutput, StageSpec, input_manifest, run_cached, store_for
from vidssl.video import decode_jpeg

log = logging.getLogger(__name__)

SPEC = StageSpec(name="clean", version=2)  # 2: test split = query validity filter only
TOO_FEW_FRAMES = "too_few_frames"


def clean_sample(
    sample: dict, experiment: Experiment, split: str = "train"
) -> tuple[dict | None, Counter]:
    """The cleaned sample (None if too few frames remain) and the reasons frames were dropped.
    Test clips hold the benchmark's queries: with `clean.test_queries: validity` they pass the
    query validity filter alone."""
    cfg = experiment.clean
    meta = decode_json(sample)
    if "frames" not in meta:
        raise InputError(
            f"{sample['__url__']}: sample {sample['__key__']!r} has no Objectron annotation; "
            "the clean stage takes Objectron clip shards"
        )
    if split == "test" and cfg.test_queries == "validity":
        reasons = [query_problem(frame) for frame in meta["frames"]]
        return _keep_frames(sample, meta, reasons, 1, cfg.crop_margin, clip=False)
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
    return _keep_frames(sample, meta, reasons, cfg.min_frames, cfg.crop_margin)


def _keep_frames(
    sample: dict,
    meta: dict,
    reasons: list[str | None],
    min_frames: int,
    crop_margin: float,
    clip: bool = True,
) -> tuple[dict | None, Counter]:
    """The sample with the frames that have no reason to go, each with its crop box."""
    dropped = Counter(reason for reason in reasons if reason)
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    if len(kept) < min_frames:
        dropped[TOO_FEW_FRAMES] += len(kept)
        return None, dropped
    frames = []
    for i in kept:
        frame = dict(meta["frames"][i])
        frame["crop_box"] = crop_box(frame, crop_margin, clip)
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
    cleaned.update(renumber_ground_truth(sample, kept))
    return cleaned, dropped


def run(experiment: Experiment, clips_url: str, *, force: bool = False) -> StageOutput:
    store = store_for(experiment)
    prefix, manifest = input_manifest(store, clips_url)

    def build(writer: OutputWriter) -> None:
        by_category: dict[str, Counter] = defaultdict(Counter)
        by_split: dict[str, Counter] = defaultdict(Counter)
        for split, entry in manifest.splits.items():
            samples = read_split(store, prefix, split, split_by_node=False, split_by_worker=False)
            for sample in track(samples, entry.samples, f"clean {split}", unit="clips"):
                category = decode_json(sample)["category"]
                cleaned, dropped = clean_sample(sample, experiment, split)
                counts = by_category[category]
                counts["frames_in"] += decode_json(sample)["num_frames"]
                counts.update(dropped)
                if cleaned is None:
                    counts["clips_dropped"] += 1
                    continue
                counts["frames_kept"] += cleaned["meta.json"]["num_frames"]
                by_split[split].update(clips=1, frames=cleaned["meta.json"]["num_frames"])
                writer.write(split, cleaned)
        report = summarize(by_category)
        report["kept_by_split"] = {split: dict(counts) for split, counts in by_split.items()}
        writer.store.put_text(writer.object_key("report.json"), json.dumps(report, indent=2))
        writer.details["report"] = report
        writer.details["report_file"] = writer.relative("report.json")
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
