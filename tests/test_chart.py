"""The Helm chart charts/vidssl: lint, render, validate every manifest, and check what it says.

Real helm and kubernetes-validate (`make tools` / `make setup`); custom resources against the
upstream CRDs' schemas in tests/crds. The hook and helm-test scripts run for real against the
session's SeaweedFS and a real Pushgateway.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from vidssl.store.s3 import S3Store

from .manifests import (
    CHART,
    REPO_ROOT,
    FakeKubeAPI,
    helm,
    is_custom,
    named,
    of_kind,
    pod_specs,
    render,
    template_args,
    validate_core,
    validate_custom_resource,
)

VALUES_DIR = Path(__file__).resolve().parent / "chart_values"
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
#: None = the chart's defaults.
CASES = [None, *VALUES_FILES]
CASE_IDS = ["default", *(path.stem for path in VALUES_FILES)]
EXTERNAL = VALUES_DIR / "external-s3.yaml"
GPU = VALUES_DIR / "gpu-multinode.yaml"
DASHBOARDS = ("training", "stages", "store")
SCHEDULE_KEYS = {"name", "experiment", "cron", "max_concurrency", "enabled"}


def _files(case: Path | None) -> tuple[Path, ...]:
    return () if case is None else (case,)


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _strings(tree: object) -> set[str]:
    """Every string in a YAML tree (keys and values)."""
    if isinstance(tree, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in tree.items()))
    if isinstance(tree, list):
        return set().union(set(), *(_strings(v) for v in tree))
    return {tree} if isinstance(tree, str) else set()


def test_values_files_are_the_three_cases() -> None:
    assert {path.stem for path in VALUES_FILES} == {"external-s3", "gpu-multinode"}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_lint_strict(case: Path | None) -> None:
    args = ["lint", "--strict", CHART]
    for path in _files(case):
        args += ["--values", path]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_manifest_validates(case: Path | None, tmp_path: Path) -> None:
    manifests = render(_files(case))
    custom = [doc for doc in manifests if is_custom(doc)]
    core = [doc for doc in manifests if not is_custom(doc)]
    result = validate_core(core, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(core), result.stdout
    for doc in custom:
        validate_custom_resource(doc)
    kinds = sorted({doc["kind"] for doc in manifests})
    print(
        f"\nchart manifests [{CASE_IDS[CASES.index(case)]}]: {len(manifests)} "
        f"({len(core)} core, {len(custom)} custom): {', '.join(kinds)}"
    )


def test_validators_reject_a_misspelt_field(tmp_path: Path) -> None:
    """The validation above can fail: a field the API does not have is an error."""
    manifests = render()
    statefulset = of_kind(manifests, "StatefulSet")[0]
    statefulset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = validate_core([statefulset], tmp_path)
    assert result.returncode != 0 and "imagePullPolicyy" in result.stdout + result.stderr
    monitor = of_kind(manifests, "PodMonitor")[0]
    monitor["spec"]["podMetricsEndpoints"][0]["honourLabels"] = True
    with pytest.raises(jsonschema.ValidationError, match="honourLabels"):
        validate_custom_resource(monitor)
    monitor = of_kind(manifests, "ServiceMonitor")[0]
    del monitor["spec"]["endpoints"]
    with pytest.raises(jsonschema.ValidationError, match="endpoints"):
        validate_custom_resource(monitor)


@pytest.mark.parametrize(
    ("setting", "named_in_error"),
    [
        ("pushgateway.enabled=yes", "/pushgateway/enabled"),
        ("seaweedfs.volumeSizeLimitMB=big", "/seaweedfs/volumeSizeLimitMB"),
        ("kfp.host=ml-pipeline:8888", "/kfp/host"),
        ("surprise=1", "surprise"),
        ("monitoring.extra=1", "extra"),
        ("pipelines[0]=Not A Name", "/pipelines/0"),
        (
            "schedules[0].name=nightly,schedules[0].experiment=smoke,schedules[0].cron=0 2 * * *",
            "/schedules/0/cron",
        ),
        (
            "schedules[0].name=Nightly_Run,schedules[0].experiment=smoke,"
            "schedules[0].cron=0 0 2 * * *",
            "/schedules/0/name",
        ),
    ],
)
def test_schema_rejects_bad_values(setting: str, named_in_error: str) -> None:
    result = helm(*template_args(settings=(setting,)), check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert named_in_error in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("settings", "named_in_error"),
    [
        (("seaweedfs.enabled=false",), "s3.existingSecret"),
        (
            (
                "kfp.sync=false",
                "schedules[0].name=a,schedules[0].experiment=smoke,schedules[0].cron=0 0 2 * * *",
            ),
            "kfp.sync",
        ),
        (
            (
                "pipelines[0]=smoke",
                "schedules[0].name=a,schedules[0].experiment=smoke,schedules[0].cron=0 0 2 * * *",
                "schedules[1].name=a,schedules[1].experiment=smoke,schedules[1].cron=0 0 3 * * *",
            ),
            "schedules[1].name",
        ),
    ],
)
def test_inconsistent_values_fail_naming_the_key(
    settings: tuple[str, ...], named_in_error: str
) -> None:
    result = helm(*template_args(settings=settings), check=False)
    assert result.returncode != 0 and named_in_error in result.stderr, result.stderr


def test_generated_secret_has_the_three_keys_and_is_kept() -> None:
    first, second = render(namespace="kubeflow"), render(namespace="kubeflow")
    secret = named(first, "Secret", "vidssl-s3")
    assert set(secret["data"]) == {"endpoint", "access-key", "secret-key"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    service = named(first, "Service", "ci-vidssl-seaweedfs")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "s3")
    assert data["endpoint"] == f"http://ci-vidssl-seaweedfs.kubeflow.svc.cluster.local:{port}"
    assert len(data["access-key"]) >= 16 and len(data["secret-key"]) >= 40
    # Drawn at random when there is nothing to keep (helm template cannot `lookup`)...
    again = named(second, "Secret", "vidssl-s3")["data"]
    assert again["access-key"] != secret["data"]["access-key"]
    assert again["secret-key"] != secret["data"]["secret-key"]
    # ... never a default written in values.yaml.
    defaults = _strings(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert not defaults & {data["access-key"], data["secret-key"]}
    # The template writes back what `lookup` finds (see secret-s3.yaml).
    template = (CHART / "templates" / "secret-s3.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace .Values.s3.secretName' in template


def _kept_secret(access: str, secret: str, release: str = "ci") -> dict:
    """The Secret an earlier install of `release` left in namespace kubeflow."""
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "vidssl-s3",
            "namespace": "kubeflow",
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release,
                "meta.helm.sh/release-namespace": "kubeflow",
                "helm.sh/resource-policy": "keep",
            },
        },
        "data": {
            "endpoint": encode("http://old-endpoint:8333"),
            "access-key": encode(access),
            "secret-key": encode(secret),
        },
    }


def _render_against(api: FakeKubeAPI, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`helm template --dry-run=server` (where `lookup` reads the cluster) against `api`."""
    args = template_args(namespace="kubeflow")
    args += ["--dry-run=server", "--disable-openapi-validation", "--kube-apiserver", api.url]
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    return helm(*args, check=False, env=env)


def test_upgrade_keeps_the_generated_credentials(tmp_path: Path) -> None:
    """The real helm runs the chart's `lookup` against an API server that holds the Secret of
    an earlier install: the credentials come back unchanged, the endpoint is rendered anew."""
    access, secret = "vidsslkeptaccess01", "kept-" + "s" * 40
    with FakeKubeAPI([_kept_secret(access, secret)]) as api:
        result = _render_against(api, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "/api/v1/namespaces/kubeflow/secrets/vidssl-s3" in api.requests
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    data = named(manifests, "Secret", "vidssl-s3")["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in data.items()}
    assert decoded == {
        "endpoint": "http://ci-vidssl-seaweedfs.kubeflow.svc.cluster.local:8333",
        "access-key": access,
        "secret-key": secret,
    }
    # With no Secret in the cluster (a first install), a new pair is drawn.
    with FakeKubeAPI([]) as api:
        result = _render_against(api, tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = named([d for d in yaml.safe_load_all(result.stdout) if d], "Secret", "vidssl-s3")
    assert base64.b64decode(fresh["data"]["access-key"]).decode() != access


def test_a_foreign_secret_of_the_same_name_is_not_taken_over(tmp_path: Path) -> None:
    """A `vidssl-s3` that no Helm release owns (made by hand) stops the install: use it
    through s3.existingSecret instead."""
    foreign = _kept_secret("handmadeaccess0001", "h" * 40)
    foreign["metadata"].pop("labels")
    foreign["metadata"].pop("annotations")
    with FakeKubeAPI([foreign]) as api:
        result = _render_against(api, tmp_path)
    assert result.returncode != 0
    assert 'Secret "vidssl-s3"' in result.stderr and "ownership metadata" in result.stderr


def test_values_yaml_holds_no_credential() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["s3"]["existingSecret"] == ""
    text = (CHART / "values.yaml").read_text().lower()
    assert not re.search(r"^\s*(access|secret)[-_]?key\s*:", text, re.MULTILINE)


def test_seaweedfs_and_pipelines_share_the_secret() -> None:
    manifests = render()
    statefulset = named(manifests, "StatefulSet", "ci-vidssl-seaweedfs")
    env = _env(statefulset["spec"]["template"]["spec"]["containers"][0])
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "vidssl-s3",
        "key": "access-key",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "vidssl-s3",
        "key": "secret-key",
    }
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "chrislusf/seaweedfs:"
    )


def test_external_store_renders_no_seaweedfs_and_no_secret() -> None:
    manifests = render((EXTERNAL,))
    assert not of_kind(manifests, "Secret")
    assert not of_kind(manifests, "StatefulSet")
    assert not [
        doc
        for doc in manifests
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "seaweedfs"
    ]
    refs = {
        item["valueFrom"]["secretKeyRef"]["name"]
        for spec in pod_specs(manifests).values()
        for container in spec["containers"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert refs == {"minio-credentials"}
    bucket_job = named(manifests, "Job", "ci-vidssl-bucket")
    env = _env(bucket_job["spec"]["template"]["spec"]["containers"][0])
    assert env["VIDSSL_BUCKET"]["value"] == "vidssl-prod"
    assert named(manifests, "ConfigMap", "vidssl-env")["data"]["store-uri"] == "s3://vidssl-prod"


def test_schedules_configmap_has_the_reconciler_shape() -> None:
    manifests = render((GPU,))
    spec = json.loads(
        named(manifests, "ConfigMap", "ci-vidssl-schedules")["data"]["schedules.json"]
    )
    assert set(spec) == {"kfp_experiment", "pipelines", "schedules"}
    assert spec["kfp_experiment"] == "vidssl-nightly"
    assert spec["pipelines"] == ["siampose_objectron_nearby", "moco_temporal_trackingnet"]
    assert spec["schedules"] == [
        {
            "name": "nightly-siampose",
            "experiment": "siampose_objectron_nearby",
            "cron": "0 0 2 * * *",
            "max_concurrency": 1,
            "enabled": True,
        },
        {
            "name": "weekly-moco",
            "experiment": "moco_temporal_trackingnet",
            "cron": "0 30 3 * * 0",
            "max_concurrency": 2,
            "enabled": False,
        },
    ]
    for schedule in spec["schedules"]:
        assert set(schedule) == SCHEDULE_KEYS
        assert len(schedule["cron"].split(" ")) == 6
    default = json.loads(
        named(render(), "ConfigMap", "ci-vidssl-schedules")["data"]["schedules.json"]
    )
    assert default == {"kfp_experiment": "vidssl", "pipelines": [], "schedules": []}


def test_schedules_file_parses_with_the_reconciler(tmp_path: Path) -> None:
    """The file the hook hands to `python -m pipelines.schedule sync --file` is one it reads."""
    from pipelines.schedule import read_schedule_file

    for case in CASES:
        data = named(render(_files(case)), "ConfigMap", "ci-vidssl-schedules")["data"]
        path = tmp_path / "schedules.json"
        path.write_text(data["schedules.json"])
        spec = read_schedule_file(path)
        values = yaml.safe_load(case.read_text()) if case else {}
        assert [s.name for s in spec.schedules] == [s["name"] for s in values.get("schedules", [])]
        assert [s.cron for s in spec.schedules] == [s["cron"] for s in values.get("schedules", [])]


def test_values_files_name_real_experiments() -> None:
    for path in VALUES_FILES:
        values = yaml.safe_load(path.read_text())
        for name in values.get("pipelines", []):
            assert (REPO_ROOT / "pipelines" / "experiments" / f"{name}.yaml").exists(), (path, name)


def test_sync_hook_job() -> None:
    manifests = render((GPU,), namespace="team-vision")
    job = named(manifests, "Job", "ci-vidssl-sync")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    bucket = named(manifests, "Job", "ci-vidssl-bucket")["metadata"]["annotations"]
    assert int(annotations["helm.sh/hook-weight"]) > int(bucket["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "python",
        "-m",
        "pipelines.schedule",
        "sync",
        "--file",
        "/etc/vidssl/schedules.json",
    ]
    env = _env(container)
    assert env["KFP_HOST"]["value"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert env["KFP_NAMESPACE"]["value"] == "team-vision"
    assert env["VIDSSL_IMAGE"]["value"] == "ghcr.io/vidssl/vidssl-python:0.1.0"
    assert env["VIDSSL_IMAGE_GPU"]["value"] == "ghcr.io/vidssl/vidssl-python:0.1.0-gpu"
    for name, key in [
        ("VIDSSL_S3_ENDPOINT", "endpoint"),
        ("VIDSSL_S3_ACCESS_KEY", "access-key"),
        ("VIDSSL_S3_SECRET_KEY", "secret-key"),
    ]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "vidssl-s3", "key": key}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert mounts["schedules"] == "/etc/vidssl"
    assert volumes["schedules"]["configMap"]["name"] == "ci-vidssl-schedules"
    # Multi-user KFP: the token kfp.Client reads, for the API server's audience.
    assert mounts["kfp-token"] == "/var/run/secrets/kubeflow/pipelines"
    token = volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {
        "path": "token",
        "audience": "pipelines.kubeflow.org",
        "expirationSeconds": 7200,
    }
    assert pod["serviceAccountName"] == "ci-vidssl-hooks"
    default_env = _env(
        named(render(), "Job", "ci-vidssl-sync")["spec"]["template"]["spec"]["containers"][0]
    )
    assert default_env["KFP_NAMESPACE"]["value"] == ""


def test_rbac_is_namespaced_and_least_privilege() -> None:
    for case in CASES:
        manifests = render(_files(case))
        assert not of_kind(manifests, "ClusterRole") and not of_kind(
            manifests, "ClusterRoleBinding"
        )
    assert not of_kind(render(), "Role") and not of_kind(render(), "RoleBinding")
    manifests = render((GPU,), namespace="team-vision")
    role = named(manifests, "Role", "ci-vidssl-trainjobs")
    assert role["metadata"]["namespace"] == "team-vision"
    assert role["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["create", "get", "list", "watch", "delete"],
        },
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs/status"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    binding = named(manifests, "RoleBinding", "ci-vidssl-trainjobs")
    assert binding["roleRef"]["name"] == "ci-vidssl-trainjobs"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-vision"}
    ]
    edit = named(manifests, "RoleBinding", "ci-vidssl-hooks-kfp-edit")
    assert edit["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kubeflow-pipelines-edit",
    }


def test_every_pod_is_locked_down() -> None:
    for case in CASES:
        manifests = render(_files(case))
        specs = pod_specs(manifests)
        assert len(specs) >= 3
        for name, spec in specs.items():
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] > 0, name
            assert spec["automountServiceAccountToken"] is False, name
            tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
            assert tmp and "emptyDir" in tmp[0], name
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert {"requests", "limits"} <= set(container["resources"]), name
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert mounts.get("/tmp") == "tmp", name


def test_scheduling_values_reach_every_pod() -> None:
    values = yaml.safe_load(GPU.read_text())
    for name, spec in pod_specs(render((GPU,))).items():
        assert spec["nodeSelector"] == values["nodeSelector"], name
        assert spec["tolerations"] == values["tolerations"], name
        assert spec["affinity"] == values["affinity"], name
        assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}], name


def test_monitors_carry_the_release_label() -> None:
    manifests = render(settings=("monitoring.release=prom",))
    pod_monitor = named(manifests, "PodMonitor", "ci-vidssl-training")
    assert pod_monitor["metadata"]["labels"]["release"] == "prom"
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {"vidssl.io/metrics": "true"}}
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    address = next(r for r in endpoint["relabelings"] if r.get("targetLabel") == "__address__")
    assert address["sourceLabels"][-1] == "__meta_kubernetes_pod_annotation_vidssl_io_metrics_port"
    assert re.fullmatch(address["regex"], "10.1.2.3;9400")
    assert re.sub(address["regex"], address["replacement"].replace("$", "\\"), "10.1.2.3;9400") == (
        "10.1.2.3:9400"
    )
    pushgateway = named(manifests, "ServiceMonitor", "ci-vidssl-pushgateway")
    assert pushgateway["metadata"]["labels"]["release"] == "prom"
    assert pushgateway["spec"]["endpoints"][0]["honorLabels"] is True
    service = named(manifests, "Service", "ci-vidssl-pushgateway")
    assert pushgateway["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert named(manifests, "ServiceMonitor", "ci-vidssl-seaweedfs")["metadata"]["labels"][
        "release"
    ]
    off = render(settings=("monitoring.enabled=false",))
    assert not [doc for doc in off if doc["kind"] in {"PodMonitor", "ServiceMonitor"}]


def test_pushgateway_address_reaches_the_tasks() -> None:
    from vidssl.cluster.trainjob import CONFIG_MAP_ENV

    env = named(render(), "ConfigMap", "vidssl-env")["data"]
    assert set(env) == set(CONFIG_MAP_ENV)  # every key the chart writes, the pipeline reads
    assert env["pushgateway"] == "ci-vidssl-pushgateway.vidssl.svc.cluster.local:9091"
    off = render(settings=("pushgateway.enabled=false",))
    assert named(off, "ConfigMap", "vidssl-env")["data"]["pushgateway"] == ""
    assert not [doc for doc in off if "pushgateway" in doc["metadata"]["name"]]


def _dashboard_maps(manifests: list) -> dict[str, dict]:
    return {
        doc["metadata"]["name"]: doc
        for doc in of_kind(manifests, "ConfigMap")
        if doc["metadata"]["labels"].get("grafana_dashboard") == "1"
    }


def test_dashboards_render_one_configmap_per_file(tmp_path: Path) -> None:
    """The glob, on a copy of the chart with dashboards of its own."""
    chart = tmp_path / "vidssl"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "dashboards")
    (chart / "dashboards").mkdir()
    panels = {"alpha": {"title": "Alpha", "panels": [{"id": 1, "expr": 'up{job="a"}'}]}}
    panels["beta-two"] = {"title": "Beta", "panels": []}
    for name, board in panels.items():
        (chart / "dashboards" / f"{name}.json").write_text(json.dumps(board, indent=2))
    (chart / "dashboards" / "notes.txt").write_text("not a dashboard")
    maps = _dashboard_maps(render((GPU,), chart=chart))
    assert sorted(maps) == ["ci-vidssl-dashboard-alpha", "ci-vidssl-dashboard-beta-two"]
    for name, board in panels.items():
        doc = maps[f"ci-vidssl-dashboard-{name}"]
        assert doc["metadata"]["namespace"] == "monitoring"
        assert doc["metadata"]["annotations"] == {"grafana_folder": "vidssl"}
        assert json.loads(doc["data"][f"{name}.json"]) == board
    relabelled = render(
        settings=("dashboards.label=dash", "dashboards.labelValue=yes"), chart=chart
    )
    assert all(
        doc["metadata"]["labels"]["dash"] == "yes"
        for doc in of_kind(relabelled, "ConfigMap")
        if "dashboard-" in doc["metadata"]["name"]
    )
    assert not _dashboard_maps(render(settings=("dashboards.enabled=false",), chart=chart))


def test_chart_ships_the_three_dashboards() -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert {path.stem for path in files} >= set(DASHBOARDS), (
        f"charts/vidssl/dashboards/ must hold {', '.join(f'{n}.json' for n in DASHBOARDS)}"
    )
    maps = _dashboard_maps(render())
    assert sorted(maps) == sorted(f"ci-vidssl-dashboard-{path.stem}" for path in files)
    for path in files:
        board = json.loads(maps[f"ci-vidssl-dashboard-{path.stem}"]["data"][path.name])
        assert board == json.loads(path.read_text())


def test_network_policies_admit_clients_and_prometheus() -> None:
    assert not of_kind(render(), "NetworkPolicy")
    manifests = render((GPU,), namespace="vidssl")
    policies = {doc["metadata"]["name"]: doc for doc in of_kind(manifests, "NetworkPolicy")}
    assert set(policies) == {"ci-vidssl-seaweedfs", "ci-vidssl-pushgateway"}
    seaweedfs = policies["ci-vidssl-seaweedfs"]["spec"]
    clients, prometheus = seaweedfs["ingress"]
    names = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in clients["from"]
    }
    assert names == {"vidssl", "team-vision"}
    assert clients["ports"] == [{"protocol": "TCP", "port": 8333}]
    assert prometheus["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}
    }
    assert seaweedfs["policyTypes"] == ["Ingress"]
    external = render((EXTERNAL,))
    assert [doc["metadata"]["name"] for doc in of_kind(external, "NetworkPolicy")] == [
        "ci-vidssl-pushgateway"
    ]


def test_chart_documents_what_it_expects() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = re.search(r'^version = "(.+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == version.group(1)
    expected = " ".join(chart["annotations"].values())
    for needle in ("2.16", "trainer.kubeflow.org/v1alpha1", "PodMonitor", "ServiceMonitor"):
        assert needle in expected
    notes = helm("install", "ci", CHART, "--dry-run=client", "-n", "vidssl").stdout
    for needle in ("port-forward svc/ci-vidssl-seaweedfs 8333:8333", "catch-up is always off"):
        assert needle in notes


# --- The hook and helm-test scripts, run for real -------------------------------------------


def _script(manifests: list, kind: str, name: str) -> tuple[str, dict[str, str]]:
    """The `python -c` program of a rendered pod and its literal env values."""
    doc = named(manifests, kind, name)
    spec = doc["spec"] if kind == "Pod" else doc["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    literal = {k: v["value"] for k, v in _env(container).items() if "value" in v}
    return container["command"][2], literal


def _run(program: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    python = REPO_ROOT / ".venv" / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDSSL_")}
    return subprocess.run(
        [str(python), "-c", program],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bucket_hook_creates_the_bucket_idempotently(s3_server, tmp_path: Path) -> None:
    bucket = f"hook-{uuid.uuid4().hex[:10]}"
    program, literal = _script(render(settings=(f"s3.bucket={bucket}",)), "Job", "ci-vidssl-bucket")
    assert literal["VIDSSL_BUCKET"] == bucket
    env = {**literal, "HOME": str(tmp_path), **s3_server.env()}
    for _ in range(2):  # install, then upgrade
        result = _run(program, env)
        assert result.returncode == 0, result.stderr
        assert f"bucket s3://{bucket}" in result.stdout
    store = S3Store(bucket, s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    store.check()
    store.client.remove_bucket(bucket)
    wrong = {**env, "VIDSSL_S3_SECRET_KEY": "not-the-key", "VIDSSL_WAIT_S": "0"}
    result = _run(program, wrong)
    assert result.returncode == 1 and "VIDSSL_S3_SECRET_KEY" in result.stderr, result.stderr


@pytest.fixture
def pushgateway() -> str:
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "Debian's prometheus-pushgateway is needed: `make system-packages`"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/-/ready", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the Pushgateway did not start"
            time.sleep(0.1)
    yield address
    process.terminate()
    process.wait(timeout=10)


def test_helm_test_pod_checks_store_and_pushgateway(
    s3_server, pushgateway: str, tmp_path: Path
) -> None:
    program, literal = _script(render(), "Pod", "ci-vidssl-test")
    assert literal["VIDSSL_PUSHGATEWAY"] == "ci-vidssl-pushgateway.vidssl.svc.cluster.local:9091"
    env = {**literal, "HOME": str(tmp_path), **s3_server.env(), "VIDSSL_PUSHGATEWAY": pushgateway}
    env["VIDSSL_BUCKET"] = s3_server.bucket
    result = _run(program, env)
    assert result.returncode == 0, result.stderr
    assert "answers with the Secret's credentials" in result.stdout
    assert f"http://{pushgateway}/-/ready answered HTTP 200" in result.stdout
    down = {**env, "VIDSSL_PUSHGATEWAY": "127.0.0.1:1", "VIDSSL_S3_ACCESS_KEY": "nobody"}
    result = _run(program, down)
    assert result.returncode == 1
    assert "store:" in result.stderr and "pushgateway:" in result.stderr, result.stderr


# --- The PodMonitor's relabelling, evaluated by a real Prometheus ---------------------------


def _scrape_config(endpoint: dict, job: str, targets_file: Path) -> dict:
    """The PodMonitor endpoint as a Prometheus scrape job, its relabelings unchanged (only the
    field names in Prometheus' spelling), the Kubernetes discovery replaced by a file."""
    spelling = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    relabel = [{spelling.get(k, k): v for k, v in rule.items()} for rule in endpoint["relabelings"]]
    return {
        "job_name": job,
        "scrape_interval": "1s",
        "metrics_path": endpoint["path"],
        "scheme": endpoint["scheme"],
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }


def _pod_target(container: str, port: int | None, **labels: str) -> dict:
    """What Kubernetes pod discovery gives for one container of a pod with no declared port."""
    meta = {
        "__address__": "127.0.0.1",
        "__meta_kubernetes_pod_ip": "127.0.0.1",
        "__meta_kubernetes_pod_container_name": container,
        "__meta_kubernetes_pod_container_init": "true" if container == "kfp-launcher" else "false",
        "__meta_kubernetes_pod_label_vidssl_io_metrics": "true",
        **{f"__meta_kubernetes_pod_label_{k}": v for k, v in labels.items()},
    }
    if port is not None:
        meta["__meta_kubernetes_pod_annotation_vidssl_io_metrics_port"] = str(port)
    return {"targets": ["127.0.0.1"], "labels": meta}


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_pod_monitor_relabelling_in_prometheus(tmp_path: Path) -> None:
    """Prometheus applies the PodMonitor's relabelings to what pod discovery would give for a
    KFP train pod (containers main, wait, init kfp-launcher), TrainJob node pods 0 and 1, and a
    pod without the port annotation: it scrapes main and node 0, at the annotated port."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is needed: `make system-packages`"
    registry = CollectorRegistry()
    Gauge("vidssl_train_step", "steps", registry=registry).set(7)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port, web_port = sock.getsockname()[1], None
    server, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web_port = sock.getsockname()[1]
    endpoint = named(render(), "PodMonitor", "ci-vidssl-training")["spec"]["podMetricsEndpoints"][0]
    kfp = {"pipeline_runid": "run-42"}
    candidates = {
        "kfp-main": _pod_target("main", metrics_port, **kfp),
        "kfp-wait": _pod_target("wait", metrics_port, **kfp),
        "kfp-init": _pod_target("kfp-launcher", metrics_port, **kfp),
        "node-0": _pod_target("node", metrics_port, batch_kubernetes_io_job_completion_index="0"),
        "node-1": _pod_target("node", metrics_port, batch_kubernetes_io_job_completion_index="1"),
        "no-port": _pod_target("main", None, **kfp),
    }
    for name, target in candidates.items():
        target["labels"]["candidate"] = name
    targets_file = tmp_path / "targets.json"
    targets_file.write_text(json.dumps(list(candidates.values())))
    config = {"scrape_configs": [_scrape_config(endpoint, "training", targets_file)]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{web_port}/api/v1"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                active = _get_json(f"{api}/targets")["data"]["activeTargets"]
                if active and all(t["health"] == "up" for t in active):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not scrape the kept targets"
            time.sleep(0.5)
        kept = {t["labels"]["candidate"]: t for t in active}
        assert sorted(kept) == ["kfp-main", "node-0"]
        assert {t["scrapeUrl"] for t in active} == {f"http://127.0.0.1:{metrics_port}/metrics"}
        assert kept["kfp-main"]["labels"]["kfp_run_id"] == "run-42"
        query = urllib.parse.quote('vidssl_train_step{candidate="kfp-main"}')
        while True:
            result = _get_json(f"{api}/query?query={query}")["data"]["result"]
            if result:
                break
            assert time.monotonic() < deadline, "the scraped series did not appear"
            time.sleep(0.5)
        assert result[0]["value"][1] == "7"
    finally:
        process.terminate()
        process.wait(timeout=15)
        server.shutdown()
