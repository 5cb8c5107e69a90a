"""KFP pipelines, one builder per `pipeline:` name an experiment can ask for."""

from collections.abc import Callable

from vidssl.config import Experiment

PipelineBuilder = Callable[[Experiment], Callable]


def builder(name: str) -> PipelineBuilder:
    from pipelines import ingest, siampose

    builders: dict[str, PipelineBuilder] = {"ingest": ingest.build, "siampose": siampose.build}
    return builders[name]
