"""`ingest`: the data plane end to end: ingest a dataset's videos, read the shards back."""

from kfp import dsl

from components.ingest import ingest
from components.inspect import inspect
from pipelines.cluster import on_cluster
from vidssl.config import Experiment


def build(experiment: Experiment):
    config_json = experiment.model_dump_json()

    @dsl.pipeline(name=f"vidssl-{experiment.name}", description=experiment.description)
    def ingest_pipeline(
        config_json: str = config_json, run_id: str = "", force: bool = False
    ) -> str:
        clips = on_cluster(
            ingest(config_json=config_json, source_url="", force=force), "ingest", experiment
        )
        report = on_cluster(
            inspect(config_json=config_json, clips_url=clips.output, run_id=run_id),
            "inspect",
            experiment,
        )
        return report.outputs["Output"]

    return ingest_pipeline
