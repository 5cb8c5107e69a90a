"""What a task asks of the cluster: resources from the experiment, S3 credentials from a Secret.

`kfp.local` ignores all of it; the compiled YAML carries it to Kubeflow.
"""

from kfp import dsl, kubernetes

from vidssl.config import Experiment

#: Secret keys -> environment variables the store reads (vidssl.store).
S3_SECRET_KEYS = {
    "endpoint": "VIDSSL_S3_ENDPOINT",
    "access-key": "VIDSSL_S3_ACCESS_KEY",
    "secret-key": "VIDSSL_S3_SECRET_KEY",
}


def on_cluster(task: dsl.PipelineTask, stage: str, experiment: Experiment) -> dsl.PipelineTask:
    resources = experiment.cluster.for_stage(stage)
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if resources.gpu:
        task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpu)
    kubernetes.use_secret_as_env(
        task, secret_name=experiment.cluster.s3_secret, secret_key_to_env=S3_SECRET_KEYS
    )
    task.set_display_name(stage)
    return task
