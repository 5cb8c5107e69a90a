"""What a task asks of the cluster, in one place: `on_cluster` gives every task its Kubernetes
settings from the experiment's `cluster:` section (vidssl.config.ClusterConfig) and its KFP
caching choice from `KFP_CACHING`.

Per task: CPU and memory (request = limit), GPUs (`set_accelerator_type` +
`set_accelerator_limit`), /dev/shm as a memory emptyDir for the stages with DataLoader workers,
tolerations, node selectors, a pod deadline, retries with backoff, the image pull policy, the
S3 credentials from a Secret (never in the YAML), the chart's environment from a ConfigMap
(`cluster.env_config_map`: the Pushgateway address), and the GPU image for the tasks that ask
for GPUs. The train task's pods are scraped by the chart's PodMonitor: the label
`vidssl.io/metrics: "true"`, the annotation `vidssl.io/metrics-port` and $VIDSSL_METRICS_PORT
(`train.metrics_port`, else `cluster.metrics_port`; 0: none of them). A task that only launches
a TrainJob passes the env to its nodes, which carry the label and annotation instead of it
(vidssl.cluster.trainjob): it serves no metrics itself. `kfp.local` ignores all of it (task env
included); the compiled YAML carries it to Kubeflow.

Caching. KFP keys its cache on the component and its input strings, never on the data behind a
URL, and a hit skips the pod altogether. Our own stage cache (the digest, vidssl.stages.base)
runs under it in every task that does run. So KFP caching stays on only where an input string
names its content: the config alone, or an upstream output at
`datasets/<dataset>/<stage>/<digest>/` (content-addressed). Two limits follow: a KFP cache hit
returns a URL even if someone deleted that output from the store since, and two runs with
`force=True` share a cache key; both are answered by submitting with caching off
(`kfp.Client.create_run_from_pipeline_package(..., enable_caching=False)`), which overrides
this table.
"""

from kfp import dsl, kubernetes

import components
from vidssl.cluster import S3_SECRET_KEYS
from vidssl.cluster.trainjob import (
    CONFIG_MAP_ENV,
    scrape_metadata,
    scrape_port,
)
from vidssl.config import ConfigError, Experiment
from vidssl.metrics import METRICS_PORT_ENV, RUN_ID_ENV

#: The memory emptyDir mounted at /dev/shm (PyTorch DataLoader workers pass batches through it).
SHM_VOLUME = "dshm"

#: KFP caching per stage: on where the task's inputs name their content, off where they do not.
KFP_CACHING: dict[str, bool] = {
    # Generated from the config alone (seed, sizes, categories): the same string, the same data.
    "synth": True,
    # Reads dataset.source, a folder or bucket whose videos can change under the same URL: a KFP
    # hit would hand back the old shards. Off: the task runs, and the stage's digest (which
    # hashes the source listing: paths, sizes, labels) finds the output when nothing changed.
    "ingest": False,
    # Input: ingest's output URL, content-addressed.
    "clean": True,
    # Input: the clips' content-addressed URL; the flow settings are in the config string.
    "flow": True,
    # Writes runs/<experiment>/<run_id>/ (not content-addressed): a re-run with the same run_id
    # must write its report again; the task is cheap.
    "inspect": False,
    # Inputs: the config and clean's or ingest's content-addressed URL. A hit saves scheduling a
    # GPU pod (or a TrainJob) only to find the finished output.
    "train": True,
    # Inputs: the clips' and the model's content-addressed URLs, or a baseline name.
    "export": True,
    # Writes the run's report under runs/<experiment>/<run_id>/ and logs the run's KFP metrics.
    "bench": False,
    # The exit task deleting the run's Pushgateway series: the same strings every run.
    "metrics": False,
}


def image_for(experiment: Experiment, stage: str) -> str:
    """The image `stage`'s training or work runs in: the GPU variant (components.IMAGE_GPU) when
    `cluster.<stage>` asks for GPUs, the CPU image otherwise. For a TrainJob (train with
    `cluster.train.nodes > 1`), the image of its nodes; the launching task keeps the CPU one."""
    if not experiment.cluster.for_stage(stage).gpu:
        return components.IMAGE
    if not components.IMAGE_GPU:
        raise ConfigError(
            f"cluster.{stage}.gpu asks for GPUs, and VIDSSL_IMAGE ({components.IMAGE}) has no tag "
            "to derive the GPU image from (pinned by digest?): set VIDSSL_IMAGE_GPU"
        )
    return components.IMAGE_GPU


def on_cluster(
    task: dsl.PipelineTask, stage: str, experiment: Experiment, *, launches_trainjob: bool = False
) -> dsl.PipelineTask:
    """Give `task` (one of `stage`'s) its Kubernetes settings and caching choice.

    `launches_trainjob`: the task only launches and watches a TrainJob (train with
    `cluster.train.nodes > 1`). Its CPU, memory, GPUs, tolerations and node selector are then
    passed through to the TrainJob's nodes (the component's `task_config_passthroughs`), and
    /dev/shm, the GPU image and the scraping label and annotation go there, not here
    (vidssl.cluster.trainjob); its env (the Secret, the ConfigMap, the metrics port) goes to both.
    """
    settings = experiment.cluster.for_stage(stage)
    if settings.gpu and not launches_trainjob:
        task.set_container_image(image_for(experiment, stage))
    task.set_cpu_request(settings.cpu).set_cpu_limit(settings.cpu)
    task.set_memory_request(settings.memory).set_memory_limit(settings.memory)
    if settings.gpu:
        task.set_accelerator_type(settings.accelerator).set_accelerator_limit(settings.gpu)
    if settings.has_shm and not launches_trainjob:
        kubernetes.empty_dir_mount(
            task,
            volume_name=SHM_VOLUME,
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=settings.shm,
        )
    for toleration in settings.tolerations:
        kubernetes.add_toleration(task, **toleration.model_dump(exclude_none=True))
    for label, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    if settings.timeout_seconds:
        kubernetes.set_timeout(task, settings.timeout_seconds)
    if settings.retry.max_retries:
        retry = settings.retry
        task.set_retry(
            num_retries=retry.max_retries,
            backoff_duration=retry.backoff,
            backoff_factor=retry.backoff_factor,
            backoff_max_duration=retry.backoff_max,
        )
    if settings.image_pull_policy:
        kubernetes.set_image_pull_policy(task, settings.image_pull_policy)
    use_cluster_env(task, experiment)
    if stage == "train":
        _scraped(task, experiment, launches_trainjob=launches_trainjob)
    task.set_caching_options(enable_caching=KFP_CACHING[stage])
    task.set_display_name(stage)
    return task


#: Where a KFP task pod finds its run id (the driver labels every pod it starts).
KFP_RUN_ID_FIELD = "metadata.labels['pipeline/runid']"


def use_cluster_env(task: dsl.PipelineTask, experiment: Experiment) -> dsl.PipelineTask:
    """Give `task` the S3 credentials from `cluster.s3_secret`, its KFP run id as
    VIDSSL_RUN_ID, and the Pushgateway address and store URI from `cluster.env_config_map` (the
    chart's ConfigMap, CONFIG_MAP_ENV). The ConfigMap is optional: without it (or a key) the pod
    still starts, with that variable unset: nothing is pushed, the experiment's `store.uri`
    holds."""
    cluster = experiment.cluster
    kubernetes.use_secret_as_env(
        task, secret_name=cluster.s3_secret, secret_key_to_env=S3_SECRET_KEYS
    )
    # The KFP run id (the label KFP's launcher puts on every pod): the `run` label of metrics.
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=KFP_RUN_ID_FIELD)
    if cluster.env_config_map:
        kubernetes.use_config_map_as_env(
            task,
            config_map_name=cluster.env_config_map,
            config_map_key_to_env=CONFIG_MAP_ENV,
            optional=True,
        )
    return task


def _scraped(task: dsl.PipelineTask, experiment: Experiment, *, launches_trainjob: bool) -> None:
    """The train task's metrics port in $VIDSSL_METRICS_PORT and, on a pod that trains, the
    PodMonitor's label and port annotation (a TrainJob's nodes get them from the manifest)."""
    port = scrape_port(experiment)
    if not port:
        return
    task.set_env_variable(METRICS_PORT_ENV, str(port))
    if launches_trainjob:
        return
    metadata = scrape_metadata(experiment)
    for key, value in metadata["labels"].items():
        kubernetes.add_pod_label(task, label_key=key, label_value=value)
    for key, value in metadata["annotations"].items():
        kubernetes.add_pod_annotation(task, annotation_key=key, annotation_value=value)
