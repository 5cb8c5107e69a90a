"""A read-only view of a dataset's files, on disk or under an `s3://bucket/prefix`.

Adapters list and read small files (index files, annotations, CSVs) through it; video decoders
need a real file, so `local_copy` downloads an S3 object to a temporary file for the duration
(and `local_folder` a folder of frames to a temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from vidssl.store import StoreError, StoreKeyNotFound, open_store


class FileTree:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        parsed = urlparse(self.root)
        self._store = None
        if parsed.scheme == "s3":
            self._store = open_store(f"s3://{parsed.netloc}")
            self._prefix = parsed.path.strip("/")
        elif parsed.scheme in ("", "file"):
            self._path = Path(parsed.path if parsed.scheme == "file" else self.root)
        else:
            raise StoreError(f"dataset root {root!r}: expected a folder or s3://bucket/prefix")

    def _inside(self, relative: str) -> str:
        """`relative` if it stays under the root (index files and manifests name files)."""
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or "\\" in relative:
            raise StoreError(f"{self.root}: {relative!r} would leave the dataset's folder")
        return relative

    def _key(self, relative: str) -> str:
        relative = self._inside(relative)
        return f"{self._prefix}/{relative}" if self._prefix else relative

    def _file(self, relative: str) -> Path:
        return self._path / self._inside(relative)

    def describe(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def is_local(self) -> bool:
        return self._store is None

    def exists(self, relative: str) -> bool:
        if self._store is None:
            return self._file(relative).is_file()
        return self._store.exists(self._key(relative))

    def read_bytes(self, relative: str) -> bytes:
        if self._store is None:
            try:
                return self._file(relative).read_bytes()
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.describe(relative)}: no such file") from None
        try:
            return self._store.get(self._key(relative))
        except StoreKeyNotFound:
            raise FileNotFoundError(f"{self.describe(relative)}: no such file") from None

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def sizes(self, relative_prefix: str = "") -> dict[str, int]:
        """Relative path -> size in bytes of every file under a prefix."""
        if self._store is None:
            base = self._file(relative_prefix) if relative_prefix else self._path
            if not base.exists():
                return {}
            return {
                p.relative_to(self._path).as_posix(): p.stat().st_size
                for p in sorted(base.rglob("*"))
                if p.is_file()
            }
        strip = len(self._prefix) + 1 if self._prefix else 0
        return {
            info.key[strip:]: info.size for info in self._store.list(self._key(relative_prefix))
        }

    def list(self, relative_prefix: str = "") -> list[str]:
        """Relative paths of every file under a prefix, sorted."""
        return sorted(self.sizes(relative_prefix))

    @contextlib.contextmanager
    def local_copy(self, relative: str) -> Iterator[str]:
        """A local path to the file (a temporary download for S3, removed afterwards)."""
        if self._store is None:
            yield str(self._file(relative))
            return
        suffix = Path(relative).suffix
        fd, temporary = tempfile.mkstemp(prefix="vidssl-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(self.read_bytes(relative))
            yield temporary
        finally:
            os.unlink(temporary)

    @contextlib.contextmanager
    def local_folder(self, relative: str) -> Iterator[str]:
        """A local path to the folder (on S3, a temporary download of every object under it,
        removed afterwards). A folder that does not exist is an empty one."""
        if self._store is None:
            yield str(self._file(relative))
            return
        prefix = f"{relative.rstrip('/')}/"
        with tempfile.TemporaryDirectory(prefix="vidssl-") as temporary:
            for name in self.list(prefix):
                data = self.read_bytes(name)  # refuses a name that leaves the folder
                target = Path(temporary, name[len(prefix) :])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            yield temporary
