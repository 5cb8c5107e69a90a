"""KFP component: ingest videos into clip shards (`vidssl.stages.ingest`)."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(config_json: str, source_url: str, force: bool) -> str:
    """Returns the URL of the clip-shard output; `source_url` locates generated data."""
    import logging

    from vidssl.config import experiment_from_json
    from vidssl.stages import ingest as stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    experiment = experiment_from_json(config_json)
    return stage.run(experiment, source_url=source_url or None, force=force).url
