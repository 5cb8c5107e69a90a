"""Bringing a run's report home: `runs/<EXP>/<RUN_ID>/{report.html, report.md, metrics.json,
plots/*}` (a data-only pipeline writes `data.md`) copied from the store to
`build/reports/<EXP>/<RUN_ID>/`, where a browser opens it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vidssl.store import ObjectStore, StoreError

#: What a finished run leaves, the page to open first.
MAIN_FILES = ("report.html", "report.md", "data.md")
REPORT_FILES = (*MAIN_FILES, "metrics.json")
DEFAULT_OUT = Path("build") / "reports"


def report_markdown_key(store: ObjectStore, experiment: str, run_id: str) -> str:
    """The key of a finished run's Markdown report: the benchmark's `report.md`, or `data.md`
    of a pipeline without training."""
    prefix = f"runs/{experiment}/{run_id}"
    for name in ("report.md", "data.md"):
        if store.exists(f"{prefix}/{name}"):
            return f"{prefix}/{name}"
    raise StoreError(f"{store.url(prefix)}: no report (did the run's last step finish?)")


def run_ids(store: ObjectStore, experiment: str) -> list[str]:
    """Runs of `experiment` that finished their report, oldest first (ids are timestamps)."""
    prefix = f"runs/{experiment}/"
    return sorted(
        {
            info.key[len(prefix) :].split("/")[0]
            for info in store.list(prefix)
            if info.key.rsplit("/", 1)[-1] in MAIN_FILES
        }
    )


def find_run(store: ObjectStore, run_id: str) -> str:
    """The experiment whose runs include `run_id`; an error names the candidates' count."""
    experiments = sorted(
        {
            info.key.split("/")[1]
            for info in store.list("runs/")
            if info.key.split("/")[2:3] == [run_id] and info.key.rsplit("/", 1)[-1] in MAIN_FILES
        }
    )
    if len(experiments) != 1:
        found = "no experiment" if not experiments else f"{len(experiments)} experiments"
        raise StoreError(
            f"run {run_id!r}: {found} in {store.base_url}/runs has a report by that id"
            + ("; name the experiment too" if experiments else "")
        )
    return experiments[0]


def fetch_report(
    store: ObjectStore, experiment: str, run_id: str, out_dir: Path = DEFAULT_OUT
) -> Path:
    """Copy one run's report and plots; returns the local page to open (report.html)."""
    prefix = f"runs/{experiment}/{run_id}"
    main = next((name for name in MAIN_FILES if store.exists(f"{prefix}/{name}")), None)
    if main is None:
        raise StoreError(f"{store.url(prefix)}: no report (did the run's last step finish?)")
    target = out_dir / experiment / run_id
    for info in store.list(f"{prefix}/"):
        relative = PurePosixPath(info.key[len(prefix) + 1 :])
        if relative.name not in REPORT_FILES and relative.parts[0] != "plots":
            continue
        if ".." in relative.parts:
            raise StoreError(f"{store.url(info.key)}: refusing a key that leaves the run folder")
        path = target.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(store.get(info.key))
        partial.replace(path)
    return target / main
