"""Shards: round trip, limits, corrupt and truncated shards, refused keys and schemes,
manifest-last publication, and WebDataset's splitting and resampling."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from vidssl.shards import (
    OutputWriter,
    SampleKeyError,
    ShardReadError,
    decode_json,
    read_manifest,
    read_split,
    verify_output,
)
from vidssl.store import StoreError


def _writer(store, prefix="out/x", **limits):
    return OutputWriter(
        store,
        prefix,
        stage="test",
        stage_version=1,
        digest="d",
        dataset="ds",
        config={},
        inputs=[],
        **limits,
    )


def _sample(i: int) -> dict:
    return {
        "__key__": f"video{i:03d}",
        "meta.json": {"index": i, "category": "c"},
        "f000.jpg": bytes([i % 256]) * (100 + i),
        "emb.npy": np.full(4, i, dtype=np.float16),
    }


def test_round_trip_over_several_shards(store):
    writer = _writer(store, max_samples=3)
    for i in range(10):
        writer.write("train", _sample(i))
    writer.write("val", _sample(99))
    manifest = writer.publish()
    assert [s.samples for s in manifest.splits["train"].shards] == [3, 3, 3, 1]
    assert manifest.splits["train"].shards[0].name == "train/shard-000000.tar"
    assert read_manifest(store, "out/x") == manifest
    samples = list(read_split(store, "out/x", "train"))
    assert [s["__key__"] for s in samples] == [f"video{i:03d}" for i in range(10)]
    for i, sample in enumerate(samples):
        assert decode_json(sample) == {"index": i, "category": "c"}
        assert sample["f000.jpg"] == bytes([i]) * (100 + i)
        assert sample["__url__"].startswith(store.base_url)
    emb = np.load(__import__("io").BytesIO(samples[4]["emb.npy"]))
    assert emb.dtype == np.float16 and emb.tolist() == [4.0] * 4


def test_byte_limit_starts_new_shards(file_store):
    writer = _writer(file_store, max_samples=1000, max_bytes=6000)
    for i in range(10):  # each sample is one 512-byte header + 2048 bytes of data
        writer.write("train", {"__key__": f"k{i}", "blob.bin": b"z" * 2000})
    manifest = writer.publish()
    shards = manifest.splits["train"].shards
    assert len(shards) == 5 and all(s.samples == 2 for s in shards)


def test_identical_input_gives_identical_bytes(file_store):
    digests = []
    for prefix in ("a", "b"):
        writer = _writer(file_store, prefix)
        for i in range(4):
            writer.write("train", _sample(i))
        digests.append([s.sha256 for s in writer.publish().splits["train"].shards])
    assert digests[0] == digests[1]


@pytest.mark.parametrize("key", ["has.dot", "has/slash", ""])
def test_bad_keys_are_refused_at_write_time(file_store, key):
    writer = _writer(file_store)
    with pytest.raises(SampleKeyError):
        writer.write("train", {"__key__": key, "x.bin": b""})


def test_duplicate_keys_are_refused(file_store):
    writer = _writer(file_store)
    writer.write("train", {"__key__": "same", "x.bin": b""})
    with pytest.raises(SampleKeyError, match="twice"):
        writer.write("train", {"__key__": "same", "x.bin": b""})


def _publish_three_shards(store):
    writer = _writer(store, max_samples=2)
    for i in range(6):
        writer.write("train", _sample(i))
    return writer.publish()


def test_truncated_shard_names_url_and_last_good_key(store):
    manifest = _publish_three_shards(store)
    key = "out/x/" + manifest.splits["train"].shards[1].name
    data = store.get(key)
    store.put(key, data[: len(data) // 2 + 100])
    with pytest.raises(ShardReadError) as caught:
        list(read_split(store, "out/x", "train"))
    message = str(caught.value)
    assert store.url(key) in message
    assert "truncated" in message


def test_shard_cut_at_a_member_boundary_is_still_caught(store):
    manifest = _publish_three_shards(store)
    key = "out/x/" + manifest.splits["train"].shards[0].name
    data = store.get(key)
    store.put(key, data[:1536])  # header + 1 block: first member complete, the rest gone
    with pytest.raises(ShardReadError, match="truncated"):
        list(read_split(store, "out/x", "train"))


def test_corrupt_shard_names_url_and_last_good_key(store):
    manifest = _publish_three_shards(store)
    key = "out/x/" + manifest.splits["train"].shards[2].name
    data = bytearray(store.get(key))
    data[1600] ^= 0xFF  # inside video004's f000.jpg: tar still parses, the hash does not match
    store.put(key, bytes(data))
    with pytest.raises(ShardReadError) as caught:
        list(read_split(store, "out/x", "train"))
    message = str(caught.value)
    assert store.url(key) in message and "corrupt" in message
    assert "after sample 'video005'" in message  # the shard's samples streamed before the check


def test_garbage_instead_of_a_tar_is_an_error(store):
    manifest = _publish_three_shards(store)
    key = "out/x/" + manifest.splits["train"].shards[0].name
    store.put(key, b"\x00\xffnot a tar" * 300)
    with pytest.raises(ShardReadError, match="before its first sample"):
        list(read_split(store, "out/x", "train"))


def test_pipe_scheme_is_refused():
    import importlib

    gopen = importlib.import_module("webdataset.gopen")
    with pytest.raises(ValueError, match="pipe: scheme is disabled"):
        gopen.gopen("pipe:echo owned > /tmp/vidssl-pipe-test")


def test_unfinished_output_is_invisible(store):
    writer = _writer(store, max_samples=1)
    for i in range(3):
        writer.write("train", _sample(i))
    writer.split("train").close()  # shards uploaded, manifest never written
    assert len(list(store.list("out/x/"))) == 3
    with pytest.raises(StoreError, match="never finished"):
        read_split(store, "out/x", "train")


def test_writer_killed_between_shards_leaves_no_manifest(s3_store, s3_server):
    script = textwrap.dedent(
        f"""
        import os
        from vidssl.shards import OutputWriter
        from vidssl.store import open_store
        store = open_store("s3://{s3_store.bucket}")
        writer = OutputWriter(store, "killed/out", stage="t", stage_version=1, digest="d",
                              dataset="ds", config={{}}, inputs=[], max_samples=1)
        for i in range(4):
            writer.write("train", {{"__key__": f"k{{i}}", "x.bin": b"data" * 1000}})
        writer.split("train")._wait_pending()
        os._exit(9)  # killed before publish
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    keys = [info.key for info in s3_store.list("killed/out/")]
    assert keys and "killed/out/manifest.json" not in keys
    with pytest.raises(StoreError, match="never finished"):
        read_split(s3_store, "killed/out", "train")


def test_unknown_split_names_the_ones_there(file_store):
    _publish_three_shards(file_store)
    with pytest.raises(KeyError, match="train"):
        read_split(file_store, "out/x", "test")


def test_dataloader_workers_each_read_different_shards(s3_store):
    writer = _writer(s3_store, max_samples=2)
    for i in range(12):
        writer.write("train", _sample(i))
    writer.publish()
    dataset = read_split(s3_store, "out/x", "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    keys = [sample["__key__"] for sample in loader]
    assert Counter(keys) == Counter(f"video{i:03d}" for i in range(12))


def test_shuffled_reading_keeps_every_sample_once(file_store):
    _publish_three_shards(file_store)
    dataset = read_split(
        file_store, "out/x", "train", shuffle_shards=True, shuffle_buffer=4, seed=3
    )
    keys = [s["__key__"] for s in dataset]
    assert sorted(keys) == [f"video{i:03d}" for i in range(6)]
    assert keys != sorted(keys)


def test_resampled_reading_draws_shards_forever(file_store):
    _publish_three_shards(file_store)
    dataset = read_split(file_store, "out/x", "train", resampled=True, seed=1)
    keys = [s["__key__"] for _, s in zip(range(40), dataset, strict=False)]
    assert len(keys) == 40
    assert set(keys) == {f"video{i:03d}" for i in range(6)}


def test_verify_output_rechecks_every_sha256(store):
    manifest = _publish_three_shards(store)
    assert manifest.splits["train"].shards[0].crc32 != 0
    assert verify_output(store, "out/x") == []
    key = "out/x/" + manifest.splits["train"].shards[1].name
    data = bytearray(store.get(key))
    data[1600] ^= 0x01
    store.put(key, bytes(data))
    problems = verify_output(store, "out/x")
    assert problems == [f"{store.url(key)}: sha256 differs from the manifest"]


def test_workers_forked_after_the_parent_read_get_intact_bytes(s3_store):
    """The parent streams shards first (its S3 connections stay open for reuse), then forks
    DataLoader workers that stream at the same time: each must use its own connections."""
    writer = _writer(s3_store, max_samples=3)
    for i in range(12):
        writer.write("train", {**_sample(i), "f000.jpg": bytes([i]) * 300_000})
    writer.publish()
    assert len(list(read_split(s3_store, "out/x", "train"))) == 12  # parent's pool now warm
    dataset = read_split(s3_store, "out/x", "train")
    for _ in range(3):
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        samples = list(loader)  # a ShardReadError (CRC/size mismatch) fails the test
        assert Counter(s["__key__"] for s in samples) == Counter(f"video{i:03d}" for i in range(12))
        assert all(s["f000.jpg"] == bytes([int(s["__key__"][5:])]) * 300_000 for s in samples)


def test_a_forked_child_opens_its_own_s3_client(s3_store):
    parent_client = s3_store.client
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)

    def child() -> None:
        send.send(s3_store.client is parent_client)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert receive.recv() is False
    assert s3_store.client is parent_client  # the parent keeps its own
