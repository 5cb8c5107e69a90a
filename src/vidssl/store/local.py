"""`file://` backend: the same interface over a folder, for unit tests and laptops."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vidssl.store.base import (
    STORE_TRAFFIC,
    ObjectInfo,
    ObjectStore,
    StoreError,
    StoreKeyNotFound,
)

_PARTIAL_SUFFIX = ".partial"


class FileStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StoreError(f"file store {self.root}: key {key!r} escapes the store root")
        return path

    def _atomic_write(self, key: str, write) -> None:  # type: ignore[no-untyped-def]
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda handle: handle.write(data))
        STORE_TRAFFIC.count_written(len(data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.link(tmp, path)  # atomic, and fails if the name exists: the conditional put
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        STORE_TRAFFIC.count_written(len(data))
        return True

    def put_file(self, key: str, path: str) -> None:
        def copy(handle: BinaryIO) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)

        self._atomic_write(key, copy)
        STORE_TRAFFIC.count_written(os.path.getsize(path))

    def get(self, key: str) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreKeyNotFound(f"file store {self.root}: key {key!r}: no such object") from None
        STORE_TRAFFIC.count_read(len(data))
        return data

    def stream(self, key: str) -> BinaryIO:
        """The open file; its whole size counts as read (readers read shards to the end)."""
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 (the caller closes it)
        except FileNotFoundError:
            raise StoreKeyNotFound(f"file store {self.root}: key {key!r}: no such object") from None
        STORE_TRAFFIC.count_read(os.fstat(handle.fileno()).st_size)
        return handle

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(_PARTIAL_SUFFIX):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, path.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
