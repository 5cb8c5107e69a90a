"""`helm test`: the S3 endpoint answers with the Secret's credentials and has the bucket, and
the Pushgateway (when VIDSSL_PUSHGATEWAY names one) is ready. Exit status 1 names what failed.
"""

import os
import sys
import urllib.request

from vidssl.store import StoreError
from vidssl.store.s3 import S3Store


def main() -> int:
    failures = []
    store = S3Store(
        os.environ["VIDSSL_BUCKET"],
        os.environ["VIDSSL_S3_ENDPOINT"],
        os.environ["VIDSSL_S3_ACCESS_KEY"],
        os.environ["VIDSSL_S3_SECRET_KEY"],
    )
    try:
        store.check()
        print(f"store: {store.base_url} at {store.endpoint} answers with the Secret's credentials")
    except StoreError as exc:
        failures.append(f"store: {exc}")
    gateway = os.environ.get("VIDSSL_PUSHGATEWAY", "")
    if gateway:
        url = f"http://{gateway}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                print(f"pushgateway: {url} answered HTTP {response.status}")
        except OSError as exc:
            failures.append(f"pushgateway: {url}: {exc}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


sys.exit(main())
