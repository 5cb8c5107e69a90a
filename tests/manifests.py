"""Rendering the Helm chart and validating what it renders, for the chart tests.

`render()` runs the real `helm template`; `validate_core()` runs the real `kubernetes-validate`
on the built-in kinds; `validate_custom_resource()` checks a custom resource (PodMonitor,
ServiceMonitor, TrainJob, ...) against `tests/crds/<kind lower>.schema.json`, a JSON schema
taken from the upstream CRD. A missing tool fails with the command that installs it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "charts" / "vidssl"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crds"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
#: The Kubernetes version core kinds are validated against (kubectl and helm here are 1.35).
KUBERNETES_VERSION = "1.35.0"

Manifest = dict[str, Any]


def tool(name: str) -> Path:
    """The path of `.venv/bin/<name>`; fails (never skips) when it is missing."""
    path = VENV_BIN / name
    assert path.exists(), f"{path} is missing: `make tools` installs it"
    return path


def helm(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real helm; with `check`, a failure raises with helm's own error."""
    result = subprocess.run(
        [str(tool("helm")), *map(str, args)], capture_output=True, text=True, timeout=60, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def template_args(
    values_files: tuple[Path, ...] = (),
    settings: tuple[str, ...] = (),
    namespace: str = "vidssl",
    release: str = "ci",
    chart: Path = CHART,
) -> list[str | Path]:
    args: list[str | Path] = ["template", release, chart, "--namespace", namespace]
    for path in values_files:
        args += ["--values", path]
    for setting in settings:
        args += ["--set", setting]
    return args


def render(
    values_files: tuple[Path, ...] = (),
    settings: tuple[str, ...] = (),
    namespace: str = "vidssl",
    chart: Path = CHART,
) -> list[Manifest]:
    """The chart's manifests (helm test hooks included), empty documents dropped."""
    out = helm(*template_args(values_files, settings, namespace, chart=chart)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in manifests if doc["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [doc for doc in of_kind(manifests, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def is_custom(doc: Manifest) -> bool:
    """Whether `doc` is a kind kubernetes-validate does not know (a CRD's)."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def validate_custom_resource(doc: Manifest) -> None:
    """Validate a custom resource against tests/crds/<kind lower>.schema.json."""
    path = CRD_SCHEMAS / f"{doc['kind'].lower()}.schema.json"
    assert path.exists(), f"no schema for {doc['kind']}: add {path.relative_to(REPO_ROOT)}"
    jsonschema.validate(doc, json.loads(path.read_text()), cls=jsonschema.Draft7Validator)


def validate_core(manifests: list[Manifest], folder: Path) -> subprocess.CompletedProcess[str]:
    """Run kubernetes-validate --strict on `manifests` (one file each, one process)."""
    paths = []
    for number, doc in enumerate(manifests):
        path = folder / f"{number:03d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    return subprocess.run(
        [str(tool("kubernetes-validate")), "-k", KUBERNETES_VERSION, "--strict", *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )


def pod_specs(manifests: list[Manifest]) -> dict[str, Manifest]:
    """`<Kind>/<name>` -> the pod spec of every workload and bare Pod."""
    specs = {}
    for doc in manifests:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            specs[name] = doc["spec"]
        elif doc["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            specs[name] = doc["spec"]["template"]["spec"]
    return specs


#: Kind -> (group/version, plural) of every kind the chart renders.
API_RESOURCES = {
    "Secret": ("v1", "secrets"),
    "ConfigMap": ("v1", "configmaps"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Pod": ("v1", "pods"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "Job": ("batch/v1", "jobs"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitors"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitors"),
}


class FakeKubeAPI:
    """A read-only Kubernetes API server holding a few objects, for `helm template
    --dry-run=server`: enough discovery for helm to map the chart's kinds, and GET of the
    objects given (everything else is 404). It lets the real helm run the chart's `lookup`."""

    def __init__(self, objects: list[Manifest]) -> None:
        self.objects = {self._path(doc): doc for doc in objects}
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def _path(doc: Manifest) -> str:
        group_version, plural = API_RESOURCES[doc["kind"]]
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return (
            f"{root}/namespaces/{doc['metadata']['namespace']}/{plural}/{doc['metadata']['name']}"
        )

    def _discovery(self, path: str) -> dict | None:
        versions = {gv for gv, _ in API_RESOURCES.values()}
        if path == "/version":
            return {"major": "1", "minor": "35", "gitVersion": "v1.35.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = [
                {
                    "name": gv.split("/")[0],
                    "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                }
                for gv in sorted(versions - {"v1"})
            ]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if group_version not in versions:
            return None
        resources = [
            {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
             "verbs": ["get", "list"]}
            for kind, (gv, plural) in API_RESOURCES.items()
            if gv == group_version
        ]  # fmt: skip
        return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                api.requests.append(path)
                body = api._discovery(path) or api.objects.get(path)
                status = 200 if body else 404
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404}  # fmt: skip
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> FakeKubeAPI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
