"""Chart hook: create the store's bucket if it is missing (idempotent).

Run by the post-install/post-upgrade Job as `python -c`, with the store's environment
(VIDSSL_S3_ENDPOINT, VIDSSL_S3_ACCESS_KEY, VIDSSL_S3_SECRET_KEY from the S3 Secret),
VIDSSL_BUCKET and VIDSSL_WAIT_S: how long to wait for a store that is still starting (the
SeaweedFS pod of the same install may not answer yet).
"""

import os
import sys
import time

from vidssl.store import StoreError
from vidssl.store.s3 import S3Store


def main() -> int:
    store = S3Store(
        os.environ["VIDSSL_BUCKET"],
        os.environ["VIDSSL_S3_ENDPOINT"],
        os.environ["VIDSSL_S3_ACCESS_KEY"],
        os.environ["VIDSSL_S3_SECRET_KEY"],
    )
    deadline = time.monotonic() + float(os.environ.get("VIDSSL_WAIT_S", "300"))
    while True:
        try:
            store.ensure_bucket()
        except StoreError as exc:
            if time.monotonic() > deadline:
                print(f"the store did not answer in time: {exc}", file=sys.stderr)
                return 1
            print(f"waiting for the store: {exc}", flush=True)
            time.sleep(5)
            continue
        print(f"bucket {store.base_url} at {store.endpoint} is ready", flush=True)
        return 0


sys.exit(main())
