"""`manifest.json`: the record that makes a stage output exist. Written last, read first."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidssl.store import ObjectStore, StoreError, StoreKeyNotFound

MANIFEST_NAME = "manifest.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: A shard name: `/`-separated plain words relative to the output prefix, never `..` or absolute.
_SAFE_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_relative_name(name: str) -> str:
    """`name` if it stays inside the output prefix on every backend; a ValueError otherwise."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or not _SAFE_PART.fullmatch(p) for p in parts):
        raise ValueError(f"shard name {name!r} is not a plain relative path inside the output")
    return name


class ShardEntry(_Record):
    #: relative to the output prefix: "attempts/<attempt>/<split>/shard-000000.tar"
    name: str
    samples: int
    bytes: int
    sha256: str
    #: zlib CRC-32, checked by the streaming reader (5 GB/s, where sha256 would halve read speed)
    crc32: int = 0

    @field_validator("name")
    @classmethod
    def _inside_output(cls, name: str) -> str:
        return check_relative_name(name)


class SplitEntry(_Record):
    shards: list[ShardEntry] = Field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)


class SkippedInput(_Record):
    input: str
    reason: str


class Manifest(_Record):
    stage: str
    stage_version: int
    digest: str
    dataset: str
    config: dict = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    package_version: str
    #: the attempt (see vidssl.shards.attempts) whose objects this output is; "" before attempts
    attempt: str = ""
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    splits: dict[str, SplitEntry] = Field(default_factory=dict)
    skipped: list[SkippedInput] = Field(default_factory=list)
    #: stage-specific summary (per-video records, counts, ...)
    details: dict = Field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(split.samples for split in self.splits.values())


def manifest_key(prefix: str) -> str:
    return f"{prefix}/{MANIFEST_NAME}"


def read_manifest(store: ObjectStore, prefix: str) -> Manifest:
    """The manifest of the output at `prefix`; a clear error when the stage has not finished."""
    key = manifest_key(prefix)
    try:
        text = store.get_text(key)
    except StoreKeyNotFound:
        raise StoreError(
            f"{store.url(prefix)}: no {MANIFEST_NAME}: this stage output was never finished "
            "(run its stage again; unfinished shards are never read)"
        ) from None
    try:
        return Manifest.model_validate_json(text)
    except ValueError as exc:
        raise StoreError(f"{store.url(key)}: not a valid manifest: {exc}") from None


def find_manifest(store: ObjectStore, prefix: str) -> Manifest | None:
    if not store.exists(manifest_key(prefix)):
        return None
    return read_manifest(store, prefix)
