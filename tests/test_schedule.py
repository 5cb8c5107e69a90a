"""`python -m pipelines.schedule` against a fake Kubeflow Pipelines API on loopback: the v2beta1
REST routes it calls, in memory, every request recorded. The client side is the real kfp.Client
(and its generated kfp_server_api), so the requests are the ones a real KFP would see."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pipelines import schedule
from vidssl.config import load_experiment
from vidssl.schedules import cron_problem

from .conftest import REPO_ROOT

API = "/apis/v2beta1"
#: KFP pipeline names: the compiled spec's, `vidssl-<experiment>` with `_` made `-` by kfp.
PIPELINE_NAMES = {"smoke": "vidssl-smoke", "siampose_synthetic": "vidssl-siampose-synthetic"}
NOW = "2026-11-23T19:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: dict = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.method in ("POST", "DELETE", "PATCH", "PUT")


class FakeKfp:
    """Pipelines, versions, experiments and recurring runs in dicts, served as KFP's v2beta1 JSON
    (proto field names, int64 as strings). Lists serve at most `page_limit` items a page, so a
    client that ignores next_page_token misses runs."""

    page_limit = 2

    def __init__(self) -> None:
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version, with its "pipeline_id"
        self.specs: dict[str, bytes] = {}  # version id -> the uploaded file
        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.requests: list[Request] = []
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.writes]

    def add_foreign_run(self, experiment_id: str, display_name: str, description: str) -> str:
        """A recurring run made by someone else (the UI, another tool)."""
        run_id = self.new_id("run")
        self.recurring_runs[run_id] = {
            "recurring_run_id": run_id,
            "display_name": display_name,
            "description": description,
            "experiment_id": experiment_id,
            "trigger": {"cron_schedule": {"cron": "0 0 1 * * *"}},
            "max_concurrency": "1",
            "mode": "ENABLE",
            "status": "ENABLED",
            "no_catchup": False,
            "created_at": NOW,
        }
        return run_id

    def add_experiment(self, name: str, namespace: str = "") -> str:
        experiment_id = self.new_id("exp")
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "display_name": name,
            "namespace": namespace,
            "created_at": NOW,
            "storage_state": "AVAILABLE",
        }
        return experiment_id

    # --- routes: (method, path regex) -> handler(match, query, body) -> (status, JSON) ---

    def route(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple[int, dict]:
        for (verb, pattern), handler in self.ROUTES.items():
            match = re.fullmatch(API + pattern, path)
            if verb == method and match:
                return handler(self, match, query, body, headers)
        return 404, {"error": f"no route {method} {path}", "code": 5}

    def healthz(self, match, query, body, headers):
        return 200, {"multi_user": False}

    def list_pipelines(self, match, query, body, headers):
        return 200, self._page("pipelines", _in_namespace(self.pipelines.values(), query), query)

    def create_pipeline(self, match, query, body, headers):
        sent = json.loads(body)
        name = sent.get("name") or sent["display_name"]
        if any(p["name"] == name for p in self.pipelines.values()):
            return 409, {"error": f"pipeline {name} already exists", "code": 6}
        pipeline_id = self.new_id("pipeline")
        self.pipelines[pipeline_id] = {
            "pipeline_id": pipeline_id,
            "name": name,
            "display_name": sent["display_name"],
            "description": sent.get("description", ""),
            "namespace": sent.get("namespace", ""),
            "created_at": NOW,
        }
        return 200, self.pipelines[pipeline_id]

    def upload_version(self, match, query, body, headers):
        pipeline_id, name = query.get("pipelineid"), query.get("name")
        if pipeline_id not in self.pipelines:
            return 400, {"error": "Failed to create a pipeline version", "code": 3}
        mine = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        if any(v["name"] == name for v in mine):
            return 409, {"error": "Failed to create a pipeline version", "code": 6}
        spec = _multipart_file(body, headers["Content-Type"], "uploadfile")
        yaml.safe_load_all(spec)  # KFP rejects a file that is not a pipeline spec
        version_id = self.new_id("version")
        self.versions[version_id] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "name": name,
            "display_name": name,
            "description": query.get("description", ""),
            "created_at": NOW,
        }
        self.specs[version_id] = spec
        return 200, self.versions[version_id]

    def list_versions(self, match, query, body, headers):
        pipeline_id = match["pipeline_id"]
        if pipeline_id not in self.pipelines:
            return 404, {"error": f"pipeline {pipeline_id} not found", "code": 5}
        versions = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return 200, self._page("pipeline_versions", versions, query)

    def list_experiments(self, match, query, body, headers):
        experiments = _in_namespace(self.experiments.values(), query)
        return 200, self._page("experiments", experiments, query)

    def create_experiment(self, match, query, body, headers):
        sent = json.loads(body)
        if any(e["display_name"] == sent["display_name"] for e in self.experiments.values()):
            return 409, {"error": "experiment exists", "code": 6}
        experiment_id = self.add_experiment(sent["display_name"], sent.get("namespace", ""))
        return 200, self.experiments[experiment_id]

    def list_recurring_runs(self, match, query, body, headers):
        runs = [
            r
            for r in self.recurring_runs.values()
            if r["experiment_id"] == query.get("experiment_id", r["experiment_id"])
        ]
        # The proto names this field recurringRuns (backend/api/v2beta1/recurring_run.proto), so
        # KFP's JSON and the generated client's attribute_map say so, unlike every other list.
        return 200, self._page("recurringRuns", runs, query)

    def create_recurring_run(self, match, query, body, headers):
        sent = json.loads(body)
        reference = sent.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id"))
        if sent.get("experiment_id") not in self.experiments:
            return 400, {"error": "experiment not found", "code": 3}
        if not version or version["pipeline_id"] != reference.get("pipeline_id"):
            return 400, {"error": "pipeline version not found", "code": 3}
        if len(sent["trigger"]["cron_schedule"]["cron"].split()) != 6:
            return 400, {"error": "invalid cron", "code": 3}
        run_id = self.new_id("run")
        enabled = sent.get("mode") == "ENABLE"
        self.recurring_runs[run_id] = {
            **sent,
            "recurring_run_id": run_id,
            "max_concurrency": str(sent.get("max_concurrency", 1)),
            "mode": "ENABLE" if enabled else "DISABLE",
            "status": "ENABLED" if enabled else "DISABLED",
            "created_at": NOW,
            "updated_at": NOW,
        }
        return 200, self.recurring_runs[run_id]

    def delete_recurring_run(self, match, query, body, headers):
        if self.recurring_runs.pop(match["run_id"], None) is None:
            return 404, {"error": "recurring run not found", "code": 5}
        return 200, {}

    ROUTES: ClassVar[dict] = {
        ("GET", "/healthz"): healthz,
        ("GET", "/pipelines"): list_pipelines,
        ("POST", "/pipelines"): create_pipeline,
        ("POST", "/pipelines/upload_version"): upload_version,
        ("GET", "/pipelines/(?P<pipeline_id>[^/]+)/versions"): list_versions,
        ("GET", "/experiments"): list_experiments,
        ("POST", "/experiments"): create_experiment,
        ("GET", "/recurringruns"): list_recurring_runs,
        ("POST", "/recurringruns"): create_recurring_run,
        ("DELETE", "/recurringruns/(?P<run_id>[^/]+)"): delete_recurring_run,
    }

    def _page(self, key: str, items, query: dict) -> dict:
        """KFP's list response: filtered (display_name EQUALS), then one page."""
        items = list(items)
        if query.get("filter"):
            for predicate in json.loads(query["filter"])["predicates"]:
                assert predicate["operation"] in (1, "EQUALS"), predicate
                value = predicate["stringValue"]
                items = [item for item in items if item[predicate["key"]] == value]
        start = int(query.get("page_token") or 0)
        size = min(int(query.get("page_size") or 10), self.page_limit)
        page = {key: items[start : start + size], "total_size": len(items)}
        if start + size < len(items):
            page["next_page_token"] = str(start + size)
        return page


def _in_namespace(items, query: dict) -> list[dict]:
    """A multi-user KFP lists what is in the namespace asked for ("": shared, single-user)."""
    return [item for item in items if item.get("namespace", "") == query.get("namespace", "")]


def _multipart_file(body: bytes, content_type: str, field_name: str) -> bytes:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field_name:
            return part.get_payload(decode=True)
    raise AssertionError(f"no {field_name} in the multipart body")


def _handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                recorded = (
                    json.loads(body)
                    if body and self.headers["Content-Type"] == "application/json"
                    else {}
                )
                fake.requests.append(Request(self.command, url.path, query, recorded))
                status, payload = fake.route(self.command, url.path, query, body, self.headers)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args) -> None:  # keep the test output to the test's own lines
            pass

    return Handler


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKfp]:
    """The fake KFP on a free loopback port, $KFP_HOST pointing at it (single-user)."""
    fake = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("KFP_NAMESPACE", "")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "/nonexistent/token")
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", autouse=True)
def compile_once() -> Iterator[None]:
    """Each distinct experiment compiles once per module: kfp's compiler walks the call stack for
    every task, seconds a pipeline under pytest. The packages are the real compiler's output
    (deterministic: the same experiment compiles to the same bytes)."""
    real = schedule.compile_experiment
    compiled: dict[str, bytes] = {}

    def compile_experiment(experiment, out_dir: Path) -> Path:
        key = experiment.model_dump_json()
        if key not in compiled:
            compiled[key] = real(experiment, out_dir).read_bytes()
        package = out_dir / f"{experiment.name}.yaml"
        package.write_bytes(compiled[key])
        return package

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedule, "compile_experiment", compile_experiment)
        yield


@pytest.fixture
def experiments(experiment_dir: Path) -> Path:
    """Two shipped experiments (one that trains, one data-only) in a private experiments dir."""
    for name in ("siampose_synthetic", "smoke"):
        shutil.copy(REPO_ROOT / "pipelines" / "experiments" / f"{name}.yaml", experiment_dir)
    return experiment_dir


NIGHTLY = {
    "name": "nightly",
    "experiment": "siampose_synthetic",
    "cron": "0 0 3 * * *",
    "max_concurrency": 1,
    "enabled": True,
}
WEEKLY = {
    "name": "weekly-smoke",
    "experiment": "smoke",
    "cron": "0 30 4 * * SUN",
    "max_concurrency": 2,
    "enabled": False,
}


def write_file(path: Path, *schedules: dict, pipelines: tuple[str, ...] = ("smoke",)) -> Path:
    path.write_text(
        json.dumps(
            {"kfp_experiment": "vidssl", "pipelines": list(pipelines), "schedules": list(schedules)}
        )
    )
    return path


def sync(path: Path, fake: FakeKfp, capsys) -> tuple[list[Request], str]:
    """Run `sync --file path`; the requests it made and what it printed."""
    before = len(fake.requests)
    assert schedule.main(["sync", "--file", str(path)]) == 0, capsys.readouterr().err
    return fake.requests[before:], capsys.readouterr().out


def runs_by_name(fake: FakeKfp) -> dict[str, dict]:
    return {run["display_name"]: run for run in fake.recurring_runs.values()}


def spec_digest(name: str, tmp_path: Path) -> str:
    package = schedule.compile_experiment(load_experiment(name), tmp_path)
    return hashlib.sha256(package.read_bytes()).hexdigest()


def test_first_sync_uploads_pipelines_and_creates_the_schedules(
    kfp_api, experiments, tmp_path, capsys
):
    path = write_file(tmp_path / "schedules.json", NIGHTLY, WEEKLY)
    _, out = sync(path, kfp_api, capsys)

    pipelines = {p["display_name"]: p for p in kfp_api.pipelines.values()}
    assert set(pipelines) == {"vidssl-smoke", "vidssl-siampose-synthetic"}
    for name in ("smoke", "siampose_synthetic"):
        (version,) = [
            v
            for v in kfp_api.versions.values()
            if v["pipeline_id"] == pipelines[PIPELINE_NAMES[name]]["pipeline_id"]
        ]
        digest = spec_digest(name, tmp_path)
        assert version["name"] == f"spec-{digest[:16]}"
        assert hashlib.sha256(kfp_api.specs[version["pipeline_version_id"]]).hexdigest() == digest

    (experiment,) = kfp_api.experiments.values()
    assert experiment["display_name"] == "vidssl"
    runs = runs_by_name(kfp_api)
    assert set(runs) == {"vidssl:nightly", "vidssl:weekly-smoke"}
    for wanted in (NIGHTLY, WEEKLY):
        run = runs[f"vidssl:{wanted['name']}"]
        pipeline = pipelines[PIPELINE_NAMES[wanted["experiment"]]]
        reference = run["pipeline_version_reference"]
        assert run["experiment_id"] == experiment["experiment_id"]
        assert run["trigger"] == {"cron_schedule": {"cron": wanted["cron"]}}
        assert run["max_concurrency"] == str(wanted["max_concurrency"])
        assert run["no_catchup"] is True
        assert run["mode"] == ("ENABLE" if wanted["enabled"] else "DISABLE")
        assert reference["pipeline_id"] == pipeline["pipeline_id"]
        assert (
            kfp_api.versions[reference["pipeline_version_id"]]["pipeline_id"]
            == reference["pipeline_id"]
        )
        stored = json.loads(run["description"])
        assert stored["experiment"] == wanted["experiment"]
        assert stored["pipeline_version_id"] == reference["pipeline_version_id"]
    assert "schedule nightly: created" in out
    assert "schedule weekly-smoke: created" in out
    assert "2 uploaded, 0 unchanged" in out and "2 created, 0 recreated, 0 deleted" in out


def test_resync_changes_nothing_and_a_cron_change_recreates_only_that_schedule(
    kfp_api, experiments, tmp_path, capsys
):
    path = write_file(tmp_path / "schedules.json", NIGHTLY, WEEKLY)
    sync(path, kfp_api, capsys)
    before = runs_by_name(kfp_api)
    assert len(before) == 2

    requests, out = sync(path, kfp_api, capsys)
    assert [r for r in requests if r.writes] == []
    assert runs_by_name(kfp_api) == before
    assert "schedule nightly: unchanged" in out and "schedule weekly-smoke: unchanged" in out
    assert "0 uploaded, 2 unchanged" in out

    write_file(path, {**NIGHTLY, "cron": "0 15 2 * * 1-5"}, WEEKLY)
    requests, out = sync(path, kfp_api, capsys)
    writes = [(r.method, r.path) for r in requests if r.writes]
    old_id = before["vidssl:nightly"]["recurring_run_id"]
    assert writes == [("DELETE", f"{API}/recurringruns/{old_id}"), ("POST", f"{API}/recurringruns")]
    after = runs_by_name(kfp_api)
    assert after["vidssl:nightly"]["trigger"]["cron_schedule"]["cron"] == "0 15 2 * * 1-5"
    assert after["vidssl:weekly-smoke"] == before["vidssl:weekly-smoke"]
    assert "schedule nightly: recreated (cron '0 0 3 * * *' -> '0 15 2 * * 1-5')" in out


def test_removed_schedule_is_deleted_and_runs_not_ours_survive(
    kfp_api, experiments, tmp_path, capsys
):
    experiment_id = kfp_api.add_experiment("vidssl")
    foreign = {
        kfp_api.add_foreign_run(experiment_id, "hand-made nightly", "made in the UI"),
        # our prefix, but no fingerprint: still not ours
        kfp_api.add_foreign_run(experiment_id, "vidssl:nightly", "someone's copy"),
        kfp_api.add_foreign_run(experiment_id, "vidssl:other", json.dumps({"cron": "x"})),
    }
    path = write_file(tmp_path / "schedules.json", NIGHTLY, WEEKLY)
    sync(path, kfp_api, capsys)
    sync(path, kfp_api, capsys)  # with 5 runs over 3 pages: nothing recreated or lost
    assert len(kfp_api.recurring_runs) == 5
    weekly_id = runs_by_name(kfp_api)["vidssl:weekly-smoke"]["recurring_run_id"]

    write_file(path, NIGHTLY)
    requests, out = sync(path, kfp_api, capsys)
    assert [(r.method, r.path) for r in requests if r.writes] == [
        ("DELETE", f"{API}/recurringruns/{weekly_id}")
    ]
    assert "schedule weekly-smoke: deleted" in out
    write_file(path)  # no schedules at all
    sync(path, kfp_api, capsys)
    assert set(kfp_api.recurring_runs) == foreign


def test_unchanged_pipeline_uploads_nothing_and_a_changed_experiment_a_new_version(
    kfp_api, experiments, tmp_path, capsys
):
    path = write_file(tmp_path / "schedules.json", NIGHTLY, WEEKLY)
    sync(path, kfp_api, capsys)
    before = runs_by_name(kfp_api)

    file = experiments / "siampose_synthetic.yaml"
    settings = yaml.safe_load(file.read_text())
    file.write_text(yaml.safe_dump({**settings, "description": "a changed experiment"}))
    requests, out = sync(path, kfp_api, capsys)

    uploads = [r for r in requests if r.path == f"{API}/pipelines/upload_version"]
    (pipeline_id,) = [
        p["pipeline_id"]
        for p in kfp_api.pipelines.values()
        if p["display_name"] == "vidssl-siampose-synthetic"
    ]
    assert [r.query["pipelineid"] for r in uploads] == [pipeline_id]
    assert not [r for r in requests if r.path == f"{API}/pipelines" and r.method == "POST"]
    digest = spec_digest("siampose_synthetic", tmp_path)
    (new_version,) = [v for v in kfp_api.versions.values() if v["name"] == f"spec-{digest[:16]}"]
    assert len(kfp_api.versions) == 3
    after = runs_by_name(kfp_api)
    reference = after["vidssl:nightly"]["pipeline_version_reference"]
    assert reference["pipeline_version_id"] == new_version["pipeline_version_id"]
    assert after["vidssl:weekly-smoke"] == before["vidssl:weekly-smoke"]
    assert "pipeline vidssl-siampose-synthetic: uploaded" in out
    assert "pipeline vidssl-smoke: unchanged" in out
    assert "schedule nightly: recreated (pipeline_version_id" in out


def test_a_schedule_disabled_in_the_ui_is_recreated_as_declared(
    kfp_api, experiments, tmp_path, capsys
):
    path = write_file(tmp_path / "schedules.json", NIGHTLY)
    sync(path, kfp_api, capsys)
    (run,) = kfp_api.recurring_runs.values()
    run.update(mode="DISABLE", status="DISABLED")
    _, out = sync(path, kfp_api, capsys)
    (run,) = kfp_api.recurring_runs.values()
    assert run["mode"] == "ENABLE"
    assert "schedule nightly: recreated (enabled False -> True)" in out


def test_add_touches_one_schedule_and_list_shows_ours(kfp_api, experiments, tmp_path, capsys):
    path = write_file(tmp_path / "schedules.json", NIGHTLY, WEEKLY)
    sync(path, kfp_api, capsys)
    foreign = kfp_api.add_foreign_run(
        next(iter(kfp_api.experiments)), "hand-made", "made in the UI"
    )
    before = runs_by_name(kfp_api)

    start = len(kfp_api.requests)
    assert schedule.main(["add", "smoke", "--cron", "0 0 6 * * *", "--name", "morning"]) == 0
    writes = [(r.method, r.path) for r in kfp_api.requests[start:] if r.writes]
    assert writes == [("POST", f"{API}/recurringruns")]
    after = runs_by_name(kfp_api)
    assert set(after) == set(before) | {"vidssl:morning"}
    assert after["vidssl:morning"]["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * *"
    assert "schedule morning: created (smoke, cron '0 0 6 * * *', max_concurrency 1" in (
        capsys.readouterr().out
    )

    assert schedule.main(["add", "smoke", "--cron", "0 0 7 * * *", "--name", "morning"]) == 0
    assert "schedule morning: recreated" in capsys.readouterr().out
    assert runs_by_name(kfp_api)["vidssl:nightly"] == before["vidssl:nightly"]

    assert schedule.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "morning: smoke, cron '0 0 7 * * *'" in listed
    assert "weekly-smoke: smoke, cron '0 30 4 * * SUN', max_concurrency 2, disabled" in listed
    assert "hand-made" not in listed and "3 schedules" in listed

    assert schedule.main(["remove", "morning"]) == 0
    assert "vidssl:morning" not in runs_by_name(kfp_api)
    assert foreign in kfp_api.recurring_runs and len(kfp_api.recurring_runs) == 3


def test_a_profile_namespace_reaches_every_namespaced_request(
    kfp_api, experiments, tmp_path, monkeypatch, capsys
):
    """Multi-user KFP: $KFP_NAMESPACE is where the experiment and pipelines live and are looked
    up; the second sync finds them there."""
    monkeypatch.setenv("KFP_NAMESPACE", "team-vision")
    path = write_file(tmp_path / "schedules.json", NIGHTLY)
    requests, _ = sync(path, kfp_api, capsys)
    creates = [
        r
        for r in requests
        if r.method == "POST" and r.path in (f"{API}/experiments", f"{API}/pipelines")
    ]
    assert len(creates) == 3 and all(r.body["namespace"] == "team-vision" for r in creates)
    lists = [
        r
        for r in requests
        if r.method == "GET" and r.path in (f"{API}/experiments", f"{API}/pipelines")
    ]
    assert lists and all(r.query["namespace"] == "team-vision" for r in lists)
    requests, _ = sync(path, kfp_api, capsys)
    assert [r for r in requests if r.writes] == []


def test_make_schedule_command_line_runs_as_a_module(kfp_api, experiments, tmp_path):
    """What `make schedule EXP=smoke CRON=...` runs, in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.schedule", "add", "smoke", "--cron", "0 0 3 * * *"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "schedule smoke: created" in result.stdout
    assert set(runs_by_name(kfp_api)) == {"vidssl:smoke"}


@pytest.mark.parametrize(
    ("schedules", "expected"),
    [
        (
            [{**NIGHTLY, "cron": "0 3 * * *"}],
            "schedules[0] (nightly): cron: '0 3 * * *' has 5 fields; KFP's cron has 6 fields",
        ),
        (
            [{**NIGHTLY, "cron": "0 0 25 * * *"}],
            "schedules[0] (nightly): cron: '0 0 25 * * *': the hour field '25' is not",
        ),
        (
            [NIGHTLY, {**WEEKLY, "experiment": "no_such_experiment"}],
            "schedules[1] (weekly-smoke): experiment: {dir}/no_such_experiment.yaml: "
            "no such experiment file",
        ),
        (
            [NIGHTLY, WEEKLY, {**WEEKLY, "cron": "0 0 5 * * *"}],
            "schedules[2] (weekly-smoke): name: duplicate of schedules[1]",
        ),
        (
            [{**NIGHTLY, "max_concurrency": 11}],
            "schedules[0] (nightly): max_concurrency: expected a whole number from 1 to 10 "
            "(got 11)",
        ),
        ([{**NIGHTLY, "every": "day"}], "schedules[0] (nightly): every: unknown key"),
    ],
    ids=[
        "five-field-cron",
        "hour-out-of-range",
        "unknown-experiment",
        "duplicate",
        "concurrency",
        "key",
    ],
)
def test_bad_schedule_file_fails_before_reaching_kfp(
    kfp_api, experiments, tmp_path, capsys, schedules, expected
):
    path = write_file(tmp_path / "schedules.json", *schedules)
    assert schedule.main(["sync", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: " + expected.format(dir=experiments) in err
    assert kfp_api.requests == []


def test_add_with_a_bad_cron_names_the_schedule(kfp_api, experiments, capsys):
    assert schedule.main(["add", "smoke", "--cron", "@daily", "--name", "daily"]) == 2
    assert "schedule daily: cron: '@daily' has 1 fields" in capsys.readouterr().err
    assert kfp_api.requests == []


def test_kfp_api_errors_are_reported_with_the_status(kfp_api, experiments, tmp_path, capsys):
    kfp_api.ROUTES = {**FakeKfp.ROUTES}
    kfp_api.ROUTES[("POST", "/recurringruns")] = lambda *_: (403, {"error": "not allowed"})
    path = write_file(tmp_path / "schedules.json", NIGHTLY)
    assert schedule.main(["sync", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"KFP API at {os.environ['KFP_HOST']}: 403" in err and "not allowed" in err


@pytest.mark.parametrize(
    "cron",
    ["0 0 3 * * *", "*/30 * * * * ?", "0 0 9 ? * MON-FRI", "0 0,30 8-18/2 1 JAN,jul *"],
)
def test_kfp_crons_pass(cron):
    assert cron_problem(cron) is None


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 3 * * *", "has 5 fields"),
        ("@daily", "has 1 fields"),
        ("60 0 3 * * *", "the second field '60'"),
        ("0 0 3 0 * *", "the day of month field '0'"),
        ("0 0 3 * 13 *", "the month field '13' is not *, ?, 1-12 or JAN-DEC"),
        ("0 0 3 * * MON-FUN", "the day of week field 'MON-FUN'"),
        ("0 */0 3 * * *", "the minute field '*/0'"),
        ("0 0 ? * * *", "the hour field '?'"),
    ],
)
def test_bad_crons_are_named(cron, problem):
    assert problem in cron_problem(cron)
