"""Upload experiments' pipelines to Kubeflow Pipelines and reconcile their recurring runs with a
declared list: the chart's post-install/upgrade hook Job runs `sync`, `make schedule` runs `add`.

python -m pipelines.schedule sync --file schedules.json   -> the file's pipelines and schedules
python -m pipelines.schedule add EXP --cron '0 0 3 * * *' [--name N] [--max-concurrency 1]
python -m pipelines.schedule remove NAME                   -> delete one of our schedules
python -m pipelines.schedule list                          -> our recurring runs

KFP is reached at $KFP_HOST, in the profile namespace $KFP_NAMESPACE (empty: single-user KFP).
The schedule file:

  {"kfp_experiment": "vidssl", "pipelines": ["smoke"],
   "schedules": [{"name": "nightly", "experiment": "siampose_synthetic",
                  "cron": "0 0 3 * * *", "max_concurrency": 1, "enabled": true}]}

Pipelines: each experiment compiles to the KFP pipeline `vidssl-<experiment>` (the compiled
spec's name: kfp writes `_` as `-`), one version per distinct compiled spec, named after its
digest, so an unchanged experiment uploads nothing. Recurring runs: ours are named
`vidssl:<name>` and hold their fingerprint (`vidssl.schedules`) as JSON in their description;
one whose fingerprint changed is deleted and created again. Runs without it are never touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kfp
import kfp_server_api
import urllib3
import yaml

from pipelines.run import KFP_HOST_ENV, KFP_NAMESPACE_ENV, compile_experiment, kfp_client
from vidssl.config import ConfigError, Experiment
from vidssl.schedules import (
    CRON_HINT,
    MANAGED_BY,
    RecurringRun,
    ScheduleFile,
    experiment_references,
    fingerprint,
    load_experiments,
    parse_schedule,
    plan,
    read_schedule_file,
    summary,
)

#: Our recurring runs' display names start with this; the schedule's name follows.
RUN_PREFIX = "vidssl:"
DEFAULT_KFP_EXPERIMENT = "vidssl"


@dataclass(frozen=True)
class PipelineVersion:
    """An experiment's compiled pipeline as uploaded to KFP."""

    pipeline_name: str
    pipeline_id: str
    version_id: str
    version_name: str


class Kfp:
    """The KFP API calls this module makes, through `kfp.Client`, in one namespace."""

    def __init__(self, client: kfp.Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace or None

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """The KFP experiment's id, created when missing (and `create`)."""
        found = self.client.list_experiments(
            filter=_name_equals(name), namespace=self.namespace, page_size=2
        ).experiments
        if found and len(found) > 1:
            raise ConfigError(f"KFP has {len(found)} experiments named {name!r}; keep one")
        if found:
            return found[0].experiment_id
        if not create:
            return None
        body = kfp_server_api.V2beta1Experiment(
            display_name=name, description="vidssl's scheduled runs", namespace=self.namespace
        )
        return self.client.experiments.experiment_service_create_experiment(body).experiment_id

    def upload(self, experiment: Experiment, package: Path) -> tuple[PipelineVersion, str]:
        """The compiled `package` as a version of the experiment's pipeline, uploaded unless a
        version of the same spec is there; with what was done (`uploaded`, `unchanged`)."""
        spec = package.read_bytes()
        name = next(yaml.safe_load_all(spec))["pipelineInfo"]["name"]  # vidssl-<experiment>
        digest = hashlib.sha256(spec).hexdigest()
        version_name = f"spec-{digest[:16]}"
        found = self.client.list_pipelines(
            filter=_name_equals(name), namespace=self.namespace, page_size=2
        ).pipelines
        if found and len(found) > 1:
            raise ConfigError(f"KFP has {len(found)} pipelines named {name!r}; keep one")
        if found:
            pipeline_id = found[0].pipeline_id
            versions = self.client.list_pipeline_versions(
                pipeline_id, filter=_name_equals(version_name), page_size=1
            ).pipeline_versions
            if versions:
                found_id = versions[0].pipeline_version_id
                return PipelineVersion(name, pipeline_id, found_id, version_name), "unchanged"
        else:  # an empty pipeline, so that every version is named after its spec
            body = kfp_server_api.V2beta1Pipeline(
                name=name,
                display_name=name,
                description=experiment.description,
                namespace=self.namespace,
            )
            pipeline_id = self.client.pipelines.pipeline_service_create_pipeline(body).pipeline_id
        uploaded = self.client.pipeline_uploads.upload_pipeline_version(
            str(package),
            name=version_name,
            pipelineid=pipeline_id,
            description=f"{experiment.name}: compiled pipeline spec, sha256 {digest}",
        )
        version = PipelineVersion(name, pipeline_id, uploaded.pipeline_version_id, version_name)
        return version, "uploaded"

    def our_runs(self, experiment_id: str) -> list[RecurringRun]:
        """The experiment's recurring runs that carry our fingerprint, what they do read from the
        run itself where KFP reports it (someone may have disabled one in the UI)."""
        return [run for raw in self._recurring_runs(experiment_id) if (run := _ours(raw))]

    def _recurring_runs(self, experiment_id: str) -> Iterator:
        token = ""
        while True:
            page = self.client.list_recurring_runs(
                experiment_id=experiment_id, page_size=100, page_token=token
            )
            yield from page.recurring_runs or []
            token = page.next_page_token
            if not token:
                return

    def create(self, experiment_id: str, name: str, wanted: dict, version: PipelineVersion) -> None:
        self.client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=RUN_PREFIX + name,
            description=json.dumps(wanted, sort_keys=True),
            cron_expression=wanted["cron"],
            max_concurrency=wanted["max_concurrency"],
            no_catchup=True,
            enabled=wanted["enabled"],
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
        )

    def delete(self, run: RecurringRun) -> None:
        self.client.delete_recurring_run(run.run_id)


def _name_equals(name: str) -> str:
    """A KFP list filter: display_name == name (the shape kfp.Client builds)."""
    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    return json.dumps({"predicates": [predicate]})


def _ours(raw: kfp_server_api.V2beta1RecurringRun) -> RecurringRun | None:
    """The run as one of ours, or None when it lacks our name prefix or fingerprint."""
    if not (raw.display_name or "").startswith(RUN_PREFIX):
        return None
    try:
        stored = json.loads(raw.description or "")
    except json.JSONDecodeError:
        return None
    if not isinstance(stored, dict) or stored.get("managed_by") != MANAGED_BY:
        return None
    live = dict(stored)
    cron = raw.trigger and raw.trigger.cron_schedule and raw.trigger.cron_schedule.cron
    if cron:
        live["cron"] = cron
    if raw.max_concurrency is not None:
        live["max_concurrency"] = int(raw.max_concurrency)
    if raw.status in ("ENABLED", "DISABLED"):
        live["enabled"] = raw.status == "ENABLED"
    if raw.pipeline_version_reference:
        live["pipeline_version_id"] = raw.pipeline_version_reference.pipeline_version_id
    return RecurringRun(raw.recurring_run_id, raw.display_name[len(RUN_PREFIX) :], live)


def reconcile(
    kfp_api: Kfp,
    spec: ScheduleFile,
    experiments: dict[str, Experiment],
    scope: set[str] | None = None,
    say: Callable[[str], None] = print,
) -> Counter:
    """Upload the spec's pipelines, then make our recurring runs in its KFP experiment match its
    schedules (deleting only ours in `scope`; None: all of ours). Returns the count per action."""
    counts: Counter = Counter()
    versions: dict[str, PipelineVersion] = {}
    with tempfile.TemporaryDirectory(prefix="vidssl-schedule-") as tmp:
        for name in spec.experiments:
            package = compile_experiment(experiments[name], Path(tmp))
            versions[name], done = kfp_api.upload(experiments[name], package)
            counts[f"pipeline {done}"] += 1
            version = versions[name]
            say(f"pipeline {version.pipeline_name}: {done} (version {version.version_name})")
    wanted = {s.name: fingerprint(s, versions[s.experiment].version_id) for s in spec.schedules}
    experiment_id = kfp_api.experiment_id(spec.kfp_experiment, create=bool(wanted))
    current = kfp_api.our_runs(experiment_id) if experiment_id else []
    for action in plan(current, wanted, scope):
        if action.kind in ("deleted", "recreated"):
            kfp_api.delete(action.old)
        if action.kind in ("created", "recreated"):
            version = versions[action.wanted["experiment"]]
            kfp_api.create(experiment_id, action.name, action.wanted, version)
        counts[action.kind] += 1
        say(action.describe())
    say(
        f"summary: pipelines {counts['pipeline uploaded']} uploaded, "
        f"{counts['pipeline unchanged']} unchanged; schedules in KFP experiment "
        f"{spec.kfp_experiment!r}: {counts['created']} created, {counts['recreated']} recreated, "
        f"{counts['deleted']} deleted, {counts['unchanged']} unchanged"
    )
    return counts


def list_schedules(kfp_api: Kfp, kfp_experiment: str, say: Callable[[str], None] = print) -> int:
    experiment_id = kfp_api.experiment_id(kfp_experiment, create=False)
    runs = kfp_api.our_runs(experiment_id) if experiment_id else []
    for run in sorted(runs, key=lambda r: r.name):
        version = run.fingerprint["pipeline_version_id"]
        say(f"{run.name}: {summary(run.fingerprint)}, version {version}, id {run.run_id}")
    say(f"{len(runs)} schedules in KFP experiment {kfp_experiment!r}")
    return len(runs)


# --- Command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.schedule",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="make KFP match a schedule file")
    sync.add_argument("--file", type=Path, required=True)
    add = commands.add_parser("add", help="create or replace one schedule, leave the others")
    add.add_argument("experiment")
    add.add_argument("--cron", required=True, help=CRON_HINT)
    add.add_argument("--name", help="the schedule's name (default: the experiment's)")
    add.add_argument("--max-concurrency", type=int, default=1)
    add.add_argument("--disabled", action="store_true", help="create it paused")
    remove = commands.add_parser("remove", help="delete one of our schedules")
    remove.add_argument("name")
    listing = commands.add_parser("list", help="our recurring runs")
    for command in (add, remove, listing):
        command.add_argument("--kfp-experiment", default=DEFAULT_KFP_EXPERIMENT)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            list_schedules(_connect(), args.kfp_experiment)
            return 0
        spec, where, scope = _request(args)
        experiments = load_experiments(where)
        counts = reconcile(_connect(), spec, experiments, scope)
        if args.command == "remove" and not counts["deleted"]:
            print(f"no schedule of ours named {args.name!r} in {args.kfp_experiment!r}")
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except kfp_server_api.ApiException as exc:
        host, body = os.environ.get(KFP_HOST_ENV), (exc.body or "").strip()
        print(f"error: KFP API at {host}: {exc.status} {exc.reason}: {body}", file=sys.stderr)
        return 1
    except (urllib3.exceptions.HTTPError, TimeoutError) as exc:
        print(f"error: cannot reach KFP at {os.environ.get(KFP_HOST_ENV)}: {exc}", file=sys.stderr)
        return 1


def _connect() -> Kfp:
    return Kfp(kfp_client(), os.environ.get(KFP_NAMESPACE_ENV, ""))


def _request(args: argparse.Namespace) -> tuple[ScheduleFile, dict[str, str], set[str] | None]:
    """A command's wanted state, where it names each experiment, and which of our runs it may
    delete (None: all)."""
    if args.command == "sync":
        spec = read_schedule_file(args.file)
        return spec, experiment_references(spec, str(args.file)), None
    if args.command == "remove":
        return ScheduleFile(args.kfp_experiment, (), ()), {}, {args.name}
    name = args.name or args.experiment
    entry = {
        "name": name,
        "experiment": args.experiment,
        "cron": args.cron,
        "max_concurrency": args.max_concurrency,
        "enabled": not args.disabled,
    }
    schedule, errors = parse_schedule(entry, f"schedule {name}")
    if errors:
        raise ConfigError("\n".join(errors))
    spec = ScheduleFile(args.kfp_experiment, (), (schedule,))
    return spec, {args.experiment: f"schedule {name}: experiment"}, {name}


if __name__ == "__main__":
    sys.exit(main())
