"""KFP component: embed every frame with a frozen encoder (`vidssl.stages.export`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(config_json: str, clips_url: str, model_url: str, baseline: str, force: bool) -> str:
    """Returns the URL of the embedding shards; give a trained `model_url` or a `baseline`."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import export as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = stage.run(
        experiment_from_json(config_json),
        clips_url,
        model_url=model_url or None,
        baseline=baseline or None,
        force=force,
    )
    return output.url
