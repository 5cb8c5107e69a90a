"""`make perf-eval`: box-fitting queries/s; kNN queries/s over 100k 2048-d fp16 embeddings
through the benchmarks' chunked search next to a bare numpy matmul + argpartition, in the same
run, with the peak memory of each."""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from vidssl.evaluate.boxfit import FrameGeometry, fit_box, scene_frame
from vidssl.evaluate.iou3d import iou
from vidssl.evaluate.metrics import nearest_neighbours
from vidssl.perf import save_results


def random_frame(rng: np.random.Generator) -> FrameGeometry:
    azimuth, elevation, distance = rng.uniform(0, 6.28), rng.uniform(0.3, 0.8), rng.uniform(1, 2)
    eye = distance * np.array(
        [
            np.cos(elevation) * np.cos(azimuth),
            np.sin(elevation),
            np.cos(elevation) * np.sin(azimuth),
        ]
    )
    return scene_frame(eye, rng.uniform(0.1, 0.6, 3), rng.uniform(0, 6.28))


def box_fitting_rate(queries: int) -> float:
    rng = np.random.default_rng(0)
    frames = [random_frame(rng) for _ in range(2 * queries)]
    started = time.perf_counter()
    for query, reference in zip(frames[::2], frames[1::2], strict=True):
        iou(query.box, fit_box(query, reference))
    return queries / (time.perf_counter() - started)


def _peak_mb(run) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def knn_rates(bank_size: int, dimension: int, queries: int) -> dict:
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((bank_size, dimension), dtype=np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    # Stored as fp16 (export), loaded as fp32 (bench.load_split): both searches get that.
    bank = bank.astype(np.float16).astype(np.float32)
    query = bank[rng.integers(0, bank_size, queries)] + 0.01

    def chunked() -> None:
        for _ in nearest_neighbours(query, bank, k=1, chunk=256):
            pass

    def bare() -> None:
        similarity = query @ bank.T  # the whole matrix at once
        np.argpartition(-similarity, 1, axis=1)[:, :1]

    chunked_s, chunked_mb = _peak_mb(chunked)
    bare_s, bare_mb = _peak_mb(bare)
    return {
        "bank": bank_size,
        "dimension": dimension,
        "queries": queries,
        "chunked_queries_per_s": round(queries / chunked_s, 1),
        "chunked_peak_mb": round(chunked_mb, 1),
        "bare_numpy_queries_per_s": round(queries / bare_s, 1),
        "bare_numpy_peak_mb": round(bare_mb, 1),
        "slowdown": round(chunked_s / bare_s, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", type=int, default=2000)
    parser.add_argument("--bank", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args(argv)
    results = {"cores": os.cpu_count(), "box_fits_per_s": round(box_fitting_rate(args.fits), 1)}
    results["knn"] = knn_rates(args.bank, 2048, args.queries)
    knn = results["knn"]
    fits = results["box_fits_per_s"]
    print(f"box fitting + exact 3D IoU: {fits} queries/s on {os.cpu_count()} cores")
    print(
        f"kNN over {knn['bank']} x {knn['dimension']} (fp16-stored): chunked "
        f"{knn['chunked_queries_per_s']} q/s (peak {knn['chunked_peak_mb']} MB) vs bare numpy "
        f"matmul + argpartition {knn['bare_numpy_queries_per_s']} q/s "
        f"(peak {knn['bare_numpy_peak_mb']} MB): {knn['slowdown']}x the bare time"
    )
    save_results("eval", results)
    return results


if __name__ == "__main__":
    main()
