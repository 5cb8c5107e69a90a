"""`siampose`: [synth ->] ingest -> [clean ->] train -> export (trained encoder and baselines),
-> bench, plus an inspect report of the clips trained on. Objectron sources are cleaned, UCF101
is not; the synthetic source adds the synth stage in front."""

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


def build(experiment: Experiment):
    config_json = experiment.model_dump_json()
    synthetic = experiment.dataset.source.kind == "synthetic_objectron"
    objectron = experiment.dataset.source.kind in ("objectron", "synthetic_objectron")

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
        clips_url = clips.output
        if objectron:  # UCF101 and other whole-frame sources have no annotations to clean
            cleaned = on_cluster(
                clean(config_json=config_json, clips_url=clips_url, force=force),
                "clean",
                experiment,
            )
            clips_url = cleaned.outputs["Output"]
        report = on_cluster(
            inspect(config_json=config_json, clips_url=clips_url, run_id=run_id),
            "inspect",
            experiment,
        )
        model = on_cluster(
            train(config_json=config_json, clips_url=clips_url, force=force), "train", experiment
        )
        trained = on_cluster(
            export(config_json=config_json, clips_url=clips_url, model_url=model.outputs["Output"],
                   baseline="", force=force),
            "export", experiment,
        )  # fmt: skip
        baselines = {}
        for baseline in experiment.export.baselines:
            baselines[baseline] = on_cluster(
                export(config_json=config_json, clips_url=clips_url, model_url="",
                       baseline=baseline, force=force),
                "export", experiment,
            ).set_display_name(f"export-{baseline}")  # fmt: skip
        scores = on_cluster(
            bench(config_json=config_json, trained_url=trained.output,
                  random_url=baselines["random"].output if "random" in baselines else "",
                  imagenet_url=baselines["imagenet"].output if "imagenet" in baselines else "",
                  clips_url=clips_url, run_id=run_id),
            "bench", experiment,
        )  # fmt: skip
        scores.after(report)
        return scores.outputs["Output"]

    return siampose_pipeline
