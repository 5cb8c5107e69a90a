"""Where training runs, chosen from `cluster.train`: in this process (at most one GPU), under
torchrun in this pod (several GPUs), or as a Kubeflow Trainer TrainJob (several nodes) that this
process creates, watches and reports on. Every way runs the same `vidssl train` (the stage, DDP
under torchrun) and ends with the stage's own output: a distributed run publishes it, and the
stage, asked again here, finds it in its cache.

The TrainJob is read through the Kubernetes API (`CustomObjectsApi`: create, get, delete).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidssl.cluster import EXPERIMENT_JSON_ENV
from vidssl.cluster.trainjob import GROUP, PLURAL, VERSION, train_command, trainjob_manifest
from vidssl.config import ConfigError, Experiment
from vidssl.errors import VidsslError

log = logging.getLogger(__name__)

#: The namespace a TrainJob goes to: this variable, else the pod's own namespace.
NAMESPACE_ENV = "VIDSSL_TRAINJOB_NAMESPACE"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Set by KFP in every task pod: the TrainJob is owned by the pod that launched it.
POD_NAME_ENV, POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"


class TrainJobFailed(VidsslError, RuntimeError):
    """The TrainJob failed, was deleted, or its training published nothing; the message says
    which TrainJob and gives its reason and message."""


def run_train(
    experiment: Experiment,
    clips_url: str,
    *,
    force: bool = False,
    tracks_url: str = "",
    image: str = "",
    task_config: Any = None,
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Train as `cluster.train` says and return the stage's output (vidssl.stages.train).
    `tracks_url`: the flow stage's tracks of the clips, for samplers that need them.

    `image` (the task's own) and `task_config` (kfp's pass-through of the task's settings) are
    for the TrainJob; `api` is a `kubernetes.client.CustomObjectsApi` (default: in-cluster)."""
    from vidssl.stages import train as stage

    settings = experiment.cluster.for_stage("train")
    nodes = experiment.cluster.train.nodes
    if nodes > 1:
        if not image:
            raise ConfigError("cluster.train.nodes > 1: the TrainJob needs the task's image")
        api = api or _in_cluster_api()
        manifest = trainjob_manifest(
            experiment,
            clips_url,
            image=image,
            namespace=namespace(),
            force=force,
            tracks_url=tracks_url,
            task_config=task_config,
            owner=_launching_pod(),
        )
        watch_trainjob(
            api, manifest, poll_seconds=experiment.cluster.train.poll_seconds, sleep=sleep
        )
    elif settings.gpu > 1:
        run_torchrun(experiment, clips_url, force=force, procs=settings.gpu, tracks_url=tracks_url)
    else:
        return stage.run(experiment, clips_url, force=force, tracks_url=tracks_url)
    output = stage.published(experiment, clips_url, tracks_url=tracks_url)
    if output is None:
        raise TrainJobFailed(
            f"train: the distributed run on {nodes} node(s) ended without publishing a model "
            f"for {clips_url}; see its log"
        )
    return output


def run_torchrun(
    experiment: Experiment, clips_url: str, *, force: bool, procs: int, tracks_url: str = ""
) -> None:
    """`train_command` with `procs` processes in this pod; its output goes to this task's log."""
    command = train_command(clips_url, force=force, procs_per_node=procs, tracks_url=tracks_url)
    command[0] = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, EXPERIMENT_JSON_ENV: experiment.model_dump_json()}
    log.info("train: %d processes: %s", procs, " ".join(command))
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise TrainJobFailed(f"torchrun with {procs} processes exited with {result.returncode}")


def namespace() -> str:
    """$VIDSSL_TRAINJOB_NAMESPACE, else this pod's namespace (its service account's)."""
    if os.environ.get(NAMESPACE_ENV):
        return os.environ[NAMESPACE_ENV]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise ConfigError(
        f"cluster.train.nodes > 1 trains on Kubeflow Trainer, which needs a cluster: no "
        f"{SERVICE_ACCOUNT_NAMESPACE} (not in a pod) and no {NAMESPACE_ENV}; locally, set "
        "cluster.train.nodes: 1"
    )


def _in_cluster_api() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()
    return client.CustomObjectsApi()


def _launching_pod() -> dict[str, str] | None:
    name, uid = os.environ.get(POD_NAME_ENV), os.environ.get(POD_UID_ENV)
    return {"name": name, "uid": uid} if name and uid else None


def watch_trainjob(
    api: Any,
    manifest: dict[str, Any],
    *,
    poll_seconds: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the TrainJob (or adopt a running one of the same name), log each change of its
    conditions and nodes, and return it once Complete; raise TrainJobFailed with its reason and
    message once Failed. A TrainJob of the same name that already finished is replaced (a retry,
    or `--force`). Stopped (SIGTERM: the run was cancelled or the pod's deadline passed), it
    deletes the TrainJob it was watching."""
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    jobs = _TrainJobs(api, ns)
    created = jobs.create_or_adopt(manifest)
    log.info(
        "train: TrainJob %s/%s %s (%d nodes)",
        ns,
        name,
        created,
        manifest["spec"]["trainer"]["numNodes"],
    )
    seen: set[tuple] = set()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    finished = False
    try:
        while True:
            job = jobs.get(name)
            if job is None:
                raise TrainJobFailed(f"TrainJob {ns}/{name} was deleted while training")
            for line in _news(job, seen):
                log.info("train: TrainJob %s: %s", name, line)
            state, condition = terminal_state(job)
            if state == "Complete":
                finished = True
                return job
            if state == "Failed":
                finished = True
                raise TrainJobFailed(
                    f"TrainJob {ns}/{name} failed: {condition.get('reason', '?')}: "
                    f"{condition.get('message', '')}".rstrip(": ")
                )
            sleep(poll_seconds)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if not finished:
            log.warning("train: stopped; deleting TrainJob %s/%s", ns, name)
            jobs.delete(name)


class _Stopped(BaseException):
    """SIGTERM while watching (a BaseException: nothing on the way catches it)."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(f"signal {signum}")


def terminal_state(job: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """("Complete" | "Failed", its condition) once the TrainJob finished, else (None, {})."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"], condition
    return None, {}


def _news(job: dict[str, Any], seen: set[tuple]) -> list[str]:
    """Log lines for the conditions and per-job counts not reported yet."""
    status = job.get("status", {})
    lines = []
    for c in status.get("conditions", []):
        key = ("condition", c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        if key not in seen:
            seen.add(key)
            lines.append(
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
            )
    for j in status.get("jobsStatus", []):
        counts = tuple(j.get(k, 0) for k in ("active", "ready", "succeeded", "failed"))
        key = ("jobs", j.get("name"), *counts)
        if key not in seen:
            seen.add(key)
            lines.append(
                "{} pods: active {}, ready {}, succeeded {}, failed {}".format(
                    j.get("name"), *counts
                )
            )
    return lines


class _TrainJobs:
    """TrainJobs of one namespace through `CustomObjectsApi`."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self._where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL}

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(name=name, **self._where)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                name=name, propagation_policy="Foreground", **self._where
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create_or_adopt(self, manifest: dict[str, Any], wait_seconds: float = 120) -> str:
        """Create; a running TrainJob of the same name is adopted, a finished one replaced."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        deadline = time.monotonic() + wait_seconds
        replaced = False
        while True:
            try:
                self.api.create_namespaced_custom_object(body=manifest, **self._where)
                return "created, replacing the finished one" if replaced else "created"
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = self.get(name)
            terminating = existing is not None and "deletionTimestamp" in existing["metadata"]
            if existing is not None and not terminating:
                if terminal_state(existing)[0] is None:
                    return "already running: watching it"
                log.info("train: TrainJob %s finished before; replacing it", name)
                self.delete(name)
                replaced = True
                continue
            if time.monotonic() > deadline:
                raise TrainJobFailed(
                    f"TrainJob {self.namespace}/{name}: the old one of that "
                    f"name was not gone after {wait_seconds:.0f} s"
                )
            time.sleep(1)  # being deleted (its pods first)


def log_train_metrics(output: Any, metrics: Any) -> None:
    """The last epoch's numbers and the step count, as KFP metrics (`metrics.log_metric`)."""
    history = output.manifest.details["history"]
    if history:
        for name in ("loss", "collapse_std", "knn_accuracy", "samples_per_second"):
            metrics.log_metric(name, float(history[-1][name]))
    metrics.log_metric("steps", output.manifest.details["steps"])
