"""The clips an experiment trains on, stage by stage in this process: [synth ->] ingest ->
[clean], as the `siampose` pipeline's data steps run them (for benchmarks and tests that need
the data without the pipeline runner)."""

from __future__ import annotations

from vidssl.config import Experiment
from vidssl.stages import clean, ingest, synth


def prepared_clips(experiment: Experiment) -> str:
    """URL of the experiment's training clips (every stage cached by its digest)."""
    kind = experiment.dataset.source.kind
    source_url = synth.raw_url(synth.run(experiment)) if kind == "synthetic_objectron" else None
    clips_url = ingest.run(experiment, source_url=source_url).url
    if kind in ("objectron", "synthetic_objectron"):
        clips_url = clean.run(experiment, clips_url).url
    return clips_url
