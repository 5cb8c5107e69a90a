"""Reading a stage output's shards back, streamed from the store through WebDataset.

Shards are listed from the manifest (never by listing the bucket), opened through the `s3`
gopen handler registered here (a streaming GET, no temporary files), checked against the
manifest's byte count and sha256 as they stream, and grouped into samples. Shuffling, splitting
by node and by DataLoader worker, and endless resampling come from WebDataset's pipeline.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import BinaryIO

import webdataset as wds
from torch.utils.data import IterableDataset

from vidssl.errors import VidsslError
from vidssl.shards.manifest import Manifest, read_manifest
from vidssl.shards.tarstream import PrefetchingReader, TarFormatError, iter_members
from vidssl.store import ObjectStore, StoreError, open_store

# `webdataset.gopen` the attribute is the function; the module holds the scheme table.
wds_gopen = importlib.import_module("webdataset.gopen")


class ShardReadError(VidsslError, RuntimeError):
    """A shard is truncated or corrupt; the message names its URL and the last good sample."""


# -- gopen handlers -----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _store_for_bucket(bucket: str) -> ObjectStore:
    return open_store(f"s3://{bucket}")


def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: object) -> BinaryIO:
    """WebDataset handler for `s3://bucket/key`: a streaming GET through the minio SDK."""
    if mode != "rb":
        raise ValueError(f"{url}: the s3 gopen handler only reads; write with vidssl.shards")
    bucket, _, key = url[len("s3://") :].partition("/")
    return _store_for_bucket(bucket).stream(key)


class MissingSplitError(VidsslError, KeyError):
    """An output has no split of that name; the message lists the ones it has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RefusedURLError(VidsslError, ValueError):
    """A shard URL whose scheme would run a command or leave the store."""


def refuse_pipe(url: str, *_: object, **__: object) -> BinaryIO:
    raise RefusedURLError(
        f"{url!r}: the pipe: scheme is disabled (a shard URL never runs a command)"
    )


def register_gopen_handlers() -> None:
    wds_gopen.gopen_schemes["s3"] = gopen_s3
    wds_gopen.gopen_schemes["pipe"] = refuse_pipe


register_gopen_handlers()


# -- verified streaming ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardRef:
    """One shard to read, with its manifest's size and CRC-32; `beside`: the shards of other
    outputs that follow it (`read_split(beside=...)`), whose samples join its own by key."""

    url: str
    bytes: int
    crc32: int
    beside: tuple[ShardRef, ...] = ()


def _split_member(name: str) -> tuple[str, str]:
    key, dot, field = name.partition(".")
    if not dot:
        raise TarFormatError(f"member {name!r} has no field extension")
    return key, field


def samples_from_shard(shard: ShardRef) -> Iterator[dict]:
    """Samples of one shard, in order; raises ShardReadError naming the URL and last good key.

    Size and CRC-32 are checked against the manifest when the shard has been read to its end,
    so a damaged shard's samples up to the damage may already have been yielded.
    """
    last_good = None
    sample: dict | None = None
    try:
        stream = PrefetchingReader(wds_gopen.gopen(shard.url, "rb"))
    except StoreError as exc:
        raise ShardReadError(f"{shard.url}: cannot open: {exc}") from None
    try:
        for name, data in iter_members(stream):
            key, field = _split_member(name)
            if sample is not None and sample["__key__"] != key:
                last_good = sample["__key__"]
                yield sample
                sample = None
            if sample is None:
                sample = {"__key__": key, "__url__": shard.url}
            sample[field] = data
        if sample is not None:  # the archive ended cleanly: its last sample is complete
            last_good = sample["__key__"]
        stream.drain()  # tar pads after the end-of-archive marker: hash all of it
        problem = _integrity_problem(stream, shard)
    except (TarFormatError, OSError, StoreError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    finally:
        stream.close()
    if problem:
        after = f"after sample {last_good!r}" if last_good else "before its first sample"
        raise ShardReadError(f"{shard.url}: corrupt or truncated shard, {after}: {problem}")
    if sample is not None:
        yield sample


def _integrity_problem(stream: PrefetchingReader, shard: ShardRef) -> str | None:
    if stream.count != shard.bytes:
        return f"{stream.count} bytes read, manifest says {shard.bytes} (truncated?)"
    if stream.crc32 != shard.crc32:
        return "CRC-32 differs from the manifest (corrupt)"
    return None


#: Fields of a companion sample that describe that sample itself and are not joined: the
#: sample it joins keeps its own.
UNJOINED_FIELDS = ("meta.json",)


def joined_samples(shard: ShardRef) -> Iterator[dict]:
    """`samples_from_shard(shard)`, each sample with the fields of the sample of the same key in
    each of `shard.beside` (read whole first: they are small, e.g. point tracks), less
    `UNJOINED_FIELDS`. A field the sample already has is never overwritten: a collision is a
    ShardReadError naming both shards, and so is a companion sample whose key the shard lacks
    (the shards do not follow)."""
    companions = []
    for companion in shard.beside:
        by_key = {}
        for sample in samples_from_shard(companion):
            key = sample.pop("__key__")
            sample.pop("__url__")
            for name in UNJOINED_FIELDS:
                sample.pop(name, None)
            by_key[key] = sample
        companions.append((companion.url, by_key))
    seen: set[str] = set()
    for sample in samples_from_shard(shard):
        key = sample["__key__"]
        seen.add(key)
        for url, by_key in companions:
            fields = by_key.get(key, {})
            clash = sorted(set(fields) & set(sample))
            if clash:
                raise ShardReadError(
                    f"{shard.url} and {url}: sample {key!r} has the field(s) {clash} in both; "
                    "a companion output may only add fields"
                )
            sample.update(fields)
        yield sample
    for url, by_key in companions:
        stray = sorted(set(by_key) - seen)
        if stray:
            raise ShardReadError(
                f"{url} does not follow {shard.url}: it holds samples the shard lacks "
                f"({len(stray)}, first {stray[0]!r})"
            )


def _expand_shards(shards: Iterable[ShardRef]) -> Iterator[dict]:
    for shard in shards:
        yield from joined_samples(shard) if shard.beside else samples_from_shard(shard)


# -- shard sources and the pipeline ---------------------------------------------------------------


class _ShardList(IterableDataset):
    """Yields the shards once per epoch, optionally shuffled with an epoch-dependent seed."""

    def __init__(self, shards: list[ShardRef], shuffle: bool, seed: int) -> None:
        self.shards = shards
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = -1

    def __iter__(self) -> Iterator[ShardRef]:
        self.epoch += 1
        order = list(self.shards)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        yield from order


class _ResampledShardList(IterableDataset):
    """Draws shards with replacement, forever (or `count` times): for fixed-step training."""

    def __init__(self, shards: list[ShardRef], seed: int, count: int = sys.maxsize) -> None:
        self.shards = shards
        self.seed = seed
        self.count = count

    def __iter__(self) -> Iterator[ShardRef]:
        _, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(self.seed * 1000 + worker)
        for _ in range(self.count):
            yield rng.choice(self.shards)


def shard_refs(store: ObjectStore, prefix: str, manifest: Manifest, split: str) -> list[ShardRef]:
    if split not in manifest.splits:
        raise MissingSplitError(
            f"{store.url(prefix)}: no split {split!r}; it has {sorted(manifest.splits)}"
        )
    return [
        ShardRef(store.url(f"{prefix}/{entry.name}"), entry.bytes, entry.crc32)
        for entry in manifest.splits[split].shards
    ]


def followed_shard_refs(
    store: ObjectStore, prefix: str, split: str, beside: Sequence[str]
) -> list[ShardRef]:
    """`prefix`'s shards of `split`, each with the shards of the outputs at `beside` (store
    prefixes, or URLs of this store) that follow it one for one: shard i of their `split`
    holds samples of shard i's keys only. A StoreError naming both outputs when a split's
    shard counts differ, or a companion shard has more samples than the shard it follows."""
    primary = read_manifest(store, prefix)
    shards = shard_refs(store, prefix, primary, split)
    counts = [entry.samples for entry in primary.splits[split].shards]
    companions = []
    for given in beside:
        other = store.key_of(given.rstrip("/")) if "://" in given else given
        manifest = read_manifest(store, other)
        where = f"{store.url(other)} split {split!r} beside {store.url(prefix)}"
        if split not in manifest.splits:
            raise MissingSplitError(f"{where}: no such split; it has {sorted(manifest.splits)}")
        refs = shard_refs(store, other, manifest, split)
        if len(refs) != len(shards):
            raise StoreError(
                f"{where}: {len(refs)} shards for {len(shards)}; the outputs do not follow "
                "each other one for one (tracks of other clips?)"
            )
        for i, entry in enumerate(manifest.splits[split].shards):
            if entry.samples > counts[i]:
                raise StoreError(
                    f"{where}: shard {i} has {entry.samples} samples for {counts[i]}; the "
                    "outputs do not follow each other one for one"
                )
        companions.append(refs)
    return [
        replace(shard, beside=tuple(refs[i] for refs in companions))
        for i, shard in enumerate(shards)
    ]


def read_split(
    store: ObjectStore,
    prefix: str,
    split: str,
    *,
    shuffle_shards: bool = False,
    shuffle_buffer: int = 0,
    resampled: bool = False,
    seed: int = 0,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    beside: Sequence[str] = (),
) -> wds.DataPipeline:
    """An iterable (and torch IterableDataset) over one split's samples: dicts of raw bytes.

    `beside`: store prefixes (or URLs) of outputs whose `split` shards follow this one's one
    for one (the flow stage's tracks beside its clips): each sample gets the fields of their
    sample of the same key but its `meta.json`, when they have one (see `joined_samples`).
    Shuffling, resampling and splitting move each shard together with its companions."""
    if beside:
        shards = followed_shard_refs(store, prefix, split, beside)
    else:
        shards = shard_refs(store, prefix, read_manifest(store, prefix), split)
    source = (
        _ResampledShardList(shards, seed) if resampled else _ShardList(shards, shuffle_shards, seed)
    )
    stages: list = [source]
    if split_by_node and not resampled:
        stages.append(wds.split_by_node)
    if split_by_worker and not resampled:
        stages.append(wds.split_by_worker)
    stages.append(_expand_shards)
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, seed=seed))
    return wds.DataPipeline(*stages)


def verify_output(store: ObjectStore, prefix: str) -> list[str]:
    """Re-hash every shard of an output against its manifest's sha256; returns the problems."""
    manifest = read_manifest(store, prefix)
    problems = []
    for split in manifest.splits.values():
        for entry in split.shards:
            digest, size = hashlib.sha256(), 0
            with store.stream(f"{prefix}/{entry.name}") as stream:
                while data := stream.read(1 << 20):
                    digest.update(data)
                    size += len(data)
            url = store.url(f"{prefix}/{entry.name}")
            if size != entry.bytes:
                problems.append(f"{url}: {size} bytes, manifest says {entry.bytes}")
            elif digest.hexdigest() != entry.sha256:
                problems.append(f"{url}: sha256 differs from the manifest")
    return problems


def decode_json(sample: dict, field: str = "meta.json") -> dict:
    return json.loads(sample[field])
