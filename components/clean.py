"""KFP component: clean Objectron clip shards (`vidssl.stages.clean`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def clean(config_json: str, clips_url: str, force: bool, metrics: dsl.Output[dsl.Metrics]) -> str:
    """Returns the URL of the cleaned clip shards; logs what was dropped as KFP metrics."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import clean as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = stage.run(experiment_from_json(config_json), clips_url, force=force)
    report = output.manifest.details["report"]
    metrics.log_metric("frames_in", report["frames_in"])
    metrics.log_metric("frames_kept", report["frames_kept"])
    metrics.log_metric("dropped_fraction", round(report["dropped_fraction"], 4))
    for reason, count in report["dropped_by_reason"].items():
        metrics.log_metric(f"dropped_{reason}", count)
    return output.url
