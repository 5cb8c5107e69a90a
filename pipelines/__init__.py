"""KFP pipelines, one builder per `pipeline:` name an experiment can ask for."""

from collections.abc import Callable

from vidssl.config import Experiment

PipelineBuilder = Callable[[Experiment], Callable]


def builder(name: str) -> PipelineBuilder:
    from pipelines import smoke

    builders: dict[str, PipelineBuilder] = {"smoke": smoke.build}
    return builders[name]
