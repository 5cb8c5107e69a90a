"""What a schedule file declares, checked, and how our recurring runs differ from it: the pure
half of `pipelines.schedule` (which makes the KFP calls).

A schedule names an experiment, a 6-field cron (seconds first, as KFP's robfig/cron reads it),
`max_concurrency` and `enabled`. A recurring run made from it carries a fingerprint (the schedule
and the pipeline version it runs); KFP cannot update a recurring run, so one whose fingerprint
differs from the wanted one is deleted and created again.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vidssl.config import ConfigError, Experiment, load_experiment

#: A fingerprint's `managed_by`: what marks a recurring run as made by vidssl.
MANAGED_BY = "vidssl pipelines.schedule"
#: The fingerprint's fields that decide whether a recurring run must be recreated.
FINGERPRINT_KEYS = ("experiment", "cron", "max_concurrency", "enabled", "pipeline_version_id")
#: KFP's range for a recurring run's max_concurrency (backend/api/v2beta1/recurring_run.proto).
MAX_CONCURRENCY = range(1, 11)
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Schedule:
    """One wanted recurring run of an experiment's pipeline."""

    name: str
    experiment: str
    cron: str
    max_concurrency: int = 1
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleFile:
    """What `sync` makes true in KFP: these pipelines uploaded, exactly these schedules."""

    kfp_experiment: str
    pipelines: tuple[str, ...]
    schedules: tuple[Schedule, ...]

    @property
    def experiments(self) -> list[str]:
        """Every experiment to upload: the listed pipelines, then the scheduled ones."""
        return list(dict.fromkeys([*self.pipelines, *(s.experiment for s in self.schedules)]))


# --- Validation ------------------------------------------------------------------------------

#: KFP's cron (robfig/cron with seconds): each field's name, its range and the names it takes.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
CRON_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _WEEKDAYS),
)
CRON_HINT = "6 fields, seconds first: '0 0 3 * * *' is 03:00:00 every day"


def cron_problem(cron: object) -> str | None:
    """Why `cron` is not a 6-field cron KFP accepts, or None."""
    if not isinstance(cron, str):
        return f"expected a string of {CRON_HINT} (got {cron!r})"
    fields = cron.split()
    if len(fields) != len(CRON_FIELDS):
        return f"{cron!r} has {len(fields)} fields; KFP's cron has {CRON_HINT}"
    for text, (label, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        if not all(_cron_part_ok(part, low, high, names, label) for part in text.split(",")):
            names_note = f" or {names[0]}-{names[-1]}" if names else ""
            return f"{cron!r}: the {label} field {text!r} is not *, ?, {low}-{high}{names_note}"
    return None


def _cron_part_ok(part: str, low: int, high: int, names: tuple[str, ...], label: str) -> bool:
    span, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) >= 1):
        return False
    if span == "*" or (span == "?" and label.startswith("day")):
        return True

    def value_ok(value: str) -> bool:
        return value.upper() in names or (value.isdigit() and low <= int(value) <= high)

    start, _, end = span.partition("-")
    return value_ok(start) and (not end or value_ok(end))


def _check_keys(raw: dict, where: str, required: set[str], optional: set[str]) -> list[str]:
    missing = [f"{where}{key}: missing" for key in sorted(required - raw.keys())]
    unknown = [f"{where}{key}: unknown key" for key in sorted(raw.keys() - required - optional)]
    return missing + unknown


def parse_schedule(raw: object, where: str) -> tuple[Schedule | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{where}: expected a mapping with name, experiment, cron (got {raw!r})"]
    errors = _check_keys(
        raw, f"{where}: ", {"name", "experiment", "cron"}, {"max_concurrency", "enabled"}
    )
    name, experiment = raw.get("name"), raw.get("experiment")
    if "name" in raw and not (isinstance(name, str) and SCHEDULE_NAME.fullmatch(name)):
        errors.append(f"{where}: name: letters, digits, '.', '_', '-', at most 100 (got {name!r})")
    if "experiment" in raw and not (isinstance(experiment, str) and experiment):
        errors.append(f"{where}: experiment: expected an experiment name (got {experiment!r})")
    if "cron" in raw and (problem := cron_problem(raw["cron"])):
        errors.append(f"{where}: cron: {problem}")
    concurrency = raw.get("max_concurrency", 1)
    if type(concurrency) is not int or concurrency not in MAX_CONCURRENCY:  # bool is an int
        errors.append(
            f"{where}: max_concurrency: expected a whole number from 1 to 10 (got {concurrency!r})"
        )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        errors.append(f"{where}: enabled: expected true or false (got {enabled!r})")
    if errors:
        return None, errors
    return Schedule(name, experiment, raw["cron"], concurrency, enabled), []


def parse_schedule_file(raw: object, source: str) -> ScheduleFile:
    """The file's schedules, checked; a ConfigError names each bad field and its schedule."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object with kfp_experiment and schedules")
    errors = _check_keys(raw, f"{source}: ", {"kfp_experiment"}, {"pipelines", "schedules"})
    kfp_experiment = raw.get("kfp_experiment")
    if "kfp_experiment" in raw and not (isinstance(kfp_experiment, str) and kfp_experiment):
        errors.append(f"{source}: kfp_experiment: expected a KFP experiment name")
    pipelines = raw.get("pipelines", [])
    if not (isinstance(pipelines, list) and all(isinstance(p, str) and p for p in pipelines)):
        errors.append(f"{source}: pipelines: expected a list of experiment names")
        pipelines = []
    errors += [f"{source}: pipelines: {name} is listed twice" for name in _repeated(pipelines)]
    entries = raw.get("schedules", [])
    if not isinstance(entries, list):
        errors.append(f"{source}: schedules: expected a list")
        entries = []
    schedules: list[Schedule] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{source}: schedules[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        schedule, problems = parse_schedule(entry, where)
        errors += problems
        if isinstance(name, str) and name in first_index:
            errors.append(f"{where}: name: duplicate of schedules[{first_index[name]}]")
        elif isinstance(name, str):
            first_index[name] = index
        if schedule:
            schedules.append(schedule)
    if errors:
        raise ConfigError("\n".join(errors))
    return ScheduleFile(kfp_experiment, tuple(pipelines), tuple(schedules))


def _repeated(names: list[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def read_schedule_file(path: Path) -> ScheduleFile:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such schedule file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return parse_schedule_file(raw, str(path))


def experiment_references(spec: ScheduleFile, source: str) -> dict[str, str]:
    """Each experiment of a schedule file -> where the file first names it (for errors)."""
    where = {name: f"{source}: pipelines[{i}]" for i, name in enumerate(spec.pipelines)}
    for index, schedule in enumerate(spec.schedules):
        label = f"{source}: schedules[{index}] ({schedule.name}): experiment"
        where.setdefault(schedule.experiment, label)
    return where


def load_experiments(where: dict[str, str]) -> dict[str, Experiment]:
    """The experiments (name -> where it was named), loaded and validated, all errors at once:
    done before anything reaches KFP."""
    experiments, errors = {}, []
    for name, label in where.items():
        try:
            experiments[name] = load_experiment(name)
        except ConfigError as exc:
            errors.append(f"{label}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
    return experiments


# --- Reconciling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecurringRun:
    """One of our recurring runs: its schedule's name and what it does now."""

    run_id: str
    name: str
    fingerprint: dict


@dataclass(frozen=True)
class Action:
    """One step of a reconcile: `created`, `recreated`, `deleted` or `unchanged`."""

    kind: str
    name: str
    wanted: dict | None = None
    old: RecurringRun | None = None

    def describe(self) -> str:
        if self.kind == "created":
            return f"schedule {self.name}: created ({summary(self.wanted)})"
        if self.kind == "recreated":
            changed = [
                key for key in FINGERPRINT_KEYS if self.old.fingerprint.get(key) != self.wanted[key]
            ]
            diff = ", ".join(
                f"{k} {self.old.fingerprint.get(k)!r} -> {self.wanted[k]!r}" for k in changed
            )
            return f"schedule {self.name}: recreated ({diff})"
        return f"schedule {self.name}: {self.kind}"


def summary(fingerprint: dict) -> str:
    state = "enabled" if fingerprint["enabled"] else "disabled"
    return (
        f"{fingerprint['experiment']}, cron '{fingerprint['cron']}', "
        f"max_concurrency {fingerprint['max_concurrency']}, {state}"
    )


def fingerprint(schedule: Schedule, pipeline_version_id: str) -> dict:
    """What a recurring run of `schedule` on that pipeline version is, as stored with it."""
    return {
        "managed_by": MANAGED_BY,
        "experiment": schedule.experiment,
        "cron": schedule.cron,
        "max_concurrency": schedule.max_concurrency,
        "enabled": schedule.enabled,
        "pipeline_version_id": pipeline_version_id,
    }


def plan(
    current: list[RecurringRun], wanted: dict[str, dict], scope: set[str] | None
) -> list[Action]:
    """The actions that make our recurring runs match `wanted` (name -> fingerprint). Only runs
    whose names are in `scope` may be deleted (None: all of ours, what `sync` does)."""
    actions, kept = [], set()
    for run in current:
        if scope is not None and run.name not in scope:
            continue
        want = wanted.get(run.name)
        if want is None or run.name in kept:  # no longer wanted, or a duplicate of a kept one
            actions.append(Action("deleted", run.name, old=run))
        elif all(run.fingerprint.get(key) == want[key] for key in FINGERPRINT_KEYS):
            actions.append(Action("unchanged", run.name, want, run))
            kept.add(run.name)
        else:
            actions.append(Action("recreated", run.name, want, run))
            kept.add(run.name)
    actions += [Action("created", name, want) for name, want in wanted.items() if name not in kept]
    return actions
