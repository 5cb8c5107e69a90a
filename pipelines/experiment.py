"""The one pipeline every experiment runs; its tasks come from the experiment's stage graph
(`vidssl.stages.graph`): [synth ->] ingest -> [clean ->] inspect, and, with a `train:` section,
[flow ->] train -> export (the trained model) and one export per baseline -> bench (flow when
the sampler reads point tracks: its output goes to train and bench); all inside an exit
handler that deletes the run's Pushgateway series when the run ends."""

from collections.abc import Callable

from kfp import dsl

from components.bench import bench
from components.clean import clean
from components.export import export
from components.flow import flow
from components.ingest import ingest
from components.inspect import inspect
from components.metrics import delete_run_metrics
from components.synth import synth
from components.train import train, train_on_trainer
from pipelines.cluster import image_for, on_cluster
from vidssl.config import Experiment
from vidssl.stages.graph import StageGraph, stage_graph

#: Seconds the clean-up waits after the run before deleting its Pushgateway series: more than
#: twice the chart's default scrape interval (monitoring.interval: 30s).
METRICS_GRACE_SECONDS = 75.0
#: The clean-up also deletes this experiment's groups last pushed longer ago than this (runs
#: whose own clean-up never ran: a local run that failed, a deleted pipeline run).
STALE_METRICS_HOURS = 24.0

#: How each data stage becomes a task: (config_json, the previous stage's URL or "", force).
DataTask = Callable[[str, str, bool], dsl.PipelineTask]
DATA_TASKS: dict[str, DataTask] = {
    "synth": lambda config_json, _, force: synth(config_json=config_json, force=force),
    "ingest": lambda config_json, source_url, force: ingest(
        config_json=config_json, source_url=source_url, force=force
    ),
    "clean": lambda config_json, clips_url, force: clean(
        config_json=config_json, clips_url=clips_url, force=force
    ),
}


def _train_task(
    experiment: Experiment, config_json: str, clips_url: str, force: bool, tracks: dict
) -> dsl.PipelineTask:
    """Train in the task's pod, or, with `cluster.train.nodes > 1`, on a Kubeflow Trainer
    TrainJob that the task launches and watches (components/train.py). `tracks`: the flow
    task's output as `tracks_url`, when the sampler reads tracks (else empty)."""
    if experiment.cluster.train.nodes > 1:
        task = train_on_trainer(
            config_json=config_json,
            clips_url=clips_url,
            force=force,
            image=image_for(experiment, "train"),
            **tracks,
        )
        return on_cluster(task, "train", experiment, launches_trainjob=True)
    task = train(config_json=config_json, clips_url=clips_url, force=force, **tracks)
    return on_cluster(task, "train", experiment)


def build(experiment: Experiment) -> Callable:
    """The experiment's KFP pipeline (compile it, or call it under `kfp.local`).

    Every stage runs inside an exit handler whose task deletes the run's series from the
    Pushgateway once the run ends, failed or not (`metrics_grace_seconds` after, so Prometheus
    scrapes the last summaries first). The pipeline returns nothing (KFP refuses an output from
    inside an exit handler): the report is at `runs/<experiment>/<run_id>/` in the store."""
    graph = stage_graph(experiment)
    config_json = experiment.model_dump_json()

    @dsl.pipeline(name=f"vidssl-{experiment.name}", description=experiment.description)
    def experiment_pipeline(
        config_json: str = config_json,
        run_id: str = "",
        force: bool = False,
        metrics_grace_seconds: float = METRICS_GRACE_SECONDS,
    ):
        cleanup = delete_run_metrics(
            experiment_name=experiment.name,
            run_id=run_id,
            grace_seconds=metrics_grace_seconds,
            stale_hours=STALE_METRICS_HOURS,
        )
        on_cluster(cleanup, "metrics", experiment).set_display_name("delete-run-metrics")
        with dsl.ExitHandler(cleanup):
            _stages(experiment, graph, config_json, run_id, force)

    return experiment_pipeline


def _stages(
    experiment: Experiment, graph: StageGraph, config_json: str, run_id: str, force: bool
) -> None:
    clips_url = ""
    for stage in graph.data_stages:
        task = on_cluster(DATA_TASKS[stage](config_json, clips_url, force), stage, experiment)
        clips_url = task.outputs["Output"]
    report = on_cluster(
        inspect(config_json=config_json, clips_url=clips_url, run_id=run_id),
        "inspect",
        experiment,
    )
    if not graph.trains:
        return
    tracks = {}
    if graph.tracks:
        tracked = on_cluster(
            flow(config_json=config_json, clips_url=clips_url, force=force), "flow", experiment
        )
        tracks = {"tracks_url": tracked.outputs["Output"]}
    model = _train_task(experiment, config_json, clips_url, force, tracks)
    exports = {}
    for plan in graph.exports:
        embedded = on_cluster(
            export(config_json=config_json, clips_url=clips_url,
                   model_url="" if plan.baseline else model.outputs["Output"],
                   baseline=plan.baseline or "", force=force),
            "export", experiment,
        ).set_display_name(plan.task_name)  # fmt: skip
        exports[plan.label] = embedded.outputs["Output"]
    scores = on_cluster(
        bench(
            config_json=config_json, exports=exports, clips_url=clips_url, run_id=run_id, **tracks
        ),
        "bench",
        experiment,
    )
    scores.after(report)
