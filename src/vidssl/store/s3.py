"""S3 backend through the minio SDK: SeaweedFS locally, any S3/MinIO endpoint on a cluster.

urllib3's own retries are switched off so that `RetryPolicy` is the one place that decides how
long to try. Its budget (60 s unless VIDSSL_S3_RETRY_BUDGET_S says otherwise) lets a running
stage ride out a restart of the store, streams included: `stream()` re-opens at the byte it
reached. An endpoint that has never answered in this process gets only FIRST_CONTACT_BUDGET_S,
so a wrong endpoint still fails in seconds with one line, not a stack.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, NoReturn, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from vidssl.store.base import (
    STORE_TRAFFIC,
    ObjectInfo,
    ObjectStore,
    RetryPolicy,
    StoreError,
    StoreKeyNotFound,
    TransientStoreError,
)

T = TypeVar("T")

#: Objects larger than one part are uploaded in parts of this size (S3's minimum is 5 MiB).
MULTIPART_PART_BYTES = 16 * 1024 * 1024

#: The retry budget (seconds) of a call to an endpoint that has not answered yet in this
#: process, and of `check()`. Until the server has answered once, a refused connection more
#: likely means a wrong endpoint or a server that is not up than a restart: fail in seconds. It
#: still covers a quick `store down` + `store up` (about 5 s) between two stages.
FIRST_CONTACT_BUDGET_S = 10.0

_TRANSIENT_S3_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_CREDENTIAL_S3_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)

#: Endpoints that have answered a request in this process. Forked workers (ingest's pool,
#: DataLoader workers) inherit it, so a restart that starts while they open their own store
#: still gets the full budget.
_answered: set[str] = set()


def _reason(exc: BaseException) -> str:
    """`Type: reason` of a connection error, without what the message names already: urllib3's
    repeated tuple of causes, or its `HTTPConnection(host=..., port=...): ` prefix."""
    reason = str(getattr(exc, "reason", None) or (exc.args[0] if exc.args else exc))
    if reason.startswith(("HTTPConnection(", "HTTPSConnection(")) and "): " in reason:
        reason = reason.split("): ", 1)[1]
    return f"{type(exc).__name__}: {reason}"


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
    ) -> None:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        if not parsed.hostname:
            raise StoreError(f"S3 endpoint {endpoint!r} is not a URL like http://127.0.0.1:8333")
        self.bucket = bucket
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.base_url = f"s3://{bucket}"
        self.retry = retry or RetryPolicy()

        def connect() -> Minio:
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
                retries=False,
                maxsize=16,
            )
            return Minio(
                endpoint=parsed.netloc,
                access_key=access_key,
                secret_key=secret_key,
                secure=parsed.scheme == "https",
                http_client=http,
            )

        self._connect = connect
        self._client, self._client_pid = connect(), os.getpid()

    @property
    def client(self) -> Minio:
        """The SDK client of this process. A forked child (DataLoader and ingest workers) gets
        its own connection pool: sharing the parent's keep-alive sockets interleaves responses
        and corrupts the bytes read."""
        if self._client_pid != os.getpid():
            self._client, self._client_pid = self._connect(), os.getpid()
        return self._client

    # -- error mapping -------------------------------------------------------------------------

    def _where(self, key: str | None) -> str:
        where = f"S3 {self.endpoint} bucket {self.bucket!r}"
        return f"{where} key {key!r}" if key is not None else where

    def _call(
        self, key: str | None, operation: Callable[[], T], *, budget_s: float | None = None
    ) -> T:
        """Run one SDK call under the retry policy (its budget cut to `budget_s`, and to
        FIRST_CONTACT_BUDGET_S until the endpoint has answered once)."""
        caps = [] if budget_s is None else [budget_s]
        if self.endpoint not in _answered:
            caps.append(FIRST_CONTACT_BUDGET_S)
        policy = self.retry
        if caps and min(caps) < policy.budget_s:
            policy = policy.with_budget(min(caps))
        return policy.run(lambda: self._attempt(key, operation), lambda: self._where(key))

    def _attempt(self, key: str | None, operation: Callable[[], T]) -> T:
        """One try of an SDK call, its errors translated into StoreErrors; transient ones (worth
        retrying) as TransientStoreError. Any answer from the server marks the endpoint alive."""
        try:
            result = operation()
        except _CONNECTION_ERRORS as exc:
            raise TransientStoreError(f"unreachable ({_reason(exc)})") from None
        except InvalidResponseError as exc:
            raise TransientStoreError(f"invalid response: {exc}") from None
        except ServerError as exc:
            if exc.status_code >= 500:
                raise TransientStoreError(f"HTTP {exc.status_code}") from None
            _answered.add(self.endpoint)
            raise StoreError(f"{self._where(key)}: HTTP {exc.status_code}") from None
        except S3Error as exc:
            status = getattr(exc.response, "status", 0) or 0
            if exc.code in _TRANSIENT_S3_CODES or status >= 500:
                raise TransientStoreError(f"{exc.code}: {exc.message}") from None
            _answered.add(self.endpoint)
            self._raise_s3_error(key, exc)
        _answered.add(self.endpoint)
        return result

    def _raise_s3_error(self, key: str | None, exc: S3Error) -> NoReturn:
        """A permanent S3 error as a one-line StoreError that says what to check."""
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            raise StoreKeyNotFound(f"{self._where(key)}: no such object") from None
        if exc.code == "NoSuchBucket":
            raise StoreError(
                f"{self._where(key)}: the bucket does not exist (run `make store-up`, "
                "or create it on the server)"
            ) from None
        if exc.code in _CREDENTIAL_S3_CODES:
            raise StoreError(
                f"{self._where(key)}: access refused ({exc.code}); check "
                "VIDSSL_S3_ACCESS_KEY and VIDSSL_S3_SECRET_KEY"
            ) from None
        raise StoreError(f"{self._where(key)}: {exc.code}: {exc.message}") from None

    # -- interface -------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (local server and tests)."""
        if not self._call(None, lambda: self.client.bucket_exists(bucket_name=self.bucket)):
            self._call(None, lambda: self.client.make_bucket(bucket_name=self.bucket))

    def check(self) -> None:
        """Fail with one clear line if the endpoint is unreachable or the credentials are wrong:
        within FIRST_CONTACT_BUDGET_S, even against an endpoint that answered before (a check
        asks whether the store can be used now, not whether it comes back)."""
        exists = self._call(
            None,
            lambda: self.client.bucket_exists(bucket_name=self.bucket),
            budget_s=FIRST_CONTACT_BUDGET_S,
        )
        if not exists:
            raise StoreError(f"{self._where(None)}: the bucket does not exist")

    def put(self, key: str, data: bytes) -> None:
        self._call(
            key,
            lambda: self.client.put_object(
                bucket_name=self.bucket,
                object_name=key,
                data=io.BytesIO(data),
                length=len(data),
                part_size=MULTIPART_PART_BYTES,
            ),
        )
        STORE_TRAFFIC.count_written(len(data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """A conditional PUT (`If-None-Match: *`, S3's create-only write; SeaweedFS, MinIO and
        AWS honour it): of writers racing for one key exactly one succeeds."""
        headers = {"If-None-Match": "*", "Content-Length": str(len(data))}
        try:
            self._call(key, lambda: self.client._put_object(self.bucket, key, data, headers))
        except StoreError as exc:
            if "PreconditionFailed" in str(exc) or "HTTP 412" in str(exc):
                return False
            raise
        STORE_TRAFFIC.count_written(len(data))
        return True

    def put_file(self, key: str, path: str) -> None:
        self._call(
            key,
            lambda: self.client.fput_object(
                bucket_name=self.bucket,
                object_name=key,
                file_path=path,
                part_size=MULTIPART_PART_BYTES,
            ),
        )
        STORE_TRAFFIC.count_written(os.path.getsize(path))

    def get(self, key: str) -> bytes:
        def read_all() -> bytes:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        data = self._call(key, read_all)
        STORE_TRAFFIC.count_read(len(data))
        return data

    def stream(self, key: str) -> BinaryIO:
        return _ResumingStream(self, key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        def list_all() -> list[ObjectInfo]:
            objects = self.client.list_objects(
                bucket_name=self.bucket, prefix=prefix, recursive=True
            )
            return [ObjectInfo(o.object_name, o.size or 0) for o in objects if not o.is_dir]

        yield from sorted(self._call(prefix, list_all), key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        try:
            self._call(
                key, lambda: self.client.stat_object(bucket_name=self.bucket, object_name=key)
            )
        except StoreKeyNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call(key, lambda: self.client.remove_object(bucket_name=self.bucket, object_name=key))


class _ResumingStream(io.RawIOBase):
    """A streaming GET that rides out a dropped connection or a restart of the server.

    A read that fails re-opens the object at the byte it reached, under the store's retry
    policy: the budget is per read, so each outage of a long stream gets the whole budget as
    long as bytes flow in between. Re-opens carry `If-Match` with the first response's ETag, so
    an object replaced meanwhile fails the read instead of splicing two versions, and a body
    that ends short of its Content-Length counts as a dropped connection, not as the end.
    """

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        self._offset = 0
        self._size: int | None = None
        self._etag: str | None = None
        self._response: urllib3.BaseHTTPResponse | None = None
        store._call(key, self._open)

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        headers = {"If-Match": self._etag} if self._etag else None
        try:
            response = self._store.client.get_object(
                bucket_name=self._store.bucket,
                object_name=self._key,
                offset=self._offset,
                request_headers=headers,
            )
        except S3Error as exc:
            if exc.code != "PreconditionFailed":
                raise
            raise StoreError(
                f"{self._store._where(self._key)}: the object was replaced while it was read "
                f"(at byte {self._offset})"
            ) from None
        if self._size is None:
            self._size = int(response.headers.get("Content-Length", -1))
            self._etag = response.headers.get("ETag")
        self._response = response

    def _read_once(self, amount: int | None) -> bytes:
        if self._size is not None and 0 <= self._size <= self._offset:
            return b""
        if self._response is None:
            self._open()
        assert self._response is not None
        try:
            data = self._response.read(amount)
        except _CONNECTION_ERRORS as exc:
            self._release()
            raise TransientStoreError(
                f"connection lost at byte {self._offset} ({_reason(exc)})"
            ) from None
        if not data and self._size is not None and self._offset < self._size:
            self._release()
            raise TransientStoreError(f"body ended at byte {self._offset} of {self._size}")
        return data

    def read(self, size: int | None = -1) -> bytes:
        amount = None if size is None or size < 0 else size
        if amount == 0:
            return b""
        data = self._store._call(self._key, lambda: self._read_once(amount))
        self._offset += len(data)
        STORE_TRAFFIC.count_read(len(data))
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _release(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        try:
            response.close()
            response.release_conn()
        except Exception:
            pass

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()
