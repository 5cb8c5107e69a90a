"""Multi-node training on Kubeflow Trainer: the TrainJob manifest against the CRD's schema, the
one torchrun command, and the task's create-watch-report loop against a Kubernetes API server
stand-in on 127.0.0.1 (the real `kubernetes` client talks HTTP to it)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
from kfp import dsl
from kubernetes import client

from tests.conftest import REPO_ROOT
from vidssl.cluster import EXPERIMENT_JSON_ENV
from vidssl.cluster.launch import TrainJobFailed, run_train, watch_trainjob
from vidssl.cluster.trainjob import (
    METRICS_PORT_ENV,
    train_command,
    trainjob_manifest,
    trainjob_name,
)
from vidssl.config import ConfigError, experiment_from_json
from vidssl.errors import VidsslError

SCHEMA = json.loads((REPO_ROOT / "tests" / "crds" / "trainjob.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CLIPS = "s3://vidssl/datasets/tiny/clean/0123456789abcdef"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
#: A cluster section with every key set for train.
MULTI_NODE = {
    "cluster": {
        "s3_secret": "team-s3",
        "env_config_map": "team-env",
        "metrics_port": 9500,
        "default": {"tolerations": [{"key": "pool", "value": "ml", "effect": "NoSchedule"}]},
        "train": {
            "nodes": 3,
            "gpu": 4,
            "cpu": "30",
            "memory": "120Gi",
            "shm": "16Gi",
            "timeout_seconds": 86400,
            "tolerations": [GPU_TAINT],
            "node_selector": {"node.kubernetes.io/instance-type": "p4d.24xlarge"},
            "trainer_runtime": "torch-distributed-gpu",
        },
    }
}


def _manifest(experiment, **kwargs) -> dict:
    return trainjob_manifest(
        experiment, CLIPS, image="registry.example/vidssl:1", namespace="team-a", **kwargs
    )


def _node_template(manifest: dict) -> dict:
    """Our runtime patch's pod template of the `node` job (its `metadata` and `spec`)."""
    (patch,) = manifest["spec"]["runtimePatches"]
    assert patch["manager"] == "vidssl.io/kfp-train"
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    return job["template"]["spec"]["template"]


def _errors(manifest: dict) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in VALIDATOR.iter_errors(manifest)
    ]


def test_the_manifest_follows_the_trainjob_schema_and_carries_the_train_settings(make_experiment):
    experiment = make_experiment(MULTI_NODE)
    manifest = _manifest(experiment, owner={"name": "train-pod", "uid": "1234"})
    assert _errors(manifest) == []
    spec = manifest["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed-gpu",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example/vidssl:1"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "30", "memory": "120Gi"},
        "limits": {"cpu": "30", "memory": "120Gi", "nvidia.com/gpu": "4"},
    }
    assert trainer["command"] == train_command(CLIPS, force=False, procs_per_node=None)
    env = {item["name"]: item for item in trainer["env"]}
    assert experiment_from_json(env[EXPERIMENT_JSON_ENV]["value"]) == experiment
    assert env["VIDSSL_STORE_URI"]["value"] == experiment.store_uri()
    for name, key in (
        ("VIDSSL_S3_ACCESS_KEY", "access-key"),
        ("VIDSSL_S3_SECRET_KEY", "secret-key"),
    ):
        assert env[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": key}},
        }
    assert env[METRICS_PORT_ENV] == {"name": METRICS_PORT_ENV, "value": "9500"}
    assert env["VIDSSL_PUSHGATEWAY"] == {
        "name": "VIDSSL_PUSHGATEWAY",
        "valueFrom": {
            "configMapKeyRef": {"name": "team-env", "key": "pushgateway", "optional": True}
        },
    }
    assert spec["activeDeadlineSeconds"] == 86400
    template = _node_template(manifest)
    # On the node pods (PodTemplatePatch.metadata), where the chart's PodMonitor looks.
    assert template["metadata"] == {
        "labels": {"vidssl.io/metrics": "true"},
        "annotations": {"vidssl.io/metrics-port": "9500"},
    }
    pod = template["spec"]
    assert pod["tolerations"] == [GPU_TAINT]  # the stage's list replaces the default's
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p4d.24xlarge"}
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    ]
    assert pod["containers"] == [
        {"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
    ]
    assert manifest["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "train-pod", "uid": "1234"}
    ]


def test_the_schema_refuses_what_the_api_server_would_refuse_or_drop(make_experiment):
    manifest = _manifest(make_experiment(MULTI_NODE))
    template = _node_template(manifest)
    pod = template["spec"]
    pod["nodeSelecter"] = pod.pop("nodeSelector")  # pruned silently by the API server
    template["metadata"]["annotations"]["vidssl.io/metrics-port"] = 9500  # not a string
    template["metadata"]["label"] = template["metadata"].pop("labels")
    env = {item["name"]: item for item in manifest["spec"]["trainer"]["env"]}
    env["VIDSSL_PUSHGATEWAY"]["valueFrom"]["configMapKeyRef"].pop("key")
    manifest["spec"]["trainer"]["numProcPerNode"] = 0
    manifest["spec"]["runtimeRef"].pop("name")
    manifest["metadata"]["name"] = "Vidssl_Tiny"
    errors = "\n".join(_errors(manifest))
    assert "'nodeSelecter' was unexpected" in errors
    assert "metadata.annotations.vidssl.io/metrics-port: 9500 is not of type 'string'" in errors
    assert "'label' was unexpected" in errors
    assert "configMapKeyRef: 'key' is a required property" in errors
    assert "numProcPerNode: 0 is less than the minimum of 1" in errors
    assert "'name' is a required property" in errors
    assert "metadata.name: 'Vidssl_Tiny' does not match" in errors


def test_the_name_is_a_dns_label_from_the_experiment_and_the_training_inputs(make_experiment):
    long_name = "siampose_objectron_nearby_with_a_name_far_longer_than_kubernetes_allows_x"
    experiment = make_experiment({"name": long_name})
    name = trainjob_name(experiment, CLIPS, force=False)
    assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert name.startswith("vidssl-siampose-objectron-nearby-")
    assert name == trainjob_name(experiment, CLIPS, force=False)  # a retry finds the same job
    assert name != trainjob_name(experiment, CLIPS, force=True)
    assert name != trainjob_name(experiment, CLIPS + "0", force=False)
    assert name != trainjob_name(
        make_experiment({"name": long_name}, train__epochs=3), CLIPS, force=False
    )


def test_one_command_for_one_pod_and_for_every_node():
    pod = train_command(CLIPS, force=True, procs_per_node=2)
    node = train_command(CLIPS, force=True, procs_per_node=None)
    tail = ["-m", "vidssl.cli", "train", "--clips", CLIPS, "--force"]
    assert pod == ["torchrun", "--standalone", "--nproc_per_node=2", *tail]
    assert node == ["torchrun", *tail]  # nodes, rank, rendezvous: the runtime's PET_* env


def test_kfp_task_settings_passed_through_are_used_as_given(make_experiment):
    """What the KFP driver puts in a TaskConfig (backend/src/v2/driver: the task's resources,
    its env with the Secret references, tolerations, node selector) wins over the config's."""
    experiment = make_experiment(MULTI_NODE)
    secret_ref = {
        "name": "VIDSSL_S3_ENDPOINT",
        "valueFrom": {"secretKeyRef": {"name": "other-s3", "key": "endpoint"}},
    }
    task_config = dsl.TaskConfig(
        resources={
            "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "4"},
            "requests": {"cpu": "8", "memory": "32Gi"},
        },
        env=[secret_ref, {"name": EXPERIMENT_JSON_ENV, "value": "stale"}],
        tolerations=[{"key": "spot", "operator": "Exists"}],
        node_selector={"pool": "a100"},
    )
    manifest = _manifest(experiment, task_config=task_config)
    assert _errors(manifest) == []
    trainer = manifest["spec"]["trainer"]
    assert trainer["resourcesPerNode"] == task_config.resources
    env = {item["name"]: item for item in trainer["env"]}
    assert env["VIDSSL_S3_ENDPOINT"] == secret_ref
    assert experiment_from_json(env[EXPERIMENT_JSON_ENV]["value"]) == experiment  # ours wins
    assert len(env) == len(trainer["env"])  # no name twice (the CRD keys env by name)
    pod = _node_template(manifest)["spec"]
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert pod["nodeSelector"] == {"pool": "a100"}
    empty = dsl.TaskConfig(resources={"limits": {}, "requests": {}})  # the driver's "nothing set"
    assert _manifest(experiment, task_config=empty) == _manifest(experiment)


def test_a_single_node_needs_no_runtime_patch(make_experiment):
    experiment = make_experiment(
        {"cluster": {"metrics_port": 0, "train": {"nodes": 2, "shm": "0"}}}
    )
    manifest = _manifest(experiment)
    assert _errors(manifest) == []
    assert (
        "runtimePatches" not in manifest["spec"] and "activeDeadlineSeconds" not in manifest["spec"]
    )
    assert manifest["spec"]["trainer"]["numProcPerNode"] == 1  # CPU: one process, not one per core
    assert manifest["spec"]["trainer"]["resourcesPerNode"]["limits"] == {
        "cpu": "2",
        "memory": "8Gi",
    }


def test_node_pods_are_scraped_at_the_train_port_else_the_cluster_port_else_not_at_all(
    make_experiment,
):
    nodes = {"nodes": 2, "shm": "0"}
    scraped = _manifest(make_experiment({"cluster": {"train": nodes}}))  # the defaults
    assert _errors(scraped) == []
    assert _node_template(scraped) == {  # metadata only: no pod spec to patch
        "metadata": {
            "labels": {"vidssl.io/metrics": "true"},
            "annotations": {"vidssl.io/metrics-port": "9400"},
        }
    }
    env = {item["name"]: item for item in scraped["spec"]["trainer"]["env"]}
    assert env[METRICS_PORT_ENV]["value"] == "9400"
    assert env["VIDSSL_PUSHGATEWAY"]["valueFrom"]["configMapKeyRef"]["name"] == "vidssl-env"
    own = _manifest(
        make_experiment(
            {"cluster": {"metrics_port": 9500, "train": nodes}}, train__metrics_port=9100
        )
    )
    assert _node_template(own)["metadata"]["annotations"] == {"vidssl.io/metrics-port": "9100"}
    off = _manifest(
        make_experiment({"cluster": {"metrics_port": 0, "env_config_map": "", "train": nodes}})
    )
    assert _errors(off) == [] and "runtimePatches" not in off["spec"]
    names = {item["name"] for item in off["spec"]["trainer"]["env"]}
    assert METRICS_PORT_ENV not in names and "VIDSSL_PUSHGATEWAY" not in names
    assert "VIDSSL_S3_SECRET_KEY" in names


def test_the_env_kfp_passes_through_carries_the_config_map_and_metrics_port_as_given(
    make_experiment,
):
    """The KFP 2.16 driver passes the task's env through whole (backend/src/v2/driver/k8s.go:
    the Secret's and the ConfigMap's references, and the container env on_cluster set): the
    manifest uses it as given, not the config's copy."""
    experiment = make_experiment(MULTI_NODE)
    config_map_ref = {
        "name": "VIDSSL_PUSHGATEWAY",
        "valueFrom": {
            "configMapKeyRef": {"name": "other-env", "key": "pushgateway", "optional": True}
        },
    }
    task_config = dsl.TaskConfig(env=[config_map_ref, {"name": METRICS_PORT_ENV, "value": "9600"}])
    manifest = _manifest(experiment, task_config=task_config)
    assert _errors(manifest) == []
    env = {item["name"]: item for item in manifest["spec"]["trainer"]["env"]}
    assert env["VIDSSL_PUSHGATEWAY"] == config_map_ref
    assert env[METRICS_PORT_ENV]["value"] == "9600"
    assert len(env) == len(manifest["spec"]["trainer"]["env"])


# -- the task's loop, against an API server stand-in -----------------------------------------


class FakeTrainJobs:
    """TrainJobs as the API server keeps them: created by POST, each GET shows the next of the
    `statuses` scripted for it (the last one sticks), removed by DELETE."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses = statuses
        self.jobs: dict[str, dict] = {}
        self.reads: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, str | None]:
                match = re.fullmatch(
                    r"/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/"
                    r"([^/]+)/trainjobs(?:/([^/?]+))?(?:\?.*)?",
                    self.path,
                )
                assert match, self.path
                fake.requests.append((self.command, self.path))
                return match.group(1), match.group(2)

            def do_POST(self) -> None:
                _, _ = self._route()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = body["metadata"]["name"]
                if name in fake.jobs:
                    return self._reply(
                        409, {"kind": "Status", "reason": "AlreadyExists", "code": 409}
                    )
                fake.jobs[name] = body
                fake.reads[name] = 0
                self._reply(201, body)

            def do_GET(self) -> None:
                _, name = self._route()
                if name not in fake.jobs:
                    return self._reply(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                step = min(fake.reads[name], len(fake.statuses) - 1)
                fake.reads[name] += 1
                self._reply(200, {**fake.jobs[name], "status": fake.statuses[step]})

            def do_DELETE(self) -> None:
                _, name = self._route()
                if fake.jobs.pop(name, None) is None:
                    return self._reply(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                self._reply(200, {"kind": "Status", "status": "Success"})

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def api_server():
    """Start a FakeTrainJobs server: `api_server(statuses)` -> (fake, CustomObjectsApi)."""
    servers = []

    def start(statuses: list[dict]):
        fake = FakeTrainJobs(statuses)
        server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        return fake, client.CustomObjectsApi(client.ApiClient(config))

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _condition(kind: str, status: str, reason: str, message: str) -> dict:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-23T10:00:00Z",
    }


def _jobs(active: int, ready: int, succeeded: int = 0, failed: int = 0) -> list[dict]:
    return [
        {
            "name": "node",
            "active": active,
            "ready": ready,
            "succeeded": succeeded,
            "failed": failed,
            "suspended": 0,
        }
    ]


RUNNING = [
    {},
    {"jobsStatus": _jobs(active=3, ready=0)},
    {"jobsStatus": _jobs(active=3, ready=3)},
]
COMPLETE = {
    "conditions": [_condition("Complete", "True", "JobSetCompleted", "jobset completed")],
    "jobsStatus": _jobs(active=0, ready=0, succeeded=3),
}
FAILED = {
    "conditions": [
        _condition(
            "Failed", "True", "FailedJobs", "jobset failed: node-1 exited with 137 (OOMKilled)"
        )
    ],
    "jobsStatus": _jobs(active=0, ready=0, failed=1),
}


def test_the_task_creates_the_trainjob_logs_its_progress_and_returns_when_complete(
    api_server, make_experiment, caplog
):
    fake, api = api_server([*RUNNING, COMPLETE])
    manifest = _manifest(make_experiment(MULTI_NODE))
    slept = []
    with caplog.at_level(logging.INFO, logger="vidssl.cluster.launch"):
        job = watch_trainjob(api, manifest, poll_seconds=7, sleep=slept.append)
    name = manifest["metadata"]["name"]
    assert job["status"] == COMPLETE and fake.jobs[name]["spec"] == manifest["spec"]
    assert slept == [7, 7, 7]  # three reads before Complete
    lines = [r.getMessage() for r in caplog.records]
    assert f"train: TrainJob team-a/{name} created (3 nodes)" in lines
    assert f"train: TrainJob {name}: node pods: active 3, ready 3, succeeded 0, failed 0" in lines
    assert f"train: TrainJob {name}: Complete=True JobSetCompleted: jobset completed" in lines
    assert name in fake.jobs  # kept for its logs; a later run of the same training replaces it


def test_a_failed_trainjob_fails_the_task_with_its_reason_and_message(api_server, make_experiment):
    _, api = api_server([*RUNNING[:2], FAILED])
    manifest = _manifest(make_experiment(MULTI_NODE))
    with pytest.raises(TrainJobFailed) as failure:
        watch_trainjob(api, manifest, poll_seconds=0, sleep=lambda _: None)
    name = manifest["metadata"]["name"]
    assert str(failure.value) == (
        f"TrainJob team-a/{name} failed: FailedJobs: jobset failed: node-1 exited with 137 "
        "(OOMKilled)"
    )


def test_a_running_trainjob_is_adopted_and_a_finished_one_replaced(api_server, make_experiment):
    manifest = _manifest(make_experiment(MULTI_NODE))
    name = manifest["metadata"]["name"]
    fake, api = api_server([RUNNING[2], COMPLETE])
    fake.jobs[name], fake.reads[name] = {**manifest, "spec": {"old": True}}, 0  # running
    job = watch_trainjob(api, manifest, poll_seconds=0, sleep=lambda _: None)
    assert job["spec"] == {"old": True}  # adopted: no second training of the same output
    assert [m for m, _ in fake.requests].count("POST") == 1
    # Now finished (Complete, kept): a retry or a forced run replaces it with a new one.
    fake.reads[name] = 1
    fake.requests.clear()
    job = watch_trainjob(api, manifest, poll_seconds=0, sleep=lambda _: None)
    assert job["spec"] == manifest["spec"]
    assert [m for m, _ in fake.requests][:4] == ["POST", "GET", "DELETE", "POST"]


def test_a_trainjob_deleted_under_the_task_fails_it(api_server, make_experiment):
    fake, api = api_server(RUNNING)
    manifest = _manifest(make_experiment(MULTI_NODE))

    def delete_it(_: float) -> None:
        fake.jobs.clear()

    with pytest.raises(TrainJobFailed, match="was deleted while training"):
        watch_trainjob(api, manifest, poll_seconds=0, sleep=delete_it)


def test_a_stopped_task_deletes_its_trainjob(api_server, make_experiment):
    """SIGTERM (run cancelled, pod deadline) or any error while watching: no orphan TrainJob."""
    fake, api = api_server(RUNNING)
    manifest = _manifest(make_experiment(MULTI_NODE))

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        watch_trainjob(api, manifest, poll_seconds=0, sleep=interrupted)
    assert fake.jobs == {} and fake.requests[-1][0] == "DELETE"


def _tracks(tracks_url: str) -> dict:
    return {"tracks": tracks_url} if tracks_url else {}


class StageCalls:
    """Stands in for `vidssl.stages.train.run` (training in this process) and
    `vidssl.stages.train.published` (the look-up after a distributed run): records the calls."""

    def __init__(self, monkeypatch, *, published: bool = True) -> None:
        from vidssl.stages.train import TrainOutput

        self.calls: list[dict] = []
        output = TrainOutput(f"{CLIPS}/../train/d", None, cached=True)

        def run(experiment, clips_url, *, tracks_url="", force=False):
            self.calls.append({"run": clips_url, "force": force, **_tracks(tracks_url)})
            return output

        def look_up(experiment, clips_url, *, tracks_url=""):
            self.calls.append({"published": clips_url, **_tracks(tracks_url)})
            return output if published else None

        monkeypatch.setattr("vidssl.stages.train.run", run)
        monkeypatch.setattr("vidssl.stages.train.published", look_up)


def test_multi_node_training_watches_the_trainjob_then_takes_the_published_output(
    api_server, make_experiment, monkeypatch
):
    """The task: a TrainJob in the namespace from the environment, owned by this pod, watched
    to Complete; then the stage's published output, looked up (a forced run forces the
    TrainJob's training, never a second one here)."""
    stage_calls = StageCalls(monkeypatch)
    monkeypatch.setenv("VIDSSL_TRAINJOB_NAMESPACE", "team-b")
    monkeypatch.setenv("KFP_POD_NAME", "run-1-train-pod")
    monkeypatch.setenv("KFP_POD_UID", "uid-1")
    fake, api = api_server([RUNNING[1], COMPLETE])
    experiment = make_experiment({"cluster": {"train": {"nodes": 2}}})
    output = run_train(experiment, CLIPS, force=True, image="img:1", api=api, sleep=lambda _: 0)
    assert output.cached and stage_calls.calls == [{"published": CLIPS}]
    (job,) = fake.jobs.values()
    assert job["metadata"]["namespace"] == "team-b" and job["spec"]["trainer"]["numNodes"] == 2
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["spec"]["trainer"]["command"][-1] == "--force"
    assert _errors(job) == []


def test_several_gpus_in_one_pod_run_torchrun_with_the_experiment_in_the_environment(
    make_experiment, monkeypatch
):
    stage_calls = StageCalls(monkeypatch)
    started = []

    def fake_run(command, env, check):
        started.append((command, env))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("vidssl.cluster.launch.subprocess.run", fake_run)
    experiment = make_experiment({"cluster": {"train": {"gpu": 2}}})
    run_train(experiment, CLIPS)
    ((command, env),) = started
    assert Path(command[0]).name == "torchrun" and Path(command[0]).exists()
    assert command[1:] == train_command(CLIPS, force=False, procs_per_node=2)[1:]
    assert experiment_from_json(env[EXPERIMENT_JSON_ENV]) == experiment
    assert stage_calls.calls == [{"published": CLIPS}]
    monkeypatch.setattr(
        "vidssl.cluster.launch.subprocess.run",
        lambda command, env, check: subprocess.CompletedProcess(command, 1),
    )
    with pytest.raises(TrainJobFailed, match="torchrun with 2 processes exited with 1"):
        run_train(experiment, CLIPS)


def test_one_gpu_or_none_trains_in_this_process(make_experiment, monkeypatch):
    stage_calls = StageCalls(monkeypatch)
    monkeypatch.setattr("vidssl.cluster.launch.subprocess.run", None)  # never called
    run_train(make_experiment({"cluster": {"train": {"gpu": 1}}}), CLIPS, force=True)
    assert stage_calls.calls == [{"run": CLIPS, "force": True}]


def test_a_distributed_run_that_published_nothing_fails_the_task_and_never_trains_here(
    make_experiment, monkeypatch
):
    stage_calls = StageCalls(monkeypatch, published=False)
    monkeypatch.setattr(
        "vidssl.cluster.launch.subprocess.run",
        lambda command, env, check: subprocess.CompletedProcess(command, 0),
    )
    with pytest.raises(TrainJobFailed, match="ended without publishing a model"):
        run_train(make_experiment({"cluster": {"train": {"gpu": 2}}}), CLIPS)
    assert stage_calls.calls == [{"published": CLIPS}]


def test_vidssl_train_reads_the_experiment_from_the_environment(make_experiment, tmp_path):
    """What every torchrun process runs: `vidssl train --clips URL`, no experiment name."""
    from typer.testing import CliRunner

    from vidssl.cli import app

    experiment = make_experiment()
    missing = f"file://{tmp_path / 'no-clips'}"
    env = {EXPERIMENT_JSON_ENV: experiment.model_dump_json()}
    result = CliRunner().invoke(app, ["train", "--clips", missing], env=env)
    # The experiment was read: the error is about its store's missing clips, not the arguments.
    assert isinstance(result.exception, VidsslError) and "no-clips" in str(result.exception)
    both = CliRunner().invoke(app, ["train", "smoke", "--clips", missing], env=env)
    assert isinstance(both.exception, ConfigError) and "not both" in str(both.exception)
    neither = CliRunner().invoke(app, ["train", "--clips", missing], env={EXPERIMENT_JSON_ENV: ""})
    assert "no experiment" in str(neither.exception)


def test_multi_node_training_outside_a_cluster_says_what_to_do(make_experiment, monkeypatch):
    monkeypatch.delenv("VIDSSL_TRAINJOB_NAMESPACE", raising=False)
    monkeypatch.setattr("vidssl.cluster.launch.SERVICE_ACCOUNT_NAMESPACE", Path("/nonexistent"))
    experiment = make_experiment({"cluster": {"train": {"nodes": 2}}})
    with pytest.raises(ConfigError, match=r"locally, set cluster\.train\.nodes: 1"):
        run_train(experiment, CLIPS, image="img:1", api=object())
