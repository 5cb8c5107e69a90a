"""The GPU session's data, prepared in the local S3 store (each stage cached by its digest, so a
second call finds it): the default demo's clips, which perf-train-gpu trains on, and a PiCo
experiment's clips and flow-stage tracks. Run by scripts/gpu-session.sh setup (a file, not
stdin: the stages' worker processes are spawned and re-import the main module)."""

from __future__ import annotations

import argparse
import time

import torch

from vidssl.config import load_experiment
from vidssl.stages.prepare import prepared_clips, prepared_tracks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="siampose_synthetic", help="perf-train-gpu's data")
    parser.add_argument("--pico", default="", metavar="EXP", help="also this one's tracks")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}", flush=True)
    started = time.perf_counter()
    print(f"{args.exp} clips: {prepared_clips(load_experiment(args.exp))}", flush=True)
    if args.pico:
        pico = load_experiment(args.pico)
        print(f"{args.pico} tracks: {prepared_tracks(pico, prepared_clips(pico))}", flush=True)
    print(f"data ready in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
