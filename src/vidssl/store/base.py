"""The object-store interface every stage uses, its errors, and retries bounded by time.

Two backends implement it: S3 through the minio SDK (`vidssl.store.s3`) and plain files
(`vidssl.store.local`). Keys are `/`-separated paths inside one bucket (or root folder).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO, TypeVar

from vidssl.errors import VidsslError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(VidsslError, RuntimeError):
    """A store operation failed for good; the message names endpoint, bucket and key."""


class StoreKeyNotFound(StoreError):
    """The object does not exist."""


class TransientStoreError(StoreError):
    """A fault worth retrying: connection refused or reset, timeout, 5xx."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


#: Seconds one store operation keeps retrying transient faults before it fails: long enough to
#: ride out a restart of the store under a running stage (a local `store down` + `store up`
#: takes about 5 s, a rescheduled server pod tens of seconds). `VIDSSL_S3_RETRY_BUDGET_S`
#: overrides it (see `vidssl.store`).
DEFAULT_RETRY_BUDGET_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by a time budget rather than an attempt count.

    Only `TransientStoreError` (connection refused or reset, timeout, 5xx) is retried; any other
    StoreError (wrong credentials, missing bucket or key) reaches the caller at once, since
    waiting cannot fix it. A count of attempts says nothing about time: four quick refusals
    used to end an operation 1.75 s into a store restart. A budget says how long an outage the
    caller rides out, whatever the faults look like.

    The sleep after failed attempt n is drawn from [d/2, d], d = min(max_delay_s,
    base_delay_s * 2**(n-1)): backing off spares a server that is coming up, and the jitter
    keeps a stage's many clients (ingest and DataLoader workers) from retrying in lockstep when
    it is back. The budget is checked between attempts, so an operation ends at most one
    attempt (bounded by the client's timeouts) after it runs out; the last sleep is cut short so
    that one more try happens at the deadline. `budget_s=0` is a single attempt, no retries.
    `clock`, `sleep` and `uniform` (a draw from [0, 1)) are there for tests.
    """

    budget_s: float = DEFAULT_RETRY_BUDGET_S
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    uniform: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def with_budget(self, budget_s: float) -> RetryPolicy:
        return replace(self, budget_s=budget_s)

    def delay(self, attempt: int) -> float:
        """The jittered sleep after failed attempt `attempt` (1-based), before the budget cut."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt - 1, 32))
        return ceiling * (0.5 + 0.5 * self.uniform())

    def run(self, operation: Callable[[], T], describe: Callable[[], str]) -> T:
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation()
            except TransientStoreError as exc:
                elapsed = self.clock() - started
                left = self.budget_s - elapsed
                if left <= 0:
                    raise StoreError(
                        f"{describe()}: gave up after {attempt} attempt"
                        f"{'s' if attempt > 1 else ''} in {elapsed:.1f}s "
                        f"(retry budget {self.budget_s:g}s): {exc}"
                    ) from None
                delay = min(self.delay(attempt), left)
                log.warning(
                    "%s: %s; attempt %d failed %.1fs in, %.1fs of the %gs retry budget left; "
                    "retrying in %.2fs",
                    describe(),
                    exc,
                    attempt,
                    elapsed,
                    left,
                    self.budget_s,
                    delay,
                )
                self.sleep(delay)


class StoreTraffic:
    """Bytes this process has read from and written to object stores since it started: two
    running totals every backend adds to (whole objects put and got, stream reads), for the
    monitoring (`vidssl.metrics`). Reads in other processes (DataLoader workers) are counted
    there, not here. The lock keeps the upload threads' additions from being lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.read_bytes = 0
        self.written_bytes = 0

    def count_read(self, size: int) -> None:
        with self._lock:
            self.read_bytes += size

    def count_written(self, size: int) -> None:
        with self._lock:
            self.written_bytes += size

    def totals(self) -> tuple[int, int]:
        """(bytes read, bytes written) so far."""
        with self._lock:
            return self.read_bytes, self.written_bytes


#: The process's store traffic, counted by every backend.
STORE_TRAFFIC = StoreTraffic()


class ObjectStore(ABC):
    """put / get / stream / list / exists / delete over one bucket."""

    #: `s3://bucket` or `file:///absolute/root`; `url(key)` appends the key.
    base_url: str

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def key_of(self, url: str) -> str:
        """The key of an object URL of this store (the inverse of `url`)."""
        if not url.startswith(self.base_url + "/"):
            raise StoreError(f"{url!r} is not in store {self.base_url}")
        return url[len(self.base_url) + 1 :]

    def check(self) -> None:
        """Fail with one clear line if the store cannot be used (unreachable, refused)."""
        self.exists(".vidssl-check")

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write `data` at `key`, replacing what was there; readers never see a partial object."""

    @abstractmethod
    def put_file(self, key: str, path: str) -> None:
        """Upload a local file (multipart for large ones)."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if no object is there (atomically); False if one was."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; StoreKeyNotFound when absent."""

    @abstractmethod
    def stream(self, key: str) -> BinaryIO:
        """A readable stream over the object, fetched as it is read."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, recursively, sorted by key."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; absent objects are not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many were removed."""
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def get_text(self, key: str) -> str:
        return self.get(key).decode("utf-8")

    def put_text(self, key: str, text: str) -> None:
        self.put(key, text.encode("utf-8"))
