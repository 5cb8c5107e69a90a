"""Real Prometheus and Pushgateway processes for the monitoring tests (Debian's binaries in
/usr/bin), bound to 127.0.0.1 on free ports, their state in a temporary folder, stopped when
the `with` block ends."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds a server gets to answer its first request.
STARTUP_S = 20.0


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models train ~15x faster with one thread on a machine shared with other jobs
    (measured: 20 steps of the tiny experiment in 80 s with two threads, 5 s with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _binary(name: str) -> str:
    binary = shutil.which(name)
    assert binary, f"Debian's {name} is needed: `make system-packages`"
    return binary


@contextmanager
def _serving(command: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """Run `command` until the block ends; wait (bounded) until `ready_url` answers."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    get(ready_url)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{command[0]} did not start: {log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def pushgateway(folder: Path) -> Iterator[str]:
    """A Pushgateway; yields its `127.0.0.1:port`. `--persistence.file=` keeps it in memory:
    Debian's default persists to /var/lib/prometheus/pushgateway.data, shared by every run."""
    address = f"127.0.0.1:{free_port()}"
    command = [
        _binary("prometheus-pushgateway"),
        f"--web.listen-address={address}",
        "--persistence.file=",
    ]
    with _serving(command, f"http://{address}/-/ready", folder / "pushgateway.log"):
        yield address


@contextmanager
def prometheus(folder: Path, scrape_interval: str, targets: dict[str, dict]) -> Iterator[str]:
    """A Prometheus scraping `targets` (job name -> extra scrape-config keys, with
    `static_configs`) every `scrape_interval`; yields its `http://127.0.0.1:port`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": [{"job_name": job, **extra} for job, extra in targets.items()],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    address = f"127.0.0.1:{free_port()}"
    command = [
        _binary("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={address}",
    ]
    with _serving(command, f"http://{address}/-/ready", folder / "prometheus.log"):
        yield f"http://{address}"


def query(prometheus_url: str, expr: str, at: float | None = None) -> dict:
    """The `data` of Prometheus's /api/v1/query for `expr` (at Unix time `at`); an
    AssertionError with Prometheus's message when the query fails."""
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        body = json.loads(get(url))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr}: {exc.read().decode()}") from None
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]
