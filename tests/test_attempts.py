"""Overlapping runs of one output (vidssl.shards.attempts): conditional publication, leases,
and removal of dead attempts only; on both backends."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vidssl.shards import OutputWriter, read_split, verify_output
from vidssl.shards.attempts import (
    Attempt,
    Lease,
    dead_attempts,
    live_attempts,
    publish,
    remove_dead_attempts,
)

PREFIX = "datasets/ds/stage/0123456789abcdef"


def _writer(store, attempt: Attempt) -> OutputWriter:
    return OutputWriter(
        store,
        PREFIX,
        stage="stage",
        stage_version=1,
        digest="0123456789abcdef",
        dataset="ds",
        config={},
        inputs=[],
        max_samples=2,
        attempt=attempt.id,
        objects_dir=attempt.relative_dir,
    )


def _fill(writer: OutputWriter, count: int = 5) -> None:
    for i in range(count):
        writer.write("train", {"__key__": f"s{i}", "x.bin": bytes([i]) * 700})


def test_put_if_absent_lets_exactly_one_writer_in(store):
    assert store.put_if_absent("k/manifest.json", b"first")
    assert not store.put_if_absent("k/manifest.json", b"second")
    assert store.get("k/manifest.json") == b"first"


def test_two_attempts_the_first_to_publish_wins_the_other_leaves_nothing(store):
    with Attempt(store, PREFIX) as first, Attempt(store, PREFIX) as second:
        assert [lease.attempt for lease in live_attempts(store, PREFIX, first.id)] == [second.id]
        writers = [_writer(store, first), _writer(store, second)]
        for writer in writers:
            _fill(writer)
        manifests = [writer.close() for writer in writers]
        # both wrote complete shards, each under its own folder
        assert {s.name.split("/")[1] for m in manifests for s in m.splits["train"].shards} == {
            first.id,
            second.id,
        }
        assert publish(store, PREFIX, manifests[1], replace=False)
        assert not publish(store, PREFIX, manifests[0], replace=False)
        first.discard()
    assert verify_output(store, PREFIX) == []
    assert [s["__key__"] for s in read_split(store, PREFIX, "train")] == [f"s{i}" for i in range(5)]
    keys = [info.key for info in store.list(PREFIX + "/")]
    assert not any(first.id in key for key in keys)  # the loser's shards and lease are gone
    assert not any("/leases/" in key for key in keys)


def test_a_live_attempt_is_never_removed_a_dead_one_is(store, monkeypatch):
    monkeypatch.setenv("VIDSSL_LEASE_TTL_S", "2")
    with Attempt(store, PREFIX) as live:
        _fill(_writer(store, live))
        time.sleep(2.5)  # longer than the TTL: the heartbeat must have kept it alive
        assert dead_attempts(store, PREFIX) == []
        assert remove_dead_attempts(store, PREFIX) == []
    # a dead one: its lease stopped being renewed (a machine that vanished)
    gone = Attempt(store, PREFIX, ttl_s=1)
    gone.renew()
    store.put(f"{gone.prefix}/train/shard-000000.tar", b"orphan")
    assert gone.id not in dead_attempts(store, PREFIX)
    time.sleep(1.2)
    assert gone.id in dead_attempts(store, PREFIX)
    assert live.id in dead_attempts(store, PREFIX)  # ended without publishing, no lease left
    assert sorted(remove_dead_attempts(store, PREFIX)) == sorted([gone.id, live.id])
    assert list(store.list(PREFIX + "/")) == []


def test_an_attempt_killed_on_this_host_is_dead_at_once(store):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lease = Lease(
        attempt="x", host=__import__("socket").gethostname(), pid=child.pid,
        started=time.time(), renewed=time.time(), ttl_s=600,
    )  # fmt: skip
    assert not lease.dead(time.time())
    child.kill()
    child.wait()
    assert lease.dead(time.time())
    elsewhere = lease.model_copy(update={"host": "another-node"})
    assert not elsewhere.dead(time.time())  # there only the expiry can tell


def test_the_published_attempt_is_kept_and_a_forced_run_replaces_it(store):
    with Attempt(store, PREFIX) as first:
        writer = _writer(store, first)
        _fill(writer)
        assert publish(store, PREFIX, writer.close(), replace=False)
    assert remove_dead_attempts(store, PREFIX) == []  # the published one is not dead
    assert verify_output(store, PREFIX) == []
    with Attempt(store, PREFIX) as forced:
        writer = _writer(store, forced)
        _fill(writer, 3)
        assert publish(store, PREFIX, writer.close(), replace=True)
    assert remove_dead_attempts(store, PREFIX) == [first.id]
    assert len(list(read_split(store, PREFIX, "train"))) == 3


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_lease_ttl_is_one_clear_error(monkeypatch, value, file_store):
    from vidssl.store import StoreError

    monkeypatch.setenv("VIDSSL_LEASE_TTL_S", value)
    with pytest.raises(StoreError, match="VIDSSL_LEASE_TTL_S"):
        Attempt(file_store, PREFIX)
