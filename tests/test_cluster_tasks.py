"""The compiled pipeline's per-task Kubernetes settings and KFP caching: compiled with kfp's
Compiler to a file and read back (the pipeline spec and its `platforms.kubernetes` section), for
an experiment with a full `cluster:` section and for the defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from kfp import compiler

import components
from components import IMAGE, IMAGE_GPU, _gpu_variant
from pipelines.cluster import KFP_CACHING, METRICS_PORT_ENV
from pipelines.experiment import build
from vidssl.config import ConfigError

from .conftest import REPO_ROOT, build_experiment

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
POOL_TAINT = {"key": "pool", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
#: Every key of the cluster section, set for some stage.
FULL_CLUSTER = {
    "s3_secret": "team-s3",
    "env_config_map": "team-env",
    "metrics_port": 9500,
    "default": {
        "cpu": "2",
        "memory": "6Gi",
        "tolerations": [POOL_TAINT],
        "node_selector": {"pool": "ml"},
        "image_pull_policy": "IfNotPresent",
        "timeout_seconds": 7200,
    },
    "ingest": {
        "cpu": "8",
        "memory": "16Gi",
        "retry": {"max_retries": 5, "backoff": "30s", "backoff_factor": 3, "backoff_max": "1800s"},
    },
    "train": {
        "cpu": "16",
        "memory": "64Gi",
        "gpu": 2,
        "shm": "8Gi",
        "tolerations": [GPU_TAINT],
        "node_selector": {"accelerator": "a100"},
        "timeout_seconds": 86400,
        "image_pull_policy": "Always",
    },
    "export": {"gpu": 1, "shm": "1Gi"},
}
#: The tasks of TINY_EXPERIMENT (synthetic Objectron data, a train section, a random baseline).
STAGE_TASKS = {"synth", "ingest", "clean", "inspect", "train", "export", "export-random", "bench"}
#: ...and the exit handler's task, which deletes the run's Pushgateway series.
TASKS = {*STAGE_TASKS, "delete-run-metrics"}
S3_ENV = {"VIDSSL_S3_ENDPOINT", "VIDSSL_S3_ACCESS_KEY", "VIDSSL_S3_SECRET_KEY"}


def _compiled(experiment, tmp_path) -> dict[str, dict]:
    """Per task display name: its `task`, its `container` and its `kubernetes` executor config
    (empty when it has none), read from the compiled YAML."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build(experiment), str(package))
    spec, platform = yaml.safe_load_all(package.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {}
    dags = [spec["root"]["dag"]]
    while dags:  # the stages sit in the exit handler's sub-DAG
        for task in dags.pop()["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                dags.append(component["dag"])
                continue
            label = component["executorLabel"]
            tasks[task["taskInfo"]["name"]] = {
                "task": task,
                "component": component,
                "container": spec["deploymentSpec"]["executors"][label]["container"],
                "kubernetes": executors.get(label, {}),
            }
    return tasks


def _by_stage(name: str) -> str:
    if name == "delete-run-metrics":
        return "metrics"
    return "export" if name.startswith("export") else name


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    experiment = build_experiment("s3://vidssl", {"cluster": FULL_CLUSTER})
    return _compiled(experiment, tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return _compiled(build_experiment("s3://vidssl"), tmp_path_factory.mktemp("default"))


def test_every_task_gets_the_s3_credentials_from_the_secret_only(full, default):
    for tasks, secret in ((full, "team-s3"), (default, "vidssl-s3")):
        assert set(tasks) == TASKS
        for name, task in tasks.items():
            (env,) = task["kubernetes"]["secretAsEnv"]
            assert env["secretName"] == secret, name
            assert {(m["secretKey"], m["envVar"]) for m in env["keyToEnv"]} == {
                ("endpoint", "VIDSSL_S3_ENDPOINT"),
                ("access-key", "VIDSSL_S3_ACCESS_KEY"),
                ("secret-key", "VIDSSL_S3_SECRET_KEY"),
            }
            literal = {item["name"] for item in task["container"].get("env", [])}
            assert not literal & S3_ENV, name  # no credential as a literal
            assert task["kubernetes"]["fieldPathAsEnv"] == [  # the `run` label of its metrics
                {"name": "VIDSSL_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}
            ], name


def test_cpu_memory_and_gpus_per_stage(full, default):
    resources = {name: task["container"]["resources"] for name, task in full.items()}
    ingest, bench = resources["ingest"], resources["bench"]
    assert (ingest["resourceCpuLimit"], ingest["resourceMemoryLimit"]) == ("8", "16Gi")
    assert (ingest["resourceCpuRequest"], ingest["resourceMemoryRequest"]) == ("8", "16Gi")
    assert (bench["resourceCpuLimit"], bench["resourceMemoryLimit"]) == ("2", "6Gi")  # default
    gpus = {name: r.get("accelerator") for name, r in resources.items()}
    assert (
        gpus["train"]["resourceType"] == "nvidia.com/gpu" and gpus["train"]["resourceCount"] == "2"
    )
    assert gpus["export"]["resourceCount"] == gpus["export-random"]["resourceCount"] == "1"
    assert {name for name, gpu in gpus.items() if gpu} == {"train", "export", "export-random"}
    defaults = {n: t["container"]["resources"]["resourceMemoryLimit"] for n, t in default.items()}
    assert defaults.pop("delete-run-metrics") == "256Mi"  # the exit task's built-in size
    assert set(defaults.values()) == {"8Gi"}
    assert not any("accelerator" in task["container"]["resources"] for task in default.values())


def test_shm_only_for_the_stages_that_load_batches(full, default):
    for tasks, sizes in (
        (full, {"train": "8Gi", "export": "1Gi"}),
        (default, {"train": "4Gi", "export": "2Gi"}),
    ):
        for name, task in tasks.items():
            mounts = task["kubernetes"].get("emptyDirMounts")
            if _by_stage(name) in sizes:
                assert mounts == [
                    {
                        "volumeName": "dshm",
                        "mountPath": "/dev/shm",
                        "medium": "Memory",
                        "sizeLimit": sizes[_by_stage(name)],
                    }
                ], name
            else:
                assert mounts is None, name


def test_tolerations_and_node_selectors_default_and_per_stage(full, default):
    for name, task in full.items():
        config = task["kubernetes"]
        if name == "train":  # the stage's own lists replace the default's
            assert config["tolerations"] == [GPU_TAINT]
            assert config["nodeSelector"] == {"labels": {"accelerator": "a100"}}
        else:
            assert config["tolerations"] == [POOL_TAINT], name
            assert config["nodeSelector"] == {"labels": {"pool": "ml"}}, name
    for task in default.values():
        assert "tolerations" not in task["kubernetes"] and "nodeSelector" not in task["kubernetes"]


def test_timeouts_and_pull_policy(full, default):
    for name, task in full.items():
        deadline, policy = ("86400", "Always") if name == "train" else ("7200", "IfNotPresent")
        assert task["kubernetes"]["activeDeadlineSeconds"] == deadline, name
        assert task["kubernetes"]["imagePullPolicy"] == policy, name
    for task in default.values():
        assert "activeDeadlineSeconds" not in task["kubernetes"]
        assert "imagePullPolicy" not in task["kubernetes"]


def test_retries_with_backoff_on_ingest_and_export_only(full, default):
    ingest = {
        "maxRetryCount": 5,
        "backoffDuration": "30s",
        "backoffFactor": 3.0,
        "backoffMaxDuration": "1800s",
    }
    built_in = {
        "maxRetryCount": 3,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
    }
    for tasks, expected in (
        (full, {"ingest": ingest, "export": built_in}),
        (default, {"ingest": built_in, "export": built_in}),
    ):
        for name, task in tasks.items():
            assert task["task"].get("retryPolicy") == expected.get(_by_stage(name)), name


def test_kfp_caching_per_task_as_the_table_says(full, default):
    off = {stage for stage, on in KFP_CACHING.items() if not on}
    assert off == {"ingest", "inspect", "bench", "metrics"}
    for tasks in (full, default):
        for name, task in tasks.items():
            enabled = task["task"]["cachingOptions"].get("enableCache", False)
            assert enabled is KFP_CACHING[_by_stage(name)], name


def test_multi_node_train_launches_a_trainjob_with_the_settings_passed_through(
    make_experiment, tmp_path
):
    cluster = {**FULL_CLUSTER, "train": {**FULL_CLUSTER["train"], "nodes": 4}}
    tasks = _compiled(make_experiment({"cluster": cluster}), tmp_path)
    train = tasks["train"]
    assert train["task"]["componentRef"]["name"] == "comp-train-on-trainer"
    assert train["component"]["taskConfigPassthroughs"] == [
        {"field": "RESOURCES"},  # to the TrainJob's nodes only: this pod only watches
        {"field": "KUBERNETES_TOLERATIONS"},
        {"field": "KUBERNETES_NODE_SELECTOR"},
        {"field": "ENV", "applyToTask": True},  # the S3 Secret: there and here
    ]
    # What passes through: the resources, tolerations and node selector of the stage, and the
    # env: the Secret, the ConfigMap and the metrics port (the nodes serve the metrics).
    assert train["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    assert train["kubernetes"]["tolerations"] == [GPU_TAINT]
    assert train["kubernetes"]["configMapAsEnv"][0]["configMapName"] == "team-env"
    assert _env(train) == {METRICS_PORT_ENV: "9500"}
    # On the nodes (the TrainJob), not on this pod, which only watches: /dev/shm, the GPU image,
    # the label and annotation that get a pod scraped (this one serves no metrics).
    assert "emptyDirMounts" not in train["kubernetes"]
    assert "podMetadata" not in train["kubernetes"]
    image = train["task"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
    assert (image, train["container"]["image"]) == (IMAGE_GPU, IMAGE)
    assert tasks["export"]["task"]["componentRef"]["name"] == "comp-export"


def _env(task: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in task["container"].get("env", [])}


def test_every_task_reads_the_pushgateway_and_store_from_the_optional_env_config_map(
    full, default, make_experiment, tmp_path
):
    for tasks, config_map in ((full, "team-env"), (default, "vidssl-env")):
        for name, task in tasks.items():
            assert task["kubernetes"]["configMapAsEnv"] == [
                {
                    "configMapName": config_map,
                    "configMapNameParameter": {"runtimeValue": {"constant": config_map}},
                    "keyToEnv": [
                        {"configMapKey": "pushgateway", "envVar": "VIDSSL_PUSHGATEWAY"},
                        {"configMapKey": "store-uri", "envVar": "VIDSSL_STORE_URI"},
                    ],
                    # A missing ConfigMap or key must not keep the pod from starting (the KFP
                    # 2.16 driver copies this onto the env var's configMapKeyRef).
                    "optional": True,
                }
            ], name
    none = _compiled(make_experiment({"cluster": {"env_config_map": ""}}), tmp_path)
    assert set(none) == TASKS
    assert not any("configMapAsEnv" in task["kubernetes"] for task in none.values())


def test_only_the_train_pod_is_labelled_and_annotated_for_scraping_with_its_port(full, default):
    for tasks, port in ((full, "9500"), (default, "9400")):  # cluster.metrics_port, its default
        for name, task in tasks.items():
            metadata = task["kubernetes"].get("podMetadata")
            if name == "train":
                assert metadata == {
                    "labels": {"vidssl.io/metrics": "true"},
                    "annotations": {"vidssl.io/metrics-port": port},
                }
                assert _env(task) == {METRICS_PORT_ENV: port}
            else:
                assert metadata is None, name
                assert METRICS_PORT_ENV not in _env(task), name


def test_train_metrics_port_wins_and_port_zero_scrapes_nothing(make_experiment, tmp_path):
    own = _compiled(
        make_experiment({"cluster": {"metrics_port": 9500}}, train__metrics_port=9100),
        tmp_path / "own",
    )["train"]
    assert own["kubernetes"]["podMetadata"]["annotations"] == {"vidssl.io/metrics-port": "9100"}
    assert _env(own) == {METRICS_PORT_ENV: "9100"}
    off = _compiled(make_experiment({"cluster": {"metrics_port": 0}}), tmp_path / "off")
    for name, task in off.items():
        assert "podMetadata" not in task["kubernetes"], name
        assert METRICS_PORT_ENV not in _env(task), name


def test_gpu_tasks_run_the_gpu_image_and_the_others_the_cpu_image(full, default):
    assert IMAGE_GPU and IMAGE_GPU != IMAGE
    images = {name: task["container"]["image"] for name, task in full.items()}
    assert {name for name, image in images.items() if image == IMAGE_GPU} == {
        "train",
        "export",
        "export-random",
    }
    assert {name for name, image in images.items() if image == IMAGE} == {
        "synth",
        "ingest",
        "clean",
        "inspect",
        "bench",
        "delete-run-metrics",
    }
    assert {task["container"]["image"] for task in default.values()} == {IMAGE}


def test_the_gpu_image_is_the_tag_plus_gpu_or_vidssl_image_gpu():
    assert _gpu_variant("ghcr.io/vidssl/vidssl-python:0.3.0") == (
        "ghcr.io/vidssl/vidssl-python:0.3.0-gpu"
    )
    assert _gpu_variant("localhost:5000/vidssl:dev") == "localhost:5000/vidssl:dev-gpu"
    digest = "ghcr.io/vidssl/vidssl-python@sha256:" + "0" * 64
    assert _gpu_variant(digest) is None  # a digest's GPU variant cannot be derived
    assert _gpu_variant("localhost:5000/vidssl") is None  # no tag
    # Read once, at import, from the hook Job's environment (as the chart compiles).
    code = "import components; print(components.IMAGE, components.IMAGE_GPU)"
    for env, expected in (
        ({"VIDSSL_IMAGE": "r/v:1"}, "r/v:1 r/v:1-gpu"),
        ({"VIDSSL_IMAGE": digest, "VIDSSL_IMAGE_GPU": "r/v@sha256:1"}, f"{digest} r/v@sha256:1"),
        ({"VIDSSL_IMAGE": digest}, f"{digest} None"),
    ):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("VIDSSL_IMAGE")}
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**environ, **env},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.split() == expected.split()


def test_a_gpu_task_without_a_gpu_image_is_an_error_naming_the_key(
    make_experiment, tmp_path, monkeypatch
):
    monkeypatch.setattr(components, "IMAGE_GPU", None)  # VIDSSL_IMAGE pinned by digest
    with pytest.raises(ConfigError) as error:
        _compiled(make_experiment({"cluster": {"export": {"gpu": 1}}}), tmp_path)
    assert "cluster.export.gpu" in str(error.value) and "VIDSSL_IMAGE_GPU" in str(error.value)
    cpu_only = _compiled(make_experiment(), tmp_path)  # no GPU task: no GPU image needed
    assert {task["container"]["image"] for task in cpu_only.values()} == {IMAGE}


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"trian": {"gpu": 1}}, "cluster.trian: unknown key"),
        ({"train": {"gpus": 1}}, "cluster.train.gpus: unknown key"),
        (
            {"default": {"tolerations": [{"key": "a", "efect": "NoSchedule"}]}},
            "cluster.default.tolerations.0.efect: unknown key",
        ),
        (
            {"ingest": {"retry": {"max_retries": 2, "backof": "5s"}}},
            "cluster.ingest.retry.backof: unknown key",
        ),
        ({"resources": {"default": {"cpu": "1"}}}, "cluster.resources was replaced"),
        ({"export": {"memory": "8GB"}}, "'8GB' is not a Kubernetes quantity"),
        ({"train": {"nodes": 0}}, "cluster.train.nodes: Input should be greater than or equal"),
        ({"default": {"image_pull_policy": "always"}}, "cluster.default.image_pull_policy"),
        ({"train": {"memory": "4Gi", "shm": "8Gi"}}, "cluster.train: shm 8Gi is above memory 4Gi"),
        ({"env_config_map": "Vidssl_Env"}, "cluster.env_config_map: String should match pattern"),
        ({"metrics_port": 70000}, "cluster.metrics_port: Input should be less than or equal"),
    ],
)
def test_a_wrong_cluster_key_is_an_error_naming_it(make_experiment, cluster, message):
    with pytest.raises(ConfigError) as error:
        make_experiment({"cluster": cluster})
    assert message in str(error.value)


def test_the_run_s_metrics_are_deleted_when_the_run_ends_failed_or_not(tmp_path):
    """The clean-up is the exit handler's task: it waits for every stage (in the handler's
    sub-DAG) to end, whatever their outcome, and KFP never serves it from its cache."""
    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build(build_experiment("s3://vidssl")), str(package))
    spec = next(yaml.safe_load_all(package.read_text()))
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"delete-run-metrics", "exit-handler-1"}
    cleanup = root["delete-run-metrics"]
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    assert cleanup["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert cleanup["cachingOptions"].get("enableCache", False) is False
    handler = spec["components"][root["exit-handler-1"]["componentRef"]["name"]]
    assert {t["taskInfo"]["name"] for t in handler["dag"]["tasks"].values()} == STAGE_TASKS
