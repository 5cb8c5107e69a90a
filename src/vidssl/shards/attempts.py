"""Runs of one stage output that may overlap: each writes apart, the first to finish publishes.

Two users, a retried KFP task beside a slow one, or a recurring run overlapping the previous one
can all run the same stage on the same inputs, so the same output prefix, at once. Each run is an
*attempt*: it writes its objects under `<output>/attempts/<attempt id>/` and holds a lease,
`<output>/leases/<attempt id>.json`, renewed by a heartbeat thread. The manifest is written last
and only if none exists (a conditional put), so the first attempt to finish publishes and a later
one adopts its output and removes its own objects. Nothing of another attempt is removed unless
that attempt is provably dead: its lease expired (no heartbeat for `ttl_s`), or it ran on this
host and its process is gone (so a re-run after kill -9 on a laptop need not wait for expiry).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from vidssl.shards.manifest import MANIFEST_NAME, Manifest, manifest_key, read_manifest
from vidssl.store import ObjectStore, StoreError, StoreKeyNotFound

log = logging.getLogger(__name__)

ATTEMPTS_DIR = "attempts"
LEASES_DIR = "leases"
#: Seconds without a heartbeat after which an attempt counts as dead.
LEASE_TTL_ENV = "VIDSSL_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 120.0


def lease_ttl_s() -> float:
    text = os.environ.get(LEASE_TTL_ENV, "")
    if not text:
        return DEFAULT_LEASE_TTL_S
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if not ttl > 0:
        raise StoreError(f"{LEASE_TTL_ENV}={text!r}: expected a positive number of seconds")
    return ttl


def new_attempt_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


class Lease(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: str
    host: str
    pid: int
    started: float
    renewed: float
    ttl_s: float

    def dead(self, now: float) -> bool:
        if now > self.renewed + self.ttl_s:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _lease_key(output_prefix: str, attempt: str) -> str:
    return f"{output_prefix}/{LEASES_DIR}/{attempt}.json"


class Attempt:
    """One run's claim on an output prefix: its own folder and a lease kept alive by a thread.

    Use as a context manager; leaving it stops the heartbeat and drops the lease (the attempt's
    objects stay: published ones are the output's, others are removed by `discard`)."""

    def __init__(self, store: ObjectStore, output_prefix: str, ttl_s: float | None = None) -> None:
        self.store = store
        self.output_prefix = output_prefix
        self.id = new_attempt_id()
        self.ttl_s = ttl_s or lease_ttl_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = time.time()
        self._lease = Lease(
            attempt=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=now,
            renewed=now,
            ttl_s=self.ttl_s,
        )

    @property
    def relative_dir(self) -> str:
        """This attempt's folder relative to the output prefix (manifest shard names use it)."""
        return f"{ATTEMPTS_DIR}/{self.id}"

    @property
    def prefix(self) -> str:
        return attempt_prefix(self.output_prefix, self.id)

    def renew(self) -> None:
        self._lease = self._lease.model_copy(update={"renewed": time.time()})
        self.store.put_text(
            _lease_key(self.output_prefix, self.id), self._lease.model_dump_json(indent=2)
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except StoreError as exc:  # the store may be restarting: keep trying until the end
                log.warning("attempt %s: lease not renewed: %s", self.id, exc)

    def __enter__(self) -> Attempt:
        self.renew()  # before any object of the attempt exists (see `remove_dead_attempts`)
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"lease-{self.id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store.delete(_lease_key(self.output_prefix, self.id))
        except StoreError as exc:  # it expires on its own
            log.warning("attempt %s: lease not removed: %s", self.id, exc)

    def publish(self, manifest: Manifest, *, replace: bool) -> Manifest | None:
        """Publish this attempt's output (see `publish`); None when it is the output now, else
        the manifest another attempt published first (this attempt's objects are removed)."""
        if publish(self.store, self.output_prefix, manifest, replace=replace):
            return None
        self.discard()
        return read_manifest(self.store, self.output_prefix)

    def discard(self) -> int:
        """Remove this attempt's objects (it failed, or another attempt published first)."""
        return self.store.delete_prefix(self.prefix + "/")


def _attempt_of_key(output_prefix: str, key: str) -> str | None:
    rest = key[len(output_prefix) + 1 :]
    folder, _, remainder = rest.partition("/")
    if folder != ATTEMPTS_DIR:
        return None
    attempt, _, _ = remainder.partition("/")
    return attempt or None


def _leases(store: ObjectStore, output_prefix: str) -> dict[str, Lease | None]:
    """Every lease under the output; None for one that cannot be read (counted as dead)."""
    found: dict[str, Lease | None] = {}
    for info in store.list(f"{output_prefix}/{LEASES_DIR}/"):
        attempt = info.key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            found[attempt] = Lease.model_validate_json(store.get_text(info.key))
        except StoreKeyNotFound:  # ended while we listed
            continue
        except ValidationError:
            found[attempt] = None
    return found


def published_attempt(manifest: Manifest | None) -> str | None:
    return manifest.attempt if manifest is not None and manifest.attempt else None


def dead_attempts(
    store: ObjectStore, output_prefix: str, keep: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Attempts on this output that are provably dead and not published, oldest first.

    Listed in this order so that no live attempt is taken for dead: an attempt's lease is
    written before its first object, so every attempt seen in the first listing either still
    has its lease in the second, or has ended; an ended one published (the manifest, read last,
    names it) or removed its own objects."""
    attempts = {
        attempt
        for info in store.list(f"{output_prefix}/{ATTEMPTS_DIR}/")
        if (attempt := _attempt_of_key(output_prefix, info.key))
    }
    leases = _leases(store, output_prefix)
    try:
        published = Manifest.model_validate_json(
            store.get_text(manifest_key(output_prefix))
        ).attempt
    except StoreKeyNotFound:
        published = None
    now = time.time()
    return [
        attempt
        for attempt in sorted((attempts | set(leases)) - set(keep) - {published})
        if (lease := leases.get(attempt)) is None or lease.dead(now)
    ]


def remove_dead_attempts(
    store: ObjectStore, output_prefix: str, keep: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Remove the objects and leases of `dead_attempts`, and objects an unfinished run of a
    version from before attempts left at the top of the output; returns the attempts removed."""
    dead = dead_attempts(store, output_prefix, keep)
    for attempt in dead:
        removed = store.delete_prefix(f"{attempt_prefix(output_prefix, attempt)}/")
        store.delete(_lease_key(output_prefix, attempt))
        log.info(
            "removed %d objects of dead attempt %s at %s",
            removed,
            attempt,
            store.url(output_prefix),
        )
    _remove_unpublished_top_level(store, output_prefix)
    return dead


def _remove_unpublished_top_level(store: ObjectStore, output_prefix: str) -> None:
    """Objects beside `attempts/` and `leases/` were written by versions before attempts; with
    no manifest, or one published by an attempt, nothing reads them."""
    try:
        if not Manifest.model_validate_json(store.get_text(manifest_key(output_prefix))).attempt:
            return  # published before attempts: those objects are the output
    except StoreKeyNotFound:
        pass
    top_level = [
        info.key
        for info in store.list(f"{output_prefix}/")
        if info.key.removeprefix(f"{output_prefix}/").partition("/")[0]
        not in (ATTEMPTS_DIR, LEASES_DIR, MANIFEST_NAME)
    ]
    for key in top_level:
        store.delete(key)
    if top_level:
        log.info("removed %d objects an unfinished run left at %s", len(top_level), output_prefix)


def attempt_prefix(output_prefix: str, attempt: str) -> str:
    return f"{output_prefix}/{ATTEMPTS_DIR}/{attempt}"


def live_attempts(store: ObjectStore, output_prefix: str, mine: str) -> list[Lease]:
    """Other attempts on this output that are still running (for a log line)."""
    now = time.time()
    return [
        lease
        for attempt, lease in _leases(store, output_prefix).items()
        if attempt != mine and lease is not None and not lease.dead(now)
    ]


def publish(store: ObjectStore, output_prefix: str, manifest: Manifest, *, replace: bool) -> bool:
    """Write the manifest unless one exists (or over it with `replace`); True if ours is there.

    The conditional put is the commit point: of attempts finishing together exactly one wins."""
    text = manifest.model_dump_json(indent=2)
    key = manifest_key(output_prefix)
    if replace:
        store.put_text(key, text)
        return True
    if store.put_if_absent(key, text.encode("utf-8")):
        return True
    # Refused: another attempt published, or ours did and the reply was lost (a retried PUT).
    return Manifest.model_validate_json(store.get_text(key)).attempt == manifest.attempt
