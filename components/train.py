"""KFP components: self-supervised training (`vidssl.stages.train`), placed as `cluster.train`
says (vidssl.cluster.launch).

`train` trains in its own pod: in process with at most one GPU, under torchrun with more.
`train_on_trainer` (when `cluster.train.nodes > 1`) creates a Kubeflow Trainer TrainJob of that
many nodes, watches it and fails with its reason; KFP passes the task's resources, tolerations
and node selector through to the TrainJob (`task_config_passthroughs`) instead of giving them to
this small pod, and its environment (the S3 Secret) to both.
"""

from kfp import dsl

from components import IMAGE

#: Task settings that go to the TrainJob's nodes: resources, tolerations and node selector only
#: there (the watching pod needs no GPU), the environment there and here.
TRAINJOB_PASSTHROUGHS = [
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.RESOURCES, apply_to_task=False),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_TOLERATIONS),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    config_json: str,
    clips_url: str,
    force: bool,
    metrics: dsl.Output[dsl.Metrics],
    tracks_url: str = "",
) -> str:
    """Returns the URL of the trained encoder (final.pt); logs the last epoch as KFP metrics.
    `tracks_url`: the flow stage's tracks of these clips (samplers that learn from tracks)."""
    import logging

    from vidssl.cluster.launch import log_train_metrics, run_train
    from vidssl.config import experiment_from_json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = run_train(
        experiment_from_json(config_json), clips_url, force=force, tracks_url=tracks_url
    )
    log_train_metrics(output, metrics)
    return output.model_url


@dsl.component(
    base_image=IMAGE, install_kfp_package=False, task_config_passthroughs=TRAINJOB_PASSTHROUGHS
)
def train_on_trainer(
    config_json: str,
    clips_url: str,
    force: bool,
    image: str,
    metrics: dsl.Output[dsl.Metrics],
    task_config: dsl.TaskConfig,
    tracks_url: str = "",
) -> str:
    """Trains on a TrainJob of `cluster.train.nodes` nodes running `image` (this task's own);
    returns the URL of the trained encoder and logs the last epoch as KFP metrics."""
    import logging

    from vidssl.cluster.launch import log_train_metrics, run_train
    from vidssl.config import experiment_from_json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    experiment = experiment_from_json(config_json)
    output = run_train(
        experiment,
        clips_url,
        force=force,
        tracks_url=tracks_url,
        image=image,
        task_config=task_config,
    )
    log_train_metrics(output, metrics)
    return output.model_url
