"""Object store: one interface (`ObjectStore`), an S3 backend and a `file://` backend.

`open_store(uri)` picks the backend from a URI: `s3://bucket` (endpoint and credentials from
VIDSSL_S3_ENDPOINT, VIDSSL_S3_ACCESS_KEY, VIDSSL_S3_SECRET_KEY) or `file:///some/folder`.

VIDSSL_S3_RETRY_BUDGET_S (seconds, default 60) is how long one S3 operation retries
connection errors and 5xx before it fails: the outage a running stage rides out, such as a
restart of the store. 0 means one attempt. Two things stay fast whatever the budget: wrong
credentials, a missing bucket or key fail at once (never retried), and an endpoint that has not
answered once yet in this process (a wrong VIDSSL_S3_ENDPOINT, a server that is not up) fails
after at most `vidssl.store.s3.FIRST_CONTACT_BUDGET_S` (10 s), as does `S3Store.check()`.
"""

from __future__ import annotations

import math
import os
from urllib.parse import urlparse

from vidssl.store.base import (
    DEFAULT_RETRY_BUDGET_S,
    STORE_TRAFFIC,
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
ENV_RETRY_BUDGET = "VIDSSL_S3_RETRY_BUDGET_S"

__all__ = [
    "STORE_TRAFFIC",
    "ObjectInfo",
    "ObjectStore",
    "RetryPolicy",
    "StoreError",
    "StoreKeyNotFound",
    "TransientStoreError",
    "open_store",
    "retry_policy_from_env",
]


def retry_policy_from_env() -> RetryPolicy:
    """The S3 retry policy, its budget from VIDSSL_S3_RETRY_BUDGET_S when that is set."""
    raw = os.environ.get(ENV_RETRY_BUDGET, "").strip()
    if not raw:
        return RetryPolicy()
    try:
        budget = float(raw)
    except ValueError:
        budget = math.nan
    if not math.isfinite(budget) or budget < 0:
        raise StoreError(
            f"{ENV_RETRY_BUDGET}={raw!r}: expected seconds >= 0 "
            f"(default {DEFAULT_RETRY_BUDGET_S:g}; 0 = no retries)"
        )
    return RetryPolicy(budget_s=budget)


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
            retry=retry_policy_from_env(),
        )
    raise StoreError(f"store URI {uri!r}: expected s3://bucket or file:///folder")
