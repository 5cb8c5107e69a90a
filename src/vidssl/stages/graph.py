"""An experiment's stage graph, decided in one place: the data stages in order, whether it
trains, and the exports the bench compares. The KFP pipeline (`pipelines/experiment.py`) and the
in-process runner (`vidssl.stages.prepare`) both walk it; neither compares source kinds.

    [synth ->] ingest -> [clean ->] inspect
                                  -> [flow ->] train -> export -------> bench   (with `train:`)
                                  -> export-<baseline> (each one) --->

The flow stage (point tracks of the clips) runs when the training sampler reads tracks
(`train.sampler.needs_tracks`); its output goes to train and bench beside the clips.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidssl.config import Experiment

#: The stage every dataset goes through; a source names the stages it adds around it.
INGEST = "ingest"


@dataclass(frozen=True)
class ExportPlan:
    """One export: the trained model (`baseline` None) or a baseline encoder, and the label the
    bench shows it under."""

    label: str
    baseline: str | None = None

    @property
    def task_name(self) -> str:
        """The pipeline task's display name: `export`, `export-random`, ..."""
        return f"export-{self.baseline}" if self.baseline else "export"


@dataclass(frozen=True)
class StageGraph:
    """`data_stages` run in order, each reading the previous one's output; with `trains`, the
    clips they leave are trained on, then every plan in `exports` embeds them for the bench.
    With `tracks`, the flow stage tracks points through the clips first, for train and bench."""

    data_stages: tuple[str, ...]
    trains: bool
    exports: tuple[ExportPlan, ...]
    tracks: bool = False

    def stages(self) -> tuple[str, ...]:
        """Every stage the pipeline runs tasks of, by `cluster:` stage name, in order (the
        metrics clean-up task runs at the end of every run)."""
        flow = ("flow",) if self.tracks else ()
        trained = ("train", "export", "bench") if self.trains else ()
        return (*self.data_stages, "inspect", *flow, *trained, "metrics")


def data_stages(experiment: Experiment) -> tuple[str, ...]:
    """The stages that turn the dataset into the clips everything else reads, in order."""
    source = experiment.dataset.source
    return (*source.before_ingest, INGEST, *source.after_ingest)


def baseline_label(baseline: str) -> str:
    """How the bench names a baseline's embeddings: `random embeddings`."""
    return f"{baseline} embeddings"


def export_plans(experiment: Experiment) -> tuple[ExportPlan, ...]:
    """The trained model first, then each of `export.baselines`; none without training."""
    if experiment.train is None:
        return ()
    baselines = (ExportPlan(baseline_label(b), b) for b in experiment.export.baselines)
    return (ExportPlan(experiment.train.label()), *baselines)


def needs_tracks(experiment: Experiment) -> bool:
    """Whether the experiment trains with a sampler that reads the flow stage's tracks."""
    train = experiment.train
    return train is not None and bool(getattr(train.sampler, "needs_tracks", False))


def stage_graph(experiment: Experiment) -> StageGraph:
    return StageGraph(
        data_stages=data_stages(experiment),
        trains=experiment.train is not None,
        exports=export_plans(experiment),
        tracks=needs_tracks(experiment),
    )
