"""KFP component: self-supervised training (`vidssl.stages.train`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(config_json: str, clips_url: str, force: bool, metrics: dsl.Output[dsl.Metrics]) -> str:
    """Returns the URL of the trained encoder (final.pt); logs the last epoch as KFP metrics."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import train as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = stage.run(experiment_from_json(config_json), clips_url, force=force)
    history = output.manifest.details["history"]
    if history:
        for name in ("loss", "collapse_std", "knn_accuracy", "samples_per_second"):
            metrics.log_metric(name, float(history[-1][name]))
    metrics.log_metric("steps", output.manifest.details["steps"])
    return output.model_url
