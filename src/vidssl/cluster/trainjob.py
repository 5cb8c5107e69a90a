"""The torchrun command that trains (one function for one pod and for every TrainJob node), and
the Kubeflow Trainer v2 `TrainJob` that runs it on `cluster.train.nodes` nodes.

The TrainJob follows the API of Kubeflow Trainer v2.3 (`trainer.kubeflow.org/v1alpha1`): the
`torch-distributed` ClusterTrainingRuntime runs our image and command on `numNodes` pods and
gives torchrun its rendezvous through the `PET_*` environment (PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR, ...), so the command carries no node flags. Settings the runtime has no
`trainer` field for (tolerations, node selector, /dev/shm, and the pod label and annotation that
get the nodes scraped) go in as a `runtimePatches` entry of our own.

Scraping. The chart's PodMonitor scrapes pods labelled `vidssl.io/metrics: "true"` at the port
their annotation `vidssl.io/metrics-port` names (KFP declares no container port), keeping the
`node` container of Job completion index 0 (global rank 0 serves; `scrape_port` says which
port). TrainJob v2.3 has no `spec.labels`/`spec.annotations`; what reaches the node *pods* is the
pod template's metadata in a runtime patch,
`runtimePatches[].trainingRuntimeSpec.template.spec.replicatedJobs[].template.spec.template.metadata`
(PodTemplatePatch.metadata, merged into the JobSet's pod template by strategic merge patch);
the patch's JobSet-level `template.metadata` labels only the JobSet.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from vidssl.cluster import EXPERIMENT_JSON_ENV, S3_SECRET_KEYS
from vidssl.config import STORE_URI_ENV, Experiment, Resources
from vidssl.metrics import METRICS_PORT_ENV, PUSHGATEWAY_ENV, RUN_ID_ENV

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
#: The replicated job and its container in the torch-distributed runtime.
NODE = "node"
#: Our entry in `spec.runtimePatches` (each writer owns the entry under its manager name).
PATCH_MANAGER = "vidssl.io/kfp-train"
SHM_VOLUME = "dshm"
#: A Kubernetes object name: RFC 1035 label (the TrainJob CRD's own rule), at most 63 chars.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63

#: The pod label the chart's PodMonitor selects, and the annotation naming the port it scrapes.
METRICS_LABEL, METRICS_LABEL_VALUE = "vidssl.io/metrics", "true"
METRICS_PORT_ANNOTATION = "vidssl.io/metrics-port"
#: The key of `cluster.env_config_map` (the chart's ConfigMap) holding the Pushgateway address.
PUSHGATEWAY_KEY = "pushgateway"
#: Every key of that ConfigMap -> the variable a task reads it as: the Pushgateway, and the
#: store the deployment made (it overrides the experiment's `store.uri`, as VIDSSL_STORE_URI
#: does on one machine). A TrainJob gets the launcher's store URI as a value instead.
CONFIG_MAP_ENV = {PUSHGATEWAY_KEY: PUSHGATEWAY_ENV, "store-uri": STORE_URI_ENV}


def scrape_port(experiment: Experiment) -> int:
    """The port the train pods serve metrics on and are scraped at: `train.metrics_port`, else
    `cluster.metrics_port`; 0: the pods are not scraped (no label, annotation or env)."""
    train_port = experiment.train.metrics_port if experiment.train else 0
    return train_port or experiment.cluster.metrics_port


def scrape_metadata(experiment: Experiment) -> dict[str, dict[str, str]]:
    """The pod `labels` and `annotations` that get a train pod scraped; {} when not scraped."""
    port = scrape_port(experiment)
    if not port:
        return {}
    return {
        "labels": {METRICS_LABEL: METRICS_LABEL_VALUE},
        "annotations": {METRICS_PORT_ANNOTATION: str(port)},
    }


def cluster_env(experiment: Experiment) -> list[dict[str, Any]]:
    """The train pods' environment from the cluster: the metrics port (when scraped), and the
    Pushgateway address from `cluster.env_config_map` (optional: a missing ConfigMap or key
    leaves it unset, and nothing is pushed)."""
    env: list[dict[str, Any]] = []
    if os.environ.get(RUN_ID_ENV):  # the launching pod's run: the run label of the nodes' metrics
        env.append({"name": RUN_ID_ENV, "value": os.environ[RUN_ID_ENV]})
    port = scrape_port(experiment)
    if port:
        env.append({"name": METRICS_PORT_ENV, "value": str(port)})
    config_map = experiment.cluster.env_config_map
    if config_map:
        ref = {"name": config_map, "key": PUSHGATEWAY_KEY, "optional": True}
        env.append({"name": PUSHGATEWAY_ENV, "valueFrom": {"configMapKeyRef": ref}})
    return env


def train_command(
    clips_url: str, *, force: bool, procs_per_node: int | None, tracks_url: str = ""
) -> list[str]:
    """`torchrun ... -m vidssl.cli train --clips URL [--tracks URL]`, the experiment in
    $VIDSSL_EXPERIMENT_JSON.

    `procs_per_node` given: one pod (`--standalone`, that many processes). None: a TrainJob
    node, where the runtime's PET_* environment sets nodes, processes, rank and rendezvous."""
    command = ["torchrun"]
    if procs_per_node is not None:
        command += ["--standalone", f"--nproc_per_node={procs_per_node}"]
    command += ["-m", "vidssl.cli", "train", "--clips", clips_url]
    if tracks_url:
        command += ["--tracks", tracks_url]
    return command + (["--force"] if force else [])


def trainjob_name(experiment: Experiment, clips_url: str, force: bool, tracks_url: str = "") -> str:
    """`vidssl-<experiment>-<hash of the training's inputs>`: the same training (config, clips,
    force) gets the same name, so a retried or concurrent task finds the TrainJob already
    running instead of starting a second one (vidssl.cluster.launch)."""
    inputs = f"{experiment.model_dump_json()}\n{clips_url}\n{force}"
    if tracks_url:  # only then: the names of trainings without tracks stay as they were
        inputs += f"\n{tracks_url}"
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", experiment.name.lower()).strip("-")
    stem = stem[: NAME_MAX - len("vidssl--") - len(digest)].rstrip("-")
    return f"vidssl-{stem}-{digest}" if stem else f"vidssl-{digest}"


def resources_per_node(settings: Resources) -> dict[str, dict[str, str]]:
    """The pod resources of one node, as the task's own pod would get them."""
    requests = {"cpu": settings.cpu, "memory": settings.memory}
    limits = dict(requests)
    if settings.gpu:
        limits[settings.accelerator] = str(settings.gpu)
    return {"requests": requests, "limits": limits}


def secret_env(experiment: Experiment) -> list[dict[str, Any]]:
    """The store's credentials as references to the S3 Secret (never their values)."""
    return [
        {
            "name": env,
            "valueFrom": {"secretKeyRef": {"name": experiment.cluster.s3_secret, "key": key}},
        }
        for key, env in S3_SECRET_KEYS.items()
    ]


def trainjob_manifest(
    experiment: Experiment,
    clips_url: str,
    *,
    image: str,
    namespace: str,
    force: bool = False,
    task_config: Any = None,
    owner: dict[str, str] | None = None,
    tracks_url: str = "",
) -> dict[str, Any]:
    """The TrainJob that trains `experiment` on `clips_url` (and the tracks at `tracks_url`,
    when given) on `cluster.train.nodes` nodes.

    Each node runs `image` with `train_command` and `cluster.train`'s cpu, memory and GPUs
    (`numProcPerNode`: one process per GPU, one on CPU), tolerations, node selector and /dev/shm;
    the S3 credentials come from the Secret, the Pushgateway address from the env ConfigMap, and
    the node pods carry the label and annotation that get them scraped (`scrape_metadata`, with
    $VIDSSL_METRICS_PORT). `task_config` (a `kfp.dsl.TaskConfig`, filled by
    the KFP backend from the task's own settings): its resources, env, tolerations and node
    selector are used where it has them, the experiment's otherwise (`kfp.local`, older
    backends). `owner`: the launching pod (`name`, `uid`), so deleting it deletes the TrainJob.
    """
    cluster = experiment.cluster
    settings = cluster.for_stage("train")
    passed = _passed_through(task_config)
    env = [
        {"name": EXPERIMENT_JSON_ENV, "value": experiment.model_dump_json()},
        {"name": STORE_URI_ENV, "value": experiment.store_uri()},
    ]
    # The task's env as KFP passed it through (the Secret's and the ConfigMap's references and
    # the metrics port, as on_cluster set them), else the same from the config (kfp.local).
    theirs = passed.get("env") or [*secret_env(experiment), *cluster_env(experiment)]
    env += [item for item in theirs if item["name"] not in {e["name"] for e in env}]
    trainer = {
        "image": image,
        "command": train_command(
            clips_url, force=force, procs_per_node=None, tracks_url=tracks_url
        ),
        "numNodes": cluster.train.nodes,
        "numProcPerNode": max(settings.gpu, 1),
        "resourcesPerNode": passed.get("resources") or resources_per_node(settings),
        "env": env,
    }
    metadata: dict[str, Any] = {
        "name": trainjob_name(experiment, clips_url, force, tracks_url),
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/managed-by": "vidssl",
            "app.kubernetes.io/component": "train",
            "vidssl.io/experiment": experiment.name.replace("_", "-")[:63].rstrip("-"),
        },
    }
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", **owner}]
    spec: dict[str, Any] = {
        "runtimeRef": {
            "name": cluster.train.trainer_runtime,
            "apiGroup": GROUP,
            "kind": "ClusterTrainingRuntime",
        },
        "trainer": trainer,
    }
    if settings.timeout_seconds:
        spec["activeDeadlineSeconds"] = settings.timeout_seconds
    pod_patch = _pod_patch(
        settings,
        tolerations=passed.get("tolerations"),
        node_selector=passed.get("nodeSelector"),
    )
    pod_metadata = scrape_metadata(experiment)
    if pod_patch or pod_metadata:
        spec["runtimePatches"] = [_runtime_patch(pod_patch, pod_metadata)]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


def _passed_through(task_config: Any) -> dict[str, Any]:
    """The non-empty fields of a kfp TaskConfig, under their Kubernetes names."""
    if task_config is None:
        return {}
    fields = {
        "resources": getattr(task_config, "resources", None),
        "env": getattr(task_config, "env", None),
        "tolerations": getattr(task_config, "tolerations", None),
        "nodeSelector": getattr(task_config, "node_selector", None),
    }
    if fields["resources"] and not any(fields["resources"].values()):
        fields["resources"] = None  # {"limits": {}, "requests": {}}: nothing was set
    return {key: value for key, value in fields.items() if value}


def _pod_patch(
    settings: Resources, *, tolerations: list | None, node_selector: dict | None
) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    tolerations = tolerations or [_toleration(t.model_dump()) for t in settings.tolerations]
    if tolerations:
        pod["tolerations"] = tolerations
    node_selector = node_selector or settings.node_selector
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if settings.has_shm:
        pod["volumes"] = [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm}}
        ]
        pod["containers"] = [
            {"name": NODE, "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]}
        ]
    return pod


def _toleration(fields: dict[str, Any]) -> dict[str, Any]:
    names = {"toleration_seconds": "tolerationSeconds"}
    return {names.get(k, k): v for k, v in fields.items() if v is not None}


def _runtime_patch(pod: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Our patch of the `node` job's pod template: its `metadata` (labels, annotations: they
    reach the pods) and its `spec`, each only when it has something."""
    template = {key: value for key, value in (("metadata", metadata), ("spec", pod)) if value}
    node_job = {"name": NODE, "template": {"spec": {"template": template}}}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}},
    }
