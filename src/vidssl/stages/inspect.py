"""Inspect: read a clip-shard output back and report what is in it (the smoke pipeline's check
that the data plane round-trips: every sample's metadata parses and every frame decodes)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

from vidssl.config import Experiment
from vidssl.errors import InputError
from vidssl.evaluate.report import markdown_table
from vidssl.metrics import stage_report
from vidssl.progress import track
from vidssl.shards import decode_json, read_split
from vidssl.stages.base import input_manifest, store_for
from vidssl.video import decode_jpeg

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def count_split(store, prefix: str, split: str, expected: int) -> dict:  # type: ignore[no-untyped-def]
    samples = frames = 0
    categories: Counter[str] = Counter()
    videos: set[str] = set()
    dataset = read_split(store, prefix, split, split_by_node=False, split_by_worker=False)
    for sample in track(dataset, expected, f"inspect {split}", unit="samples"):
        meta = decode_json(sample)
        frame_fields = sorted(name for name in sample if name.endswith(".jpg"))
        if len(frame_fields) != meta["num_frames"]:
            raise InputError(
                f"{sample['__url__']}: sample {sample['__key__']!r} has {len(frame_fields)} "
                f"frames, its meta.json says {meta['num_frames']}"
            )
        for name in frame_fields:
            try:
                decode_jpeg(sample[name])
            except ValueError as exc:
                raise InputError(
                    f"{sample['__url__']}: sample {sample['__key__']!r} {name}: {exc}"
                ) from None
        samples += 1
        frames += len(frame_fields)
        categories[meta["category"]] += 1
        videos.add(meta["video_id"])
    return {
        "samples": samples,
        "frames": frames,
        "videos": len(videos),
        "categories": dict(sorted(categories.items())),
    }


def render_markdown(report: dict) -> str:
    lines = [
        f"# {report['experiment']}: clip shards",
        "",
        f"Source: `{report['clips_url']}`",
        "",
        markdown_table(
            ("split", "videos", "samples", "frames"),
            [
                (split, str(counts["videos"]), str(counts["samples"]), str(counts["frames"]))
                for split, counts in report["splits"].items()
            ],
        ),
    ]
    cleaning = report.get("cleaning")
    if cleaning:
        lines += [
            "",
            f"Cleaning kept {cleaning['frames_kept']} of {cleaning['frames_in']} frames "
            f"({100 * cleaning['dropped_fraction']:.1f}% dropped).",
            "",
            markdown_table(
                ("dropped because", "frames"),
                [(reason, str(count)) for reason, count in cleaning["dropped_by_reason"].items()],
            ),
        ]
    if report["skipped"]:
        lines += ["", "Skipped inputs:", ""]
        lines += [f"- `{s['input']}`: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def run(experiment: Experiment, clips_url: str, run_id: str | None = None) -> dict:
    """Count every split's samples against the manifest and write the run's data report;
    its summary goes to the Pushgateway (vidssl.metrics)."""
    with stage_report(experiment.name, "inspect", run_id) as summary:
        report = _inspect(experiment, clips_url, run_id)
        summary.succeeded(skipped_inputs=len(report["skipped"]))
    return report


def _inspect(experiment: Experiment, clips_url: str, run_id: str | None) -> dict:
    store = store_for(experiment)
    prefix, manifest = input_manifest(store, clips_url)
    report = {
        "experiment": experiment.name,
        "clips_url": clips_url,
        "splits": {
            split: count_split(store, prefix, split, entry.samples)
            for split, entry in manifest.splits.items()
        },
        "skipped": [s.model_dump() for s in manifest.skipped],
        "cleaning": manifest.details.get("report"),
    }
    for split, counts in report["splits"].items():
        if counts["samples"] != manifest.splits[split].samples:
            raise InputError(
                f"{clips_url}: split {split!r} read {counts['samples']} samples, "
                f"manifest says {manifest.splits[split].samples}"
            )
    run_prefix = f"runs/{experiment.name}/{run_id or new_run_id()}"
    report["report_url"] = store.url(f"{run_prefix}/data.md")
    store.put_text(f"{run_prefix}/inspect.json", json.dumps(report, indent=2))
    store.put_text(f"{run_prefix}/data.md", render_markdown(report))
    return report
