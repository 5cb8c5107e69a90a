"""`make perf-flow`'s RAFT timing (vidssl.perf.flow) run on the CPU with tiny frames: the
driver's plumbing only (every precision timed, the bare torchvision call, the printed line).
Its numbers mean nothing here; the GPU's are in the issue notes."""

from __future__ import annotations

import numpy as np
import torch

from vidssl.perf.flow import raft_line, raft_pairs_per_second, random_raft_weights


def test_raft_timing_reports_each_precision_next_to_bare_torchvision(tmp_path):
    torch.set_num_threads(1)
    weights = random_raft_weights("raft_small", tmp_path)
    frames = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    numbers = raft_pairs_per_second(
        "raft_small", weights, frames, batch_size=2, pairs=2, device="cpu", bare_pairs=2
    )
    rates = numbers["estimator_pairs_per_second_by_precision"]
    assert set(rates) == {"bf16", "fp32"} and all(rate > 0 for rate in rates.values())
    assert numbers["estimator_precision"] == "bf16"
    assert numbers["estimator_pairs_per_second"] == rates["bf16"]
    bare = numbers["bare_torchvision_pairs_per_second"]
    assert bare > 0
    assert abs(numbers["speedup"] - rates["bf16"] / bare) <= 0.01 + 0.01 * numbers["speedup"]
    assert (
        abs(numbers["batching_speedup_fp32"] - rates["fp32"] / bare)
        <= 0.01 + 0.01 * rates["fp32"] / bare
    )
    assert numbers["size"] == [128, 128] and numbers["batch_size"] == 2
    line = raft_line("raft_small", numbers)
    assert line.startswith("raft_small 128x128, batch 2: ")
    assert f"{rates['fp32']} fp32" in line and f"{bare} bare torchvision" in line
