"""KFP component: generate the synthetic Objectron dataset (`vidssl.stages.synth`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def synth(config_json: str, force: bool) -> str:
    """Returns the URL of the generated dataset (Objectron layout)."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import synth as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return stage.raw_url(stage.run(experiment_from_json(config_json), force=force))
