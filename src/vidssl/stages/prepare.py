"""The clips an experiment trains on, its data stages run in this process in the order the
stage graph gives ([synth ->] ingest -> [clean], `vidssl.stages.graph`), as the pipeline's data
tasks run them (for benchmarks and tests that need the data without the pipeline runner), and
the point tracks through them (the flow stage) for samplers that read tracks."""

from __future__ import annotations

from collections.abc import Callable

from vidssl.config import Experiment
from vidssl.stages import clean, flow, ingest, synth
from vidssl.stages.graph import data_stages, needs_tracks
from vidssl.stages.inputs import check_local_inputs

#: How to run each data stage here: (experiment, the previous stage's URL or None) -> its URL.
IN_PROCESS: dict[str, Callable[[Experiment, str | None], str]] = {
    "synth": lambda experiment, _: synth.raw_url(synth.run(experiment)),
    "ingest": lambda experiment, source_url: ingest.run(experiment, source_url=source_url).url,
    "clean": lambda experiment, clips_url: clean.run(experiment, clips_url).url,
}


def prepared_clips(experiment: Experiment) -> str:
    """URL of the experiment's training clips (every stage cached by its digest); refused
    first, naming every key, when a local file or folder these stages read is missing."""
    stages = data_stages(experiment)
    check_local_inputs(experiment, stages)
    url = None
    for stage in stages:
        url = IN_PROCESS[stage](experiment, url)
    return url


def prepared_tracks(experiment: Experiment, clips_url: str) -> str:
    """URL of the flow stage's tracks of `clips_url` (run here, cached by its digest)."""
    check_local_inputs(experiment, ("flow",))
    return flow.run(experiment, clips_url).url


def training_tracks(experiment: Experiment, clips_url: str) -> str:
    """The tracks URL training on `clips_url` reads: the flow stage's output when the sampler
    needs tracks, else "" (as the pipeline passes it to the train task)."""
    return prepared_tracks(experiment, clips_url) if needs_tracks(experiment) else ""
