"""Writing WebDataset tar shards into the store, and publishing a stage output.

`ShardWriter` fills one split's shards (`shard-%06d.tar`, bounded by samples and bytes) and
uploads each finished shard in a background thread while the next one fills.
`OutputWriter` owns the splits of one stage output and writes `manifest.json` last.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import zlib
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from vidssl import __version__
from vidssl.errors import VidsslError
from vidssl.shards.manifest import Manifest, ShardEntry, SkippedInput, SplitEntry, manifest_key
from vidssl.store import ObjectStore

SHARD_PATTERN = "shard-%06d.tar"
_TAR_BLOCK = 512  # a member takes one header block plus its data rounded up to blocks

SampleValue = bytes | str | dict | list | np.ndarray


class SampleKeyError(VidsslError, ValueError):
    pass


def encode_field(name: str, value: SampleValue) -> bytes:
    """Bytes for one sample field; the field's extension says how readers decode it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    raise TypeError(f"field {name!r}: cannot encode {type(value).__name__}")


def check_sample_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise SampleKeyError(f"sample key must be a non-empty string, got {key!r}")
    if "." in key or "/" in key:
        raise SampleKeyError(
            f"sample key {key!r} contains '.' or '/': WebDataset splits a key at its first dot"
        )
    return key


class _TarBuilder:
    """One shard being filled in memory: ustar headers with fixed owner, mode and time, so the
    same samples give the same bytes. Parts are joined once, when the shard is finished."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.samples = 0

    def add(self, member: str, data: bytes) -> None:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        header = info.tobuf(format=tarfile.USTAR_FORMAT)
        padding = -len(data) % _TAR_BLOCK
        self.parts += [header, data, bytes(padding)] if padding else [header, data]
        self.size += len(header) + len(data) + padding

    def finish(self) -> bytes:
        end = 2 * _TAR_BLOCK  # end-of-archive marker, then pad to whole 10 KiB records
        end += -(self.size + end) % tarfile.RECORDSIZE
        return b"".join([*self.parts, bytes(end)])


class ShardWriter:
    """Writes samples of one split to `<prefix>/[<shard_dir>/]<split>/shard-%06d.tar`.

    A shard closes before it would pass `max_samples` or `max_bytes` of members (tar then pads
    the archive to a multiple of 10 KiB); a sample larger than `max_bytes` gets a shard alone.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        split: str,
        *,
        max_samples: int = 1000,
        max_bytes: int = 256 << 20,
        shard_dir: str = "",
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.split = split
        self.shard_dir = shard_dir
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.entries: list[ShardEntry] = []
        self._current: _TarBuilder | None = None
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-upload")
        self._pending: Future[None] | None = None
        self._seen_keys: set[str] = set()
        self._closed = False

    def write(self, sample: Mapping[str, SampleValue]) -> None:
        key = check_sample_key(sample.get("__key__"))
        if key in self._seen_keys:
            raise SampleKeyError(f"sample key {key!r} written twice to split {self.split!r}")
        self._seen_keys.add(key)
        fields = {}
        for name, value in sample.items():
            if name.startswith("__"):
                continue
            fields[f"{key}.{name}"] = encode_field(name, value)
        size = sum(
            _TAR_BLOCK + -(-len(data) // _TAR_BLOCK) * _TAR_BLOCK for data in fields.values()
        )
        current = self._current
        if current is not None and (
            current.samples >= self.max_samples or current.size + size > self.max_bytes
        ):
            self._flush()
        if self._current is None:
            self._current = _TarBuilder()
        for member, data in fields.items():
            self._current.add(member, data)
        self._current.samples += 1

    def end_shard(self, *, keep_empty: bool = False) -> None:
        """Close the shard being filled (the next sample starts a new one), e.g. so that this
        split's shards follow another output's one for one. With `keep_empty`, a shard is
        written even when no sample went into it since the last one ended (a valid, empty
        archive), so the shard count stays that of the output followed."""
        if self._closed:
            raise RuntimeError(f"split {self.split!r}: end_shard after close")
        if keep_empty and self._current is None:
            self._current = _TarBuilder()
        self._flush(keep_empty=keep_empty)

    def _flush(self, keep_empty: bool = False) -> None:
        builder, self._current = self._current, None
        if builder is None or (builder.samples == 0 and not keep_empty):
            return
        data = builder.finish()
        name = f"{self.split}/{SHARD_PATTERN % len(self.entries)}"
        name = f"{self.shard_dir}/{name}" if self.shard_dir else name
        entry = ShardEntry(name=name, samples=builder.samples, bytes=len(data), sha256="", crc32=0)
        self.entries.append(entry)
        self._wait_pending()
        self._pending = self._uploader.submit(self._upload, entry, data)

    def _upload(self, entry: ShardEntry, data: bytes) -> None:
        """In the upload thread: hash (releases the GIL) and put, while the next shard fills."""
        entry.sha256 = hashlib.sha256(data).hexdigest()
        entry.crc32 = zlib.crc32(data)
        self.store.put(f"{self.prefix}/{entry.name}", data)

    def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> SplitEntry:
        if not self._closed:
            self._flush()
            self._wait_pending()
            self._uploader.shutdown()
            self._closed = True
        return SplitEntry(shards=self.entries)

    def abort(self) -> None:
        self._current = None
        if self._pending is not None:
            self._pending.cancel()
        self._uploader.shutdown(wait=True)
        self._closed = True


class OutputWriter:
    """One stage output: shards per split, then `manifest.json` last (the commit point)."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        *,
        stage: str,
        stage_version: int,
        digest: str,
        dataset: str,
        config: dict,
        inputs: list[str],
        max_samples: int = 1000,
        max_bytes: int = 256 << 20,
        attempt: str = "",
        objects_dir: str = "",
    ) -> None:
        self.store = store
        self.prefix = prefix
        #: where this run's objects go, relative to `prefix` (an attempt's folder, or the top)
        self.objects_dir = objects_dir
        self._header = dict(
            attempt=attempt,
            stage=stage,
            stage_version=stage_version,
            digest=digest,
            dataset=dataset,
            config=config,
            inputs=inputs,
        )
        self._limits = dict(max_samples=max_samples, max_bytes=max_bytes)
        self._splits: dict[str, ShardWriter] = {}
        self.skipped: list[SkippedInput] = []
        self.details: dict = {}

    @property
    def url(self) -> str:
        return self.store.url(self.prefix)

    def relative(self, name: str) -> str:
        """The name, relative to the output prefix, of this run's object `name`."""
        return f"{self.objects_dir}/{name}" if self.objects_dir else name

    def object_key(self, name: str) -> str:
        """The store key of this run's object `name` (stages writing files beside shards)."""
        return f"{self.prefix}/{self.relative(name)}"

    def split(self, name: str, *, unbounded: bool = False) -> ShardWriter:
        """The writer of split `name`, created on first use. `unbounded` (on creation): its
        shards are not closed by the sample and byte limits, only by `end_shard`: a split whose
        shards follow another output's one for one."""
        if name not in self._splits:
            if not name or "/" in name or "." in name:
                raise ValueError(f"split name {name!r} must be a plain word")
            limits = dict(max_samples=sys.maxsize, max_bytes=sys.maxsize) if unbounded else {}
            self._splits[name] = ShardWriter(
                self.store,
                self.prefix,
                name,
                shard_dir=self.objects_dir,
                **{**self._limits, **limits},
            )
        return self._splits[name]

    def write(self, split: str, sample: Mapping[str, SampleValue]) -> None:
        self.split(split).write(sample)

    def end_shard(self, split: str, *, keep_empty: bool = False) -> None:
        """`ShardWriter.end_shard` of split `split` (created if new)."""
        self.split(split).end_shard(keep_empty=keep_empty)

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append(SkippedInput(input=source, reason=reason))

    def close(self) -> Manifest:
        """Finish every split's uploads; the manifest that would publish them (not written)."""
        splits = {name: writer.close() for name, writer in sorted(self._splits.items())}
        return Manifest(
            **self._header,
            package_version=__version__,
            splits=splits,
            skipped=self.skipped,
            details=self.details,
        )

    def publish(self) -> Manifest:
        """Close and write the manifest, replacing any (single-writer use: tests, benchmarks;
        stages publish through `vidssl.stages.base.run_cached`, safe beside other runs)."""
        manifest = self.close()
        self.store.put_text(manifest_key(self.prefix), manifest.model_dump_json(indent=2))
        return manifest

    def abort(self) -> None:
        for writer in self._splits.values():
            writer.abort()
