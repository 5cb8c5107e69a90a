"""The store interface on both backends, its errors against a real S3 server, the retry
policy on a fake clock, and the local server's stop and restart (ports, credentials, env)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from vidssl.store import StoreError, StoreKeyNotFound, open_store, seaweed
from vidssl.store import s3 as s3_module
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
        retry=RetryPolicy(budget_s=0.5, base_delay_s=0.01),
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get("some/key")
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "'bkt'" in message and "'some/key'" in message
    assert "gave up after" in message and "(retry budget 0.5s)" in message
    assert time.monotonic() - started < 5


def test_an_endpoint_never_answered_gets_the_first_contact_budget(monkeypatch):
    """A wrong endpoint fails in seconds despite a long budget; once the endpoint has answered
    in this process, an outage is ridden out for the whole budget; check() stays short."""
    monkeypatch.setattr(s3_module, "FIRST_CONTACT_BUDGET_S", 0.3)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = S3Store("bkt", endpoint, "k", "s", retry=RetryPolicy(budget_s=2, base_delay_s=0.05))

    def seconds_to_fail(call) -> float:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        with pytest.raises(StoreError, match="gave up after"):
            call()
        return time.monotonic() - started

    assert seconds_to_fail(lambda: store.exists("k")) < 1.5
    monkeypatch.setattr(s3_module, "_answered", {endpoint})
    assert 2 <= seconds_to_fail(lambda: store.exists("k")) < 4
    assert seconds_to_fail(store.check) < 1.5


def _quiet_failure(caplog, call, match: str) -> None:  # type: ignore[no-untyped-def]
    """`call` fails with `match` at once: no retry logged, well under one backoff sleep."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError, match=match):
        call()
    assert time.monotonic() - started < 2
    assert not [r for r in caplog.records if "retry budget" in r.getMessage()]


def test_wrong_credentials_say_so_at_once(s3_server, s3_bucket, caplog):
    store = S3Store(s3_bucket, s3_server.endpoint, s3_server.access_key, "wrong-secret")
    _quiet_failure(caplog, lambda: store.put("k", b"v"), r"access refused .*VIDSSL_S3_SECRET_KEY")


def test_missing_bucket_fails_at_once(s3_server, caplog):
    store = S3Store(
        "no-such-bucket", s3_server.endpoint, s3_server.access_key, s3_server.secret_key
    )
    _quiet_failure(caplog, lambda: store.put("k", b"v"), "bucket does not exist")


def test_missing_key_is_not_retried(s3_store, caplog):
    _quiet_failure(caplog, lambda: s3_store.get("absent"), "no such object")


def test_missing_environment_is_named(monkeypatch):
    monkeypatch.delenv("VIDSSL_S3_ENDPOINT", raising=False)
    with pytest.raises(StoreError, match="VIDSSL_S3_ENDPOINT"):
        open_store("s3://bucket")


def test_retry_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VIDSSL_S3_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("VIDSSL_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("VIDSSL_S3_SECRET_KEY", "s")
    monkeypatch.delenv("VIDSSL_S3_RETRY_BUDGET_S", raising=False)
    assert open_store("s3://b").retry.budget_s == 60
    monkeypatch.setenv("VIDSSL_S3_RETRY_BUDGET_S", "7.5")
    assert open_store("s3://b").retry.budget_s == 7.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("VIDSSL_S3_RETRY_BUDGET_S", bad)
        with pytest.raises(StoreError) as caught:
            open_store("s3://b")
        assert "VIDSSL_S3_RETRY_BUDGET_S" in str(caught.value) and "\n" not in str(caught.value)


class FakeTime:
    """A clock that only moves when the policy sleeps (or an attempt is said to take time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _policy(fake: FakeTime, uniform=lambda: 0.5, **kwargs) -> RetryPolicy:  # type: ignore[no-untyped-def]
    return RetryPolicy(clock=fake.clock, sleep=fake.sleep, uniform=uniform, **kwargs)


def test_retry_policy_retries_transient_faults_then_succeeds():
    fake, calls = FakeTime(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientStoreError("connection reset")
        return "ok"

    assert _policy(fake).run(flaky, lambda: "op") == "ok"
    assert len(calls) == 3 and len(fake.sleeps) == 2


def test_retry_policy_gives_up_when_the_budget_is_spent(caplog):
    fake, calls = FakeTime(), []

    def down() -> None:
        calls.append(fake.now)
        fake.now += 0.1  # each refused attempt takes a little time too
        raise TransientStoreError("connection refused")

    policy = _policy(fake, budget_s=30, base_delay_s=0.25, max_delay_s=4)
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as caught:
        policy.run(down, lambda: "S3 x key 'k'")
    message = str(caught.value)
    assert message.startswith("S3 x key 'k': gave up after") and "connection refused" in message
    assert "(retry budget 30s)" in message and "\n" not in message
    # Tried until the budget was spent, the last sleep cut to end on the deadline, not after.
    assert calls[-1] == pytest.approx(100 + 30) and fake.now == pytest.approx(130.1)
    assert f"gave up after {len(calls)} attempts in 30.1s" in message
    # Backoff doubles up to max_delay_s (uniform=0.5: 3/4 of each ceiling).
    assert fake.sleeps[:6] == pytest.approx([0.1875, 0.375, 0.75, 1.5, 3, 3])
    assert max(fake.sleeps) <= 4
    # Each retry logs attempt, time elapsed and budget left.
    first = caplog.records[0].getMessage()
    assert "attempt 1 failed 0.1s in, 29.9s of the 30s retry budget left" in first
    assert len(caplog.records) == len(calls) - 1


def test_retry_policy_jitter_stays_within_half_to_whole_backoff():
    import random

    rng = random.Random(0)
    policy = RetryPolicy(base_delay_s=0.25, max_delay_s=4, uniform=rng.random)
    for attempt in range(1, 12):
        ceiling = min(4, 0.25 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one fixed value
    assert RetryPolicy(uniform=lambda: 0.0).delay(3) == 0.5
    assert RetryPolicy(uniform=lambda: 0.999999).delay(3) == pytest.approx(1.0)
    assert RetryPolicy().delay(10_000) <= 4  # no overflow however long the outage


def test_retry_policy_does_not_retry_permanent_errors():
    fake, calls = FakeTime(), []

    def denied() -> None:
        calls.append(1)
        raise StoreError("access refused")

    with pytest.raises(StoreError, match="access refused"):
        _policy(fake).run(denied, lambda: "op")
    assert len(calls) == 1 and fake.sleeps == []


def test_zero_budget_is_a_single_attempt():
    fake, calls = FakeTime(), []

    def down() -> None:
        calls.append(1)
        raise TransientStoreError("connection refused")

    with pytest.raises(StoreError, match="gave up after 1 attempt in"):
        _policy(fake, budget_s=0).run(down, lambda: "op")
    assert len(calls) == 1 and fake.sleeps == []


def test_stream_refuses_an_object_replaced_between_reconnects(s3_store):
    s3_store.put("replaced", b"a" * 100_000)
    with s3_store.stream("replaced") as stream:
        assert stream.read(10) == b"a" * 10
        s3_store.put("replaced", b"b" * 100_000)
        stream._release()  # as if the connection dropped: the next read re-opens at byte 10
        with pytest.raises(StoreError, match="replaced while it was read"):
            stream.read(10)


def test_stream_resumes_after_a_dropped_connection(s3_store):
    data = os.urandom(5 << 20)
    s3_store.put("resumed", data)
    pieces = []
    with s3_store.stream("resumed") as stream:
        while chunk := stream.read(1 << 20):
            pieces.append(chunk)
            stream._response.close()  # the connection dies after every MiB
    assert b"".join(pieces) == data


def test_file_store_refuses_keys_outside_its_root(file_store):
    with pytest.raises(StoreError, match="escapes"):
        file_store.put("../outside", b"x")


# -- the local server: stop and restart ----------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A SeaweedFS server of this test alone (never restart the session's)."""
    state = tmp_path / "seaweed"
    yield seaweed.start(state)
    seaweed.stop(state)


def test_restart_keeps_ports_credentials_env_and_data(own_server):
    state = own_server.state_dir
    settings, env = (state / "settings.json").read_text(), state / "env"
    env_text, env_mtime = env.read_text(), env.stat().st_mtime_ns
    store = S3Store(
        own_server.bucket, own_server.endpoint, own_server.access_key, own_server.secret_key
    )
    store.put("kept/object", b"still here")
    # Leave connections behind so the old ports hold TIME_WAIT sockets when it starts again.
    for _ in range(3):
        assert store.get("kept/object") == b"still here"

    assert seaweed.stop(state) is not None
    again = seaweed.start(state)
    assert again == own_server
    assert (state / "settings.json").read_text() == settings
    assert env.read_text() == env_text and env.stat().st_mtime_ns == env_mtime
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert store.get("kept/object") == b"still here"  # the old client reconnects as it was


def test_stop_is_graceful_and_quick_after_a_large_read(own_server):
    """After a large GET the volume server of `weed mini` held its shutdown until a connection
    idled out: 30 s, beyond stop's timeout, so stop ended in SIGKILL. A stream left open mid-
    object must not hold it either."""
    store = S3Store(
        own_server.bucket, own_server.endpoint, own_server.access_key, own_server.secret_key
    )
    data = os.urandom(100 << 20)
    store.put("big", data)
    assert store.get("big") == data
    with store.stream("big") as stream:
        stream.read(1000)
        stopped = seaweed.stop(own_server.state_dir)
    assert stopped is not None and not stopped.killed
    assert stopped.seconds < 10
    assert seaweed.stop(own_server.state_dir) is None  # nothing left running


def test_a_port_in_time_wait_counts_as_free():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not seaweed._port_is_free(port)
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its socket goes to TIME_WAIT
        client.close()
    assert seaweed._port_is_free(port)


def test_a_stale_pid_file_never_signals_another_process(tmp_path):
    other = subprocess.Popen(["sleep", "60"])  # alive under the pid, but not our server
    cmdline = Path(f"/proc/{other.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until its exec is done: an empty cmdline counts as a starting server
    try:
        (tmp_path / "weed.pid").write_text(str(other.pid))
        assert seaweed.stop(tmp_path) is None
        assert not (tmp_path / "weed.pid").exists()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
