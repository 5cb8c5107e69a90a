"""Synth: generate the synthetic Objectron dataset (vidssl.synth.objectron) and publish its
files under the stage output (`.../synth/<digest>/raw/`), manifest last like every stage."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vidssl.config import Experiment, SyntheticObjectronSource
from vidssl.errors import InputError
from vidssl.progress import track
from vidssl.shards import OutputWriter
from vidssl.stages.base import StageOutput, StageSpec, run_cached, store_for
from vidssl.synth.objectron import SynthSpec, generate

SPEC = StageSpec(name="synth", version=4)  # 2: textures; 3: floors, shapes; 4: real camera axes
RAW_FOLDER = "raw"
#: The ground-truth flow's own version, in the digest only of data that carries it (so data
#: without flow keeps its digest): 2: the screen-fixed wall is never valid (vidssl.synth.flow).
FLOW_TRUTH_VERSION = 2


def synth_spec(source: SyntheticObjectronSource, workers: int = 0) -> SynthSpec:
    return SynthSpec(
        videos_per_class=source.videos_per_class,
        frames=source.frames,
        fps=source.fps,
        width=source.width,
        height=source.height,
        seed=source.seed,
        categories=tuple(source.categories),
        test_fraction=source.test_fraction,
        textures=source.textures,
        flow_step=source.flow_step,
        specular=source.specular,
        roll_turn=source.roll_turn,
        workers=workers,
    )


def raw_url(output: StageOutput) -> str:
    """The generated dataset's folder (inside the attempt that published it)."""
    return f"{output.url}/{output.manifest.details.get('raw', RAW_FOLDER)}"


def run(experiment: Experiment, *, force: bool = False) -> StageOutput:
    source = experiment.dataset.source
    if not isinstance(source, SyntheticObjectronSource):
        raise InputError(
            f"dataset.source.kind is {source.kind!r}: the synth stage needs synthetic_objectron"
        )
    spec = synth_spec(source, experiment.ingest.workers)

    def build(writer: OutputWriter) -> None:
        with tempfile.TemporaryDirectory(prefix="vidssl-synth-") as folder:
            truths = generate(folder, spec)
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
            for path in track(files, len(files), "synth upload", unit="files"):
                relative = path.relative_to(folder).as_posix()
                writer.store.put_file(writer.object_key(f"{RAW_FOLDER}/{relative}"), str(path))
        writer.details["raw"] = writer.relative(RAW_FOLDER)
        writer.details["files"] = len(files)
        writer.details["videos"] = [vars(truth) for truth in truths]

    fields: dict = {"source": source.model_dump()}
    if source.flow_step:
        fields["flow_truth"] = FLOW_TRUTH_VERSION
    return run_cached(
        store_for(experiment),
        SPEC,
        experiment,
        fields,
        [],
        build,
        force=force,
    )
