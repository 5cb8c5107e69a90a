"""The object-store interface every stage uses, its errors, and bounded retries.

Two backends implement it: S3 through the minio SDK (`vidssl.store.s3`) and plain files
(`vidssl.store.local`). Keys are `/`-separated paths inside one bucket (or root folder).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(RuntimeError):
    """A store operation failed for good; the message names endpoint, bucket and key."""


class StoreKeyNotFound(StoreError):
    """The object does not exist."""


class TransientStoreError(StoreError):
    """A fault worth retrying: connection refused or reset, timeout, 5xx."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: `attempts` tries, sleeping base, 2*base, ... between them."""

    attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0

    def run(self, operation: Callable[[], T], describe: Callable[[], str]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except TransientStoreError as exc:
                if attempt == self.attempts:
                    raise StoreError(
                        f"{describe()}: gave up after {attempt} attempts: {exc}"
                    ) from None
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
                log.warning("%s: %s; retrying in %.2fs", describe(), exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


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
