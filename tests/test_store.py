"""The store interface on both backends, and its errors against a real S3 server."""

from __future__ import annotations

import os
import socket
import time

import pytest

from vidssl.store import StoreError, StoreKeyNotFound, open_store
from vidssl.store.base import RetryPolicy, TransientStoreError
from vidssl.store.s3 import MULTIPART_PART_BYTES, S3Store


def test_put_get_list_exists_delete(store):
    store.put("a/b/one.bin", b"first")
    store.put_text("a/b/two.txt", "second")
    store.put("a/c.bin", b"x" * 10)
    store.put("other/d.bin", b"d")
    assert store.get("a/b/one.bin") == b"first"
    assert store.get_text("a/b/two.txt") == "second"
    assert [(i.key, i.size) for i in store.list("a/")] == [
        ("a/b/one.bin", 5),
        ("a/b/two.txt", 6),
        ("a/c.bin", 10),
    ]
    assert store.exists("a/c.bin")
    assert not store.exists("a/missing")
    store.put("a/c.bin", b"replaced")
    assert store.get("a/c.bin") == b"replaced"
    store.delete("a/c.bin")
    store.delete("a/c.bin")  # deleting twice is fine
    assert not store.exists("a/c.bin")
    assert store.delete_prefix("a/") == 2
    assert list(store.list("a/")) == []
    assert [i.key for i in store.list("")] == ["other/d.bin"]


def test_missing_key_names_the_key(store):
    with pytest.raises(StoreKeyNotFound, match="nothing/here"):
        store.get("nothing/here")


def test_stream_reads_in_pieces(store):
    data = os.urandom(3 << 20)
    store.put("big/blob", data)
    with store.stream("big/blob") as stream:
        pieces = []
        while chunk := stream.read(123_457):
            pieces.append(chunk)
    assert b"".join(pieces) == data


def test_url_and_key_of_are_inverse(store):
    url = store.url("x/y.tar")
    assert store.key_of(url) == "x/y.tar"
    with pytest.raises(StoreError):
        store.key_of("s3://elsewhere/x/y.tar")


def test_large_objects_go_up_in_parts(s3_store, tmp_path):
    data = os.urandom(2 * MULTIPART_PART_BYTES + 12345)
    s3_store.put("multi/part.bin", data)
    assert s3_store.get("multi/part.bin") == data
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    s3_store.put_file("multi/file.bin", str(path))
    with s3_store.stream("multi/file.bin") as stream:
        assert stream.read() == data
    # The server saw a multipart upload: its ETag is "<md5>-<parts>".
    etag = s3_store.client.stat_object(
        bucket_name=s3_store.bucket, object_name="multi/part.bin"
    ).etag
    assert etag.endswith("-3")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_one_line_naming_endpoint_bucket_key():
    port = _closed_port()
    store = S3Store(
        "bkt",
        f"http://127.0.0.1:{port}",
        "k",
        "s",
        retry=RetryPolicy(attempts=3, base_delay_s=0.01),
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get("some/key")
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "'bkt'" in message and "'some/key'" in message
    assert "gave up after 3 attempts" in message
    assert time.monotonic() - started < 5


def test_wrong_credentials_say_so(s3_server, s3_bucket):
    store = S3Store(s3_bucket, s3_server.endpoint, s3_server.access_key, "wrong-secret")
    with pytest.raises(StoreError, match=r"access refused .*VIDSSL_S3_SECRET_KEY"):
        store.put("k", b"v")


def test_missing_environment_is_named(monkeypatch):
    monkeypatch.delenv("VIDSSL_S3_ENDPOINT", raising=False)
    with pytest.raises(StoreError, match="VIDSSL_S3_ENDPOINT"):
        open_store("s3://bucket")


def test_retry_policy_retries_transient_faults_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientStoreError("connection reset")
        return "ok"

    assert RetryPolicy(attempts=4, base_delay_s=0.001).run(flaky, lambda: "op") == "ok"
    assert len(calls) == 3


def test_retry_policy_does_not_retry_permanent_errors():
    calls = []

    def denied():
        calls.append(1)
        raise StoreError("access refused")

    with pytest.raises(StoreError, match="access refused"):
        RetryPolicy(attempts=4, base_delay_s=0.001).run(denied, lambda: "op")
    assert len(calls) == 1


def test_file_store_refuses_keys_outside_its_root(file_store):
    with pytest.raises(StoreError, match="escapes"):
        file_store.put("../outside", b"x")
