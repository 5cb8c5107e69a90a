"""Object store: one interface (`ObjectStore`), an S3 backend and a `file://` backend.

`open_store(uri)` picks the backend from a URI: `s3://bucket` (endpoint and credentials from
VIDSSL_S3_ENDPOINT, VIDSSL_S3_ACCESS_KEY, VIDSSL_S3_SECRET_KEY) or `file:///some/folder`.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from vidssl.store.base import (
    ObjectInfo,
    ObjectStore,
    RetryPolicy,
    StoreError,
    StoreKeyNotFound,
    TransientStoreError,
)

ENV_ENDPOINT = "VIDSSL_S3_ENDPOINT"
ENV_ACCESS_KEY = "VIDSSL_S3_ACCESS_KEY"
ENV_SECRET_KEY = "VIDSSL_S3_SECRET_KEY"

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "RetryPolicy",
    "StoreError",
    "StoreKeyNotFound",
    "TransientStoreError",
    "open_store",
]


def open_store(uri: str) -> ObjectStore:
    """The store for `s3://bucket` or `file:///root`."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        from vidssl.store.local import FileStore

        return FileStore(parsed.path)
    if parsed.scheme == "s3":
        from vidssl.store.s3 import S3Store

        missing = [
            n for n in (ENV_ENDPOINT, ENV_ACCESS_KEY, ENV_SECRET_KEY) if not os.environ.get(n)
        ]
        if missing:
            raise StoreError(
                f"store {uri}: set {', '.join(missing)} (locally `make store-up` writes them to "
                ".store/env; on a cluster they come from the vidssl-s3 Secret)"
            )
        if parsed.path.strip("/"):
            raise StoreError(f"store {uri}: give a bucket only (s3://bucket), not a path")
        return S3Store(
            parsed.netloc,
            os.environ[ENV_ENDPOINT],
            os.environ[ENV_ACCESS_KEY],
            os.environ[ENV_SECRET_KEY],
        )
    raise StoreError(f"store URI {uri!r}: expected s3://bucket or file:///folder")
