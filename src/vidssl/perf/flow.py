"""`make perf-flow`: the flow stage's speed and the flow codec's error.

On a small synthetic Objectron dataset made by the data stages (every frame kept, ground-truth
flow when the generator supplies it), in one run:

- (a) frames/s through the flow stage (`vidssl.stages.flow.run`, forced: reading, decoding,
  flow, tracking, JPEG coding and writing, timed around the call) against the bare estimator
  (`forward_backward` on each clip's already decoded frames, one call per clip) on the same
  frames; the ratio's target is >= 0.9. Each is timed `--repeats` times, interleaved, the
  best kept; the process's CPU time per frame of each is reported beside (what the stage adds,
  whatever else shares the cores).
- (b) tracking time as a share of flow-estimation time inside the stage (target <= 10%).
- (c) the codec's round-trip error in px (mean, max) on the bare flows, clipped to the bound
  (what the codec cannot store) and not.
- the estimators' end-point error against the synthetic ground-truth flow (DIS and Farneback),
  when the clips carry it, and how far the stage's tracks drift from it: each track's
  position k frames on against its start carried by the true flow (`track_errors`), k = 1..6,
  with the share beyond 4 px (one cell of PiCo's stride-4 features: a wrong positive).
- with a GPU: RAFT (`raft_small`, `raft_large`, weights from `--raft-weights`, a local state
  dict for `raft_large`; `raft_small` only runs with `--raft-small-weights`) batched under bf16
  autocast through the estimator, against the bare torchvision call (one pair at a time, fp32),
  at 520x960, in frame pairs/s. RAFT's cost does not depend on its weights' values: a
  randomly initialised state dict (`--raft-random-weights`) times it the same.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidssl.clips import ground_truth
from vidssl.config import Experiment, parse_experiment
from vidssl.evaluate.dense import track_errors
from vidssl.flow.codec import decode_flow, encode_flow
from vidssl.flow.estimators import build_estimator
from vidssl.flow.tracks import TRACKS_FIELD, decode_tracks
from vidssl.perf import save_results
from vidssl.shards import read_split
from vidssl.stages import flow as flow_stage
from vidssl.stages.base import store_for
from vidssl.stages.flow import ClipFailed, decode_frames
from vidssl.stages.prepare import prepared_clips

#: 520x960: the resolution of the RAFT target (80 frame pairs/s for raft_large on an H100).
RAFT_SIZE = (520, 960)


def perf_experiment(videos_per_class: int, frames: int, width: int, height: int) -> Experiment:
    """Synthetic Objectron clips, every frame kept (frame_stride 1), ground-truth flow between
    consecutive frames; the flow stage with its defaults (DIS)."""
    return parse_experiment(
        {
            "name": "perf_flow",
            "dataset": {
                "name": "perf-flow",
                "source": {
                    "kind": "synthetic_objectron",
                    "videos_per_class": videos_per_class,
                    "frames": frames,
                    "width": width,
                    "height": height,
                    "categories": ["bike", "book", "bottle", "camera", "chair", "cup"],
                    "flow_step": 1,
                },
                "val_fraction": 0.2,
            },
            "ingest": {"frame_stride": 1, "workers": 2},
            "shards": {"max_samples": 8},
        },
        source="perf-flow",
    )


def clips_frames(experiment: Experiment, clips_url: str) -> list[tuple[dict, np.ndarray]]:
    """(sample, RGB frames) of every clip of the splits the flow stage reads."""
    store = store_for(experiment)
    prefix = store.key_of(clips_url)
    out = []
    for split in experiment.flow.splits:
        try:
            samples = list(read_split(store, prefix, split, split_by_node=False,
                                      split_by_worker=False))  # fmt: skip
        except KeyError:  # a split the clips lack
            continue
        for sample in samples:
            try:
                out.append((sample, decode_frames(sample)))
            except ClipFailed:
                continue
    return out


@dataclass
class Timed:
    """Frames/s over wall time, and the process's CPU seconds per frame (all threads): on a
    machine whose cores other work shares, the CPU time says what the stage adds."""

    frames_per_second: float
    cpu_ms_per_frame: float


def _timed(frames: int, run: Callable[[], object]) -> tuple[Timed, object]:
    started, cpu = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return Timed(frames / seconds, 1000 * cpu_seconds / frames), result


def bare_rate(estimator, clips: list[np.ndarray]) -> tuple[Timed, list]:  # type: ignore[no-untyped-def]
    """`forward_backward` called once per clip on decoded frames: its rate, and the flows."""
    frames = sum(len(f) for f in clips)
    timed, flows = _timed(frames, lambda: [estimator.forward_backward(f) for f in clips])
    return timed, flows  # type: ignore[return-value]


def stage_rate(experiment: Experiment, clips_url: str, frames: int) -> tuple[Timed, dict]:
    """The flow stage (forced), timed around the call: its rate, and its details."""
    timed, output = _timed(frames, lambda: flow_stage.run(experiment, clips_url, force=True))
    return timed, output.manifest.details  # type: ignore[attr-defined]


def codec_error(flows: list, bound: float, quality: int) -> dict:
    """Round-trip error of the flow codec on these flows, px: against the flow clipped to the
    bound (the codec's own error) and against the flow itself."""
    clipped_errors, raw_errors = [], []
    beyond = total = 0
    for forward, backward in flows:
        for field in (*forward, *backward):
            decoded = decode_flow(*encode_flow(field, bound, quality), bound)
            clipped_errors.append(np.abs(decoded - np.clip(field, -bound, bound)).ravel())
            raw_errors.append(np.linalg.norm(decoded - field, axis=-1).ravel())
            beyond += int(np.count_nonzero(np.abs(field) > bound))
            total += field.size
    clipped, raw = np.concatenate(clipped_errors), np.concatenate(raw_errors)
    return {
        "bound_px": bound,
        "jpeg_quality": quality,
        "component_error_px_mean": round(float(clipped.mean()), 4),
        "component_error_px_p99": round(float(np.percentile(clipped, 99)), 4),
        "component_error_px_max": round(float(clipped.max()), 4),
        "endpoint_error_px_mean": round(float(raw.mean()), 4),
        "endpoint_error_px_max": round(float(raw.max()), 4),
        "components_beyond_bound": round(beyond / max(total, 1), 6),
    }


def ground_truth_epe(clips: list[tuple[dict, np.ndarray]], name: str) -> dict | None:
    """Mean end-point error (px) of estimator `name`'s forward flow against the synthetic
    ground truth, over valid pixels; None when the clips carry no ground truth."""
    estimator = build_estimator(name)
    errors = []
    for sample, frames in clips:
        for p in range(len(frames) - 1):
            truth = ground_truth(sample, p)
            if truth.flow is None or truth.flow_valid is None or not truth.flow_valid.any():
                continue
            flow = estimator(frames[p : p + 1], frames[p + 1 : p + 2])[0]
            errors.append(np.linalg.norm(flow - truth.flow, axis=-1)[truth.flow_valid])
    if not errors:
        return None
    epe = np.concatenate(errors)
    return {
        "epe_px_mean": round(float(epe.mean()), 3),
        "epe_px_median": round(float(np.median(epe)), 3),
        "outliers_over_3px": round(float(np.mean(epe > 3)), 4),
        "pixels": int(epe.size),
    }


#: Frames over which track drift is reported, and the error that counts as a wrong positive
#: (one cell of the stride-4 features PiCo samples).
DRIFT_FRAMES = 6
DRIFT_LIMIT_PX = 4.0


def track_drift(experiment: Experiment, clips_url: str) -> dict | None:
    """The flow stage's tracks (its cached output) against the clips' ground-truth flow:
    per k frames tracked, how many (track, start frame) pairs, median, mean and 90th percentile
    drift in px and the share beyond DRIFT_LIMIT_PX; None when the clips carry no truth."""
    store = store_for(experiment)
    tracks_prefix = store.key_of(flow_stage.run(experiment, clips_url).url)
    drifts: dict[int, list[np.ndarray]] = {}
    for split in experiment.flow.splits:
        try:
            samples = read_split(store, store.key_of(clips_url), split, split_by_node=False,
                                 split_by_worker=False, beside=(tracks_prefix,))  # fmt: skip
        except KeyError:  # a split the clips lack
            continue
        for sample in samples:
            if TRACKS_FIELD not in sample:
                continue
            tracks = decode_tracks(sample[TRACKS_FIELD])
            truths = [ground_truth(sample, p) for p in range(tracks.num_frames - 1)]
            found = track_errors(
                tracks, [t.flow for t in truths], [t.flow_valid for t in truths], DRIFT_FRAMES
            )
            for k, errors in found.items():
                drifts.setdefault(k, []).append(errors)
    if not drifts:
        return None
    out = {}
    for k, parts in sorted(drifts.items()):
        errors = np.concatenate(parts)
        out[str(k)] = {
            "pairs": int(errors.size),
            "median_px": round(float(np.median(errors)), 3),
            "mean_px": round(float(errors.mean()), 3),
            "p90_px": round(float(np.percentile(errors, 90)), 3),
            "beyond_4px": round(float(np.mean(errors > DRIFT_LIMIT_PX)), 4),
        }
    return out


def raft_pairs_per_second(
    variant: str,
    weights: str,
    frames: np.ndarray,
    batch_size: int,
    pairs: int,
    device: str = "cuda",
    bare_pairs: int = 40,
    precisions: tuple[str, ...] = ("bf16", "fp32"),
) -> dict:
    """Frame pairs/s of RAFT `variant` at the frames' size: through the estimator (batched,
    numpy in and out) at each of `precisions` (the first is the stage's: bf16 autocast; fp32
    batched separates what batching gives from what the precision gives) and through the bare
    torchvision call (one pair, fp32, tensors already on the device), each after one warm-up
    call."""
    import torch
    from torchvision.models import optical_flow

    from vidssl.flow.estimators import load_raft_weights

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    first, second = frames[:-1], frames[1:]
    count = len(first)
    rates = {}
    for precision in precisions:
        estimator = build_estimator(
            variant, weights, device, batch_size=batch_size, precision=precision
        )
        estimator(first[:batch_size], second[:batch_size])  # warm-up: allocator, kernels
        synchronize()
        started = time.perf_counter()
        done = 0
        while done < pairs:
            estimator(first, second)
            done += count
        rates[precision] = round(done / (time.perf_counter() - started), 1)
        del estimator

    model = getattr(optical_flow, variant)(weights=None, progress=False)
    model.load_state_dict(load_raft_weights(variant, weights))
    model = model.eval().to(device)
    images = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pad_h, pad_w = (-images.shape[2]) % 8, (-images.shape[3]) % 8
    images = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    with torch.inference_mode():
        model(images[:1], images[1:2])
        synchronize()
        started = time.perf_counter()
        for i in range(bare_pairs):
            j = i % count
            model(images[j : j + 1], images[j + 1 : j + 2])
        synchronize()
        bare = bare_pairs / (time.perf_counter() - started)
    ours = rates[precisions[0]]
    return {
        "estimator_pairs_per_second": ours,
        "estimator_precision": precisions[0],
        "estimator_pairs_per_second_by_precision": rates,
        "bare_torchvision_pairs_per_second": round(bare, 1),
        "speedup": round(ours / bare, 2),
        "batching_speedup_fp32": round(rates["fp32"] / bare, 2) if "fp32" in rates else None,
        "batch_size": batch_size,
        "size": list(frames.shape[1:3]),
    }


def raft_line(variant: str, numbers: dict) -> str:
    """One RAFT result as the benchmark prints it."""
    by_precision = ", ".join(
        f"{rate} {precision}"
        for precision, rate in numbers["estimator_pairs_per_second_by_precision"].items()
    )
    height, width = numbers["size"]
    return (
        f"{variant} {height}x{width}, batch {numbers['batch_size']}: {by_precision} pairs/s "
        f"through the estimator vs {numbers['bare_torchvision_pairs_per_second']} bare "
        f"torchvision (one pair, fp32): {numbers['speedup']}x"
    )


def random_raft_weights(variant: str, folder: Path) -> str:
    """A randomly initialised state dict of `variant`, saved for timing only."""
    import torch
    from torchvision.models import optical_flow

    torch.manual_seed(0)
    path = folder / f"{variant}-random.pth"
    torch.save(getattr(optical_flow, variant)(weights=None).state_dict(), path)
    return str(path)


def raft_section(args: argparse.Namespace, clips: list[tuple[dict, np.ndarray]]) -> dict:
    frames = np.concatenate([f for _, f in clips])[: args.raft_frames + 1]
    height, width = RAFT_SIZE
    frames = np.stack(
        [cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in frames]
    )
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant, given in (("raft_large", args.raft_weights),
                               ("raft_small", args.raft_small_weights)):  # fmt: skip
            weights = given or (
                random_raft_weights(variant, Path(folder)) if args.raft_random_weights else ""
            )
            if not weights:
                continue
            results[variant] = raft_pairs_per_second(
                variant, weights, frames, args.raft_batch, args.raft_pairs
            )
            results[variant]["weights"] = given or "random (timing only)"
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos-per-class", type=int, default=2)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cv-threads", type=int, default=None,
        help="OpenCV's threads (cv2.setNumThreads) for the whole run; default: OpenCV's own",
    )  # fmt: skip
    parser.add_argument("--raft-weights", default="", help="local raft_large state dict")
    parser.add_argument("--raft-small-weights", default="", help="local raft_small state dict")
    parser.add_argument(
        "--raft-random-weights", action="store_true",
        help="time RAFT with random weights when no file is given (speed only)",
    )  # fmt: skip
    parser.add_argument("--raft-batch", type=int, default=16)
    parser.add_argument("--raft-frames", type=int, default=32)
    parser.add_argument("--raft-pairs", type=int, default=256)
    args = parser.parse_args(argv)
    os.environ.setdefault("VIDSSL_STORE_URI", "s3://vidssl")
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    experiment = perf_experiment(args.videos_per_class, args.frames, args.width, args.height)
    cfg = experiment.flow
    clips_url = prepared_clips(experiment)
    clips = clips_frames(experiment, clips_url)
    frames = sum(len(f) for _, f in clips)
    estimator = build_estimator(cfg.estimator, cfg.weights, cfg.device)
    bares, stages, details, flows = [], [], {}, []
    for _ in range(args.repeats):  # interleaved, the best of each kept
        timed, flows = bare_rate(estimator, [f for _, f in clips])
        bares.append(timed)
        timed, run_details = stage_rate(experiment, clips_url, frames)
        if not stages or timed.frames_per_second > max(t.frames_per_second for t in stages):
            details = run_details
        stages.append(timed)
    bare = max(t.frames_per_second for t in bares)
    stage = max(t.frames_per_second for t in stages)
    bare_cpu = min(t.cpu_ms_per_frame for t in bares)
    stage_cpu = min(t.cpu_ms_per_frame for t in stages)
    results: dict = {
        "cores": os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(),
        "clips": len(clips),
        "frames": frames,
    }
    share = details["tracking_seconds"] / details["flow_seconds"]
    cpu_share = details["tracking_cpu_seconds"] / details["flow_seconds"]
    results["stage_vs_bare"] = {
        "estimator": cfg.estimator,
        "size": list(clips[0][1].shape[1:3]),
        "stage_frames_per_second": round(stage, 1),
        "bare_frames_per_second": round(bare, 1),
        "ratio": round(stage / bare, 3),
        "target_ratio": 0.9,
        "each_run": [
            [round(b.frames_per_second, 1), round(s.frames_per_second, 1)]
            for b, s in zip(bares, stages, strict=True)
        ],
        "stage_cpu_ms_per_frame": round(stage_cpu, 2),
        "bare_cpu_ms_per_frame": round(bare_cpu, 2),
        "cpu_ratio": round(bare_cpu / stage_cpu, 3),
    }
    results["tracking"] = {
        "share_of_flow_time": round(share, 4),
        "cpu_share_of_flow_time": round(cpu_share, 4),
        "target_share": 0.1,
        "tracks_per_clip": details["tracks_per_clip"],
        "mean_track_length": details["mean_track_length"],
        "starts_per_frame": cfg.tracks.starts_per_frame,
        "stage_seconds": {
            k: details[f"{k}_seconds"]
            for k in ("flow", "tracking", "tracking_cpu", "coding", "decode", "wall")
        },
    }
    results["codec"] = codec_error(flows, cfg.bound, cfg.jpeg_quality)
    results["ground_truth_epe"] = {
        name: ground_truth_epe(clips, name) for name in ("dis", "farneback")
    }
    print(
        f"{cfg.estimator} on {frames} frames {results['stage_vs_bare']['size']} "
        f"({os.cpu_count()} cores, OpenCV threads {cv2.getNumThreads()}): stage {stage:.1f} "
        f"frames/s vs bare estimator {bare:.1f} frames/s: ratio {stage / bare:.2f} "
        f"(target >= 0.9); CPU per frame {stage_cpu:.1f} ms vs {bare_cpu:.1f} ms: "
        f"ratio {bare_cpu / stage_cpu:.2f}"
    )
    print(
        f"tracking: {100 * share:.1f}% of flow time in wall time, {100 * cpu_share:.1f}% in CPU "
        "time (target <= 10%)"
    )
    codec = results["codec"]
    print(
        f"codec (bound {cfg.bound:g} px, quality {cfg.jpeg_quality}): error mean "
        f"{codec['component_error_px_mean']} px, max {codec['component_error_px_max']} px "
        f"(end-point vs unclipped flow: mean {codec['endpoint_error_px_mean']} px)"
    )
    for name, epe in results["ground_truth_epe"].items():
        print(
            f"{name} vs ground truth: "
            + (f"EPE mean {epe['epe_px_mean']} px, median {epe['epe_px_median']} px"
               if epe else "no ground-truth flow in the clips")
        )  # fmt: skip
    tracking = cfg.tracks
    results["track_drift"] = track_drift(experiment, clips_url)
    if results["track_drift"]:
        print(
            f"tracks vs ground truth (alpha {tracking.alpha:g}, beta {tracking.beta:g} px^2), "
            "drift after k frames: "
            + "; ".join(
                f"k={k}: median {d['median_px']} px, p90 {d['p90_px']} px, "
                f"{100 * d['beyond_4px']:.1f}% > 4 px"
                for k, d in results["track_drift"].items()
            )
        )
    import torch

    if torch.cuda.is_available():
        results["raft"] = raft_section(args, clips)
        results["raft"]["device"] = torch.cuda.get_device_name()
        for variant, numbers in results["raft"].items():
            if isinstance(numbers, dict):
                print(raft_line(variant, numbers))
    else:
        print("no GPU on this machine: the RAFT comparison needs one (--raft-weights FILE)")
    save_results("flow", results)
    return results


if __name__ == "__main__":
    main()
