"""The one pipeline every experiment runs; its tasks come from the experiment's stage graph
(`vidssl.stages.graph`): [synth ->] ingest -> [clean ->] inspect, and, with a `train:` section,
train -> export (the trained model) and one export per baseline -> bench."""

from collections.abc import Callable

from kfp import dsl

from components.bench import bench
from components.clean import clean
from components.export import export
from components.ingest import ingest
from components.inspect import inspect
from components.synth import synth
from components.train import train
from pipelines.cluster import on_cluster
from vidssl.config import Experiment
from vidssl.stages.graph import stage_graph

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


def build(experiment: Experiment) -> Callable:
    """The experiment's KFP pipeline (compile it, or call it under `kfp.local`)."""
    graph = stage_graph(experiment)
    config_json = experiment.model_dump_json()

    @dsl.pipeline(name=f"vidssl-{experiment.name}", description=experiment.description)
    def experiment_pipeline(
        config_json: str = config_json, run_id: str = "", force: bool = False
    ) -> str:
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
            return report.outputs["Output"]
        model = on_cluster(
            train(config_json=config_json, clips_url=clips_url, force=force), "train", experiment
        )
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
            bench(config_json=config_json, exports=exports, clips_url=clips_url, run_id=run_id),
            "bench",
            experiment,
        )
        scores.after(report)
        return scores.outputs["Output"]

    return experiment_pipeline
