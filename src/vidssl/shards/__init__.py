"""WebDataset shards in the object store: writer, manifest, streaming reader."""

from vidssl.shards.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    SkippedInput,
    SplitEntry,
    find_manifest,
    read_manifest,
)
from vidssl.shards.reader import (
    ShardReadError,
    decode_json,
    read_split,
    samples_from_shard,
    verify_output,
)
from vidssl.shards.writer import OutputWriter, SampleKeyError, ShardWriter

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "OutputWriter",
    "SampleKeyError",
    "ShardEntry",
    "ShardReadError",
    "ShardWriter",
    "SkippedInput",
    "SplitEntry",
    "decode_json",
    "find_manifest",
    "read_manifest",
    "read_split",
    "samples_from_shard",
    "verify_output",
]
