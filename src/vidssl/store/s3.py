"""S3 backend through the minio SDK: SeaweedFS locally, any S3/MinIO endpoint on a cluster.

urllib3's own retries are switched off so that `RetryPolicy` is the one place that decides how
often to try: an unreachable endpoint fails in about a second with one line, not a stack.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from vidssl.store.base import (
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

_TRANSIENT_S3_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_CREDENTIAL_S3_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}


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

    def _call(self, key: str | None, operation: Callable[[], T]) -> T:
        """Run one SDK call under the retry policy, translating SDK errors into StoreErrors."""

        def attempt() -> T:
            try:
                return operation()
            except S3Error as exc:
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
                if exc.code in _TRANSIENT_S3_CODES:
                    raise TransientStoreError(f"{exc.code}: {exc.message}") from None
                raise StoreError(f"{self._where(key)}: {exc.code}: {exc.message}") from None
            except ServerError as exc:
                if exc.status_code >= 500:
                    raise TransientStoreError(f"HTTP {exc.status_code}") from None
                raise StoreError(f"{self._where(key)}: HTTP {exc.status_code}") from None
            except InvalidResponseError as exc:
                raise TransientStoreError(f"invalid response: {exc}") from None
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise TransientStoreError(f"unreachable ({type(exc).__name__}: {reason})") from None

        return self.retry.run(attempt, lambda: self._where(key))

    # -- interface -------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (local server and tests)."""
        if not self._call(None, lambda: self.client.bucket_exists(bucket_name=self.bucket)):
            self._call(None, lambda: self.client.make_bucket(bucket_name=self.bucket))

    def check(self) -> None:
        """Fail with one clear line if the endpoint is unreachable or the credentials are wrong."""
        if not self._call(None, lambda: self.client.bucket_exists(bucket_name=self.bucket)):
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

    def get(self, key: str) -> bytes:
        def read_all() -> bytes:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(key, read_all)

    def stream(self, key: str) -> BinaryIO:
        return _ResumingStream(self, key)

    def _open_range(self, key: str, offset: int) -> urllib3.BaseHTTPResponse:
        return self._call(
            key,
            lambda: self.client.get_object(bucket_name=self.bucket, object_name=key, offset=offset),
        )

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
    """A GET that, when the connection drops mid-object, re-requests from the byte it reached."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        self._offset = 0
        self._response = store._open_range(key, 0)
        self._resumes_left = store.retry.attempts

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        amount = None if size is None or size < 0 else size
        while True:
            try:
                data = self._response.read(amount)
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                if self._resumes_left == 0:
                    raise StoreError(
                        f"{self._store._where(self._key)}: connection lost at byte "
                        f"{self._offset}: {exc}"
                    ) from None
                self._resumes_left -= 1
                self._release()
                self._response = self._store._open_range(self._key, self._offset)
                continue
            self._offset += len(data)
            return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _release(self) -> None:
        try:
            self._response.close()
            self._response.release_conn()
        except Exception:
            pass

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()
