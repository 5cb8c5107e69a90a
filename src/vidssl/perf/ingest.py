"""`make perf-ingest`: ingest frames/s per core (decode, resize, JPEG encode, shard write to
the S3 server) next to the bare OpenCV decode rate of the same videos, with 1 and 2 worker
processes, on the synthetic Objectron set and on OpenCV's vtest.avi; then the share of frames
the clean stage drops on the default synthetic experiment, by reason."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from vidssl.config import Experiment, load_experiment
from vidssl.perf import save_results
from vidssl.stages import clean, ingest, synth
from vidssl.synth.objectron import SynthSpec, generate
from vidssl.video import open_capture

VTEST = Path(".data/opencv-samples/opencv/vtest.avi")


def bare_decode_rate(paths: list[Path]) -> float:
    """Frames/s decoding every frame of every video on one core (one decoder thread)."""
    cv2.setNumThreads(1)
    frames, started = 0, time.perf_counter()
    for path in paths:
        capture = open_capture(path, threads=1)
        while True:
            ok, _ = capture.read()
            if not ok:
                break
            frames += 1
        capture.release()
    return frames / (time.perf_counter() - started)


def ingest_rate(experiment: Experiment, workers: int, source_url: str | None = None) -> float:
    """Frames/s through the whole ingest stage (forced, so nothing is cached)."""
    cfg = experiment.ingest.model_copy(update={"workers": workers})
    experiment = experiment.model_copy(update={"ingest": cfg})
    started = time.perf_counter()
    output = ingest.run(experiment, source_url=source_url, force=True)
    seconds = time.perf_counter() - started
    return sum(v["kept_frames"] for v in output.manifest.details["videos"]) / seconds


def _experiment(name: str, source: dict, resize_short: int | None) -> Experiment:
    return Experiment.model_validate(
        {
            "name": name,
            "dataset": {"name": f"perf-{name}", "source": source},
            "ingest": {"resize_short": resize_short, "jpeg_quality": 90},
            "shards": {"max_samples": 64},
        }
    )


def measure(label: str, videos: list[Path], experiment: Experiment) -> dict:
    bare = bare_decode_rate(videos)
    one, two = ingest_rate(experiment, 1), ingest_rate(experiment, 2)
    row = {
        "set": label,
        "videos": len(videos),
        "bare_decode_fps": round(bare, 1),
        "ingest_fps_1_worker": round(one, 1),
        "ingest_fps_2_workers": round(two, 1),
        "per_core_ratio_1": round(one / bare, 2),
        "per_core_ratio_2": round(two / 2 / bare, 2),
        "speedup_1_to_2": round(two / one, 2),
    }
    print(
        f"{label:28}{len(videos):>7}{row['bare_decode_fps']:>10}{row['ingest_fps_1_worker']:>11}"
        f"{row['ingest_fps_2_workers']:>11}{row['per_core_ratio_1']:>8}{row['per_core_ratio_2']:>8}"
        f"{row['speedup_1_to_2']:>9}"
    )
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos-per-class", type=int, default=3)
    parser.add_argument("--vtest-copies", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.setdefault("VIDSSL_STORE_URI", "s3://vidssl")
    results: dict = {"cores": os.cpu_count(), "sets": []}
    print(f"perf-ingest on {os.cpu_count()} cores: frames/s; ratio = ingest per core / bare decode")
    print(
        f"{'set':28}{'videos':>7}{'decode':>10}{'ingest x1':>11}{'ingest x2':>11}"
        f"{'ratio1':>8}{'ratio2':>8}{'x1->x2':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="vidssl-perf-") as folder:
        root = Path(folder, "synthetic")
        generate(root, SynthSpec(videos_per_class=args.videos_per_class, frames=90, seed=11))
        source = {"kind": "objectron", "root": str(root)}
        results["sets"].append(
            measure(
                "synthetic Objectron 192x256",
                sorted(root.rglob("video.MOV")),
                _experiment("synthetic", source, None),
            )
        )
        if not VTEST.exists():
            raise SystemExit(f"{VTEST} missing: run `make data`")
        copies = Path(folder, "vtest", "opencv")
        copies.mkdir(parents=True)
        for index in range(args.vtest_copies):
            (copies / f"vtest{index}.avi").symlink_to(VTEST.resolve())
        source = {"kind": "folder", "root": str(copies.parent)}
        results["sets"].append(
            measure(
                "vtest.avi 768x576 -> 256",
                sorted(copies.iterdir()),
                _experiment("vtest", source, 256),
            )
        )

    demo = load_experiment("siampose_synthetic")
    raw = synth.raw_url(synth.run(demo))
    report = clean.run(demo, ingest.run(demo, source_url=raw).url).manifest.details["report"]
    results["clean_on_demo"] = report
    print(
        f"clean on siampose_synthetic: {report['frames_in'] - report['frames_kept']} of "
        f"{report['frames_in']} frames dropped ({100 * report['dropped_fraction']:.1f}%): "
        + ", ".join(f"{k} {v}" for k, v in report["dropped_by_reason"].items())
    )
    save_results("ingest", results)
    return results


if __name__ == "__main__":
    main()
