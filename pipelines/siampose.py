"""`siampose`: [synth ->] ingest -> clean -> inspect on Objectron-format data.

The learning stages (train, export, bench) join this pipeline as they land; the synthetic
source adds the synth stage in front, real Objectron is read where `dataset.source.root` says.
"""

from kfp import dsl

from components.clean import clean
from components.ingest import ingest
from components.inspect import inspect
from components.synth import synth
from pipelines.cluster import on_cluster
from vidssl.config import Experiment


def build(experiment: Experiment):
    config_json = experiment.model_dump_json()
    synthetic = experiment.dataset.source.kind == "synthetic_objectron"

    @dsl.pipeline(name=f"vidssl-{experiment.name}", description=experiment.description)
    def siampose_pipeline(
        config_json: str = config_json, run_id: str = "", force: bool = False
    ) -> str:
        source_url = ""
        if synthetic:
            source_url = on_cluster(
                synth(config_json=config_json, force=force), "synth", experiment
            ).output
        clips = on_cluster(
            ingest(config_json=config_json, source_url=source_url, force=force),
            "ingest",
            experiment,
        )
        cleaned = on_cluster(
            clean(config_json=config_json, clips_url=clips.output, force=force), "clean", experiment
        )
        report = on_cluster(
            inspect(config_json=config_json, clips_url=cleaned.outputs["Output"], run_id=run_id),
            "inspect",
            experiment,
        )
        return report.outputs["Output"]

    return siampose_pipeline
