"""`make perf-store`: shard write/read throughput against the S3 server, next to raw minio
put_object/get_object of the same bytes in the same run, and the reader's peak memory for
outputs of different shard counts (it streams, so the peak should not grow with them).

It also measures what the retry budget costs a healthy run: the same shard write and read with
no retries (one attempt, the floor of the old bounded retries) and with the default budget
(`vidssl.store.base.DEFAULT_RETRY_BUDGET_S`), in alternating order within each repeat. Without
faults nothing is retried, so the two should match: the budget only changes how long a failing
call waits, never a call that succeeds.
"""

from __future__ import annotations

import argparse
import copy
import io
import time
import tracemalloc
import uuid

from vidssl.perf import save_results
from vidssl.shards import OutputWriter, read_split
from vidssl.store import open_store
from vidssl.store.base import RetryPolicy
from vidssl.store.s3 import S3Store

MB = 1 << 20


def _samples(count: int, sample_bytes: int, seed: int = 0):
    """Clip-like samples: a small JSON and a few incompressible 'frames'."""
    rng = __import__("numpy").random.default_rng(seed)
    frames = 4
    for i in range(count):
        sample = {
            "__key__": f"clip{i:07d}",
            "meta.json": {"video_id": f"v{i}", "num_frames": frames},
        }
        for f in range(frames):
            sample[f"f{f:03d}.jpg"] = rng.bytes(sample_bytes // frames)
        yield sample


def _writer(store, prefix: str, shard_bytes: int) -> OutputWriter:
    return OutputWriter(
        store,
        prefix,
        stage="perf",
        stage_version=1,
        digest="perf",
        dataset="perf",
        config={},
        inputs=[],
        max_samples=1_000_000,
        max_bytes=shard_bytes,
    )


def timed_write(store: S3Store, prefix: str, count: int, sample_bytes: int, shard_bytes: int):
    samples = list(_samples(count, sample_bytes))
    started = time.perf_counter()
    writer = _writer(store, prefix, shard_bytes)
    for sample in samples:
        writer.write("train", sample)
    manifest = writer.publish()
    seconds = time.perf_counter() - started
    return manifest, seconds


def timed_raw_put(store: S3Store, prefix: str, blobs: list[bytes]) -> float:
    started = time.perf_counter()
    for i, blob in enumerate(blobs):
        store.client.put_object(
            bucket_name=store.bucket,
            object_name=f"{prefix}/raw-{i:06d}",
            data=io.BytesIO(blob),
            length=len(blob),
            part_size=16 * MB,
        )
    return time.perf_counter() - started


def timed_read(store: S3Store, prefix: str) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(
        1 for _ in read_split(store, prefix, "train", split_by_node=False, split_by_worker=False)
    )
    return count, time.perf_counter() - started


def timed_raw_get(store: S3Store, prefix: str, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        response = store.client.get_object(
            bucket_name=store.bucket, object_name=f"{prefix}/raw-{i:06d}"
        )
        while response.read(1 << 20):
            pass
        response.close()
        response.release_conn()
    return time.perf_counter() - started


def with_retry(store: S3Store, retry: RetryPolicy) -> S3Store:
    """The same client (and connection pool) under another retry policy."""
    other = copy.copy(store)
    other.retry = retry
    return other


def reader_peak_memory(store: S3Store, prefix: str) -> float:
    """Peak Python heap (MB) while streaming every sample of the output at `prefix`."""
    tracemalloc.start()
    for _ in read_split(store, prefix, "train", split_by_node=False, split_by_worker=False):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MB


def _write_read(
    store: S3Store, prefix: str, count: int, args: argparse.Namespace, read_s: list[float]
) -> float:
    """Shard write then verified read of `count` samples; the write's seconds (read's appended)."""
    _, write_seconds = timed_write(store, prefix, count, args.sample_kb * 1024, args.shard_mb * MB)
    n, read_seconds = timed_read(store, prefix)
    assert n == count
    read_s.append(read_seconds)
    return write_seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", default="vidssl")
    parser.add_argument("--total-mb", type=int, default=512, help="bytes written per measurement")
    parser.add_argument("--sample-kb", type=int, default=400, help="bytes per sample")
    parser.add_argument("--shard-mb", type=int, default=64, help="shard size")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)

    store = open_store(f"s3://{args.bucket}")
    assert isinstance(store, S3Store), "perf-store measures the S3 backend"
    run = f"perf/store/{uuid.uuid4().hex[:8]}"
    sample_bytes = args.sample_kb * 1024
    count = args.total_mb * MB // sample_bytes
    results: dict = {"samples": count, "sample_bytes": sample_bytes, "shard_mb": args.shard_mb}
    no_retry = with_retry(store, RetryPolicy(budget_s=0))
    try:
        write_s, put_s, read_s, get_s = [], [], [], []
        bare_write_s, bare_read_s = [], []

        def without_retries(repeat: int) -> None:
            prefix = f"{run}/n{repeat}"
            bare_write_s.append(_write_read(no_retry, prefix, count, args, bare_read_s))

        for repeat in range(args.repeats):
            prefix = f"{run}/w{repeat}"
            # The two policies take turns at going first, so drift favours neither.
            if repeat % 2:
                without_retries(repeat)
            manifest, seconds = timed_write(store, prefix, count, sample_bytes, args.shard_mb * MB)
            write_s.append(seconds)
            shard_keys = [f"{prefix}/{s.name}" for s in manifest.splits["train"].shards]
            blobs = [store.get(key) for key in shard_keys]
            put_s.append(timed_raw_put(store, f"{run}/raw{repeat}", blobs))
            n, seconds = timed_read(store, prefix)
            assert n == count
            read_s.append(seconds)
            get_s.append(timed_raw_get(store, f"{run}/raw{repeat}", len(blobs)))
            if not repeat % 2:
                without_retries(repeat)
        total_mb = sum(len(b) for b in blobs) / MB
        timings = dict(
            write=write_s,
            put=put_s,
            read=read_s,
            get=get_s,
            bare_write=bare_write_s,
            bare_read=bare_read_s,
        )
        best = {k: min(v) for k, v in timings.items()}
        results.update(
            shards=len(blobs),
            shard_bytes_total_mb=round(total_mb, 1),
            shard_write_mb_s=round(total_mb / best["write"], 1),
            shard_write_samples_s=round(count / best["write"], 1),
            raw_put_mb_s=round(total_mb / best["put"], 1),
            shard_read_mb_s=round(total_mb / best["read"], 1),
            shard_read_samples_s=round(count / best["read"], 1),
            raw_get_mb_s=round(total_mb / best["get"], 1),
        )
        results["write_ratio"] = round(results["shard_write_mb_s"] / results["raw_put_mb_s"], 2)
        results["read_ratio"] = round(results["shard_read_mb_s"] / results["raw_get_mb_s"], 2)
        results["retry_budget_s"] = store.retry.budget_s
        results["no_retry_write_mb_s"] = round(total_mb / best["bare_write"], 1)
        results["no_retry_read_mb_s"] = round(total_mb / best["bare_read"], 1)

        # Reader memory: same shard size, 4x more shards.
        peaks = {}
        small_shard = 8 * MB
        for shards in (4, 16):
            prefix = f"{run}/mem{shards}"
            n = shards * small_shard // sample_bytes
            timed_write(store, prefix, n, sample_bytes, small_shard)
            peaks[shards] = round(reader_peak_memory(store, prefix), 1)
        results["reader_peak_mb_by_shards"] = peaks
    finally:
        store.delete_prefix(run + "/")

    print(
        f"perf-store: {count} samples of {args.sample_kb} KiB, {results['shards']} shards of "
        f"~{args.shard_mb} MiB, against {store.endpoint} (best of {args.repeats})"
    )
    print(f"{'':24}{'MB/s':>10}{'samples/s':>12}{'raw minio MB/s':>16}{'ratio':>8}")
    print(
        f"{'shard write':24}{results['shard_write_mb_s']:>10}{results['shard_write_samples_s']:>12}"
        f"{results['raw_put_mb_s']:>16}{results['write_ratio']:>8}"
    )
    read_row = f"{'shard read (verified)':24}{results['shard_read_mb_s']:>10}"
    print(
        f"{read_row}{results['shard_read_samples_s']:>12}{results['raw_get_mb_s']:>16}"
        f"{results['read_ratio']:>8}"
    )
    print(f"{'healthy run, retries':24}{'write MB/s':>12}{'read MB/s':>12}")
    print(
        f"{'none (before)':24}{results['no_retry_write_mb_s']:>12}"
        f"{results['no_retry_read_mb_s']:>12}"
    )
    budget_row = f"{results['retry_budget_s']:g} s budget (after)"
    print(f"{budget_row:24}{results['shard_write_mb_s']:>12}{results['shard_read_mb_s']:>12}")
    print(
        "reader peak Python heap by shard count: "
        + ", ".join(f"{k} shards: {v} MB" for k, v in peaks.items())
    )
    save_results("store", results)
    return results


if __name__ == "__main__":
    main()
