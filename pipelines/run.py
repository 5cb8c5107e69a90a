"""Compile an experiment's pipeline, and run it locally (`kfp.local`) or on a KFP endpoint.

python -m pipelines.run compile EXP            -> build/pipelines/EXP.yaml
python -m pipelines.run run EXP --runner local -> kfp.local, SubprocessRunner(use_venv=False)
python -m pipelines.run run EXP --runner kfp   -> compile, submit to $KFP_HOST
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kfp import compiler

from pipelines.experiment import build
from vidssl.config import ConfigError, Experiment, load_experiment
from vidssl.run_reports import fetch_report
from vidssl.stages.base import store_for
from vidssl.stages.inspect import new_run_id
from vidssl.store import StoreError

BUILD_DIR = Path("build")


def compile_experiment(experiment: Experiment, out_dir: Path = BUILD_DIR / "pipelines") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    package = out_dir / f"{experiment.name}.yaml"
    compiler.Compiler().compile(build(experiment), str(package))
    return package


def run_local(experiment: Experiment, run_id: str, force: bool) -> str:
    from kfp import local

    store_for(experiment).check()  # fail now, in one line, if the store cannot be used
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(BUILD_DIR / "local_outputs"),
    )
    pipeline = build(experiment)
    result = pipeline(run_id=run_id, force=force)
    return result.output


def run_on_kfp(experiment: Experiment, run_id: str, force: bool) -> str:
    import kfp

    host = os.environ.get("KFP_HOST")
    if not host:
        raise ConfigError("RUNNER=kfp needs KFP_HOST, the Kubeflow Pipelines API endpoint")
    package = compile_experiment(experiment)
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments={"run_id": run_id, "force": force},
        run_name=f"{experiment.name}-{run_id}",
        experiment_name=experiment.name,
    )
    return f"{host}/#/runs/details/{run.run_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["compile", "run"])
    parser.add_argument("experiment")
    parser.add_argument("--runner", choices=["local", "kfp"], default="local")
    parser.add_argument("--run-id", default="")
    parser.add_argument("--force", action="store_true", help="recompute cached stage outputs")
    args = parser.parse_args(argv)
    try:
        experiment = load_experiment(args.experiment)
        if args.action == "compile":
            print(compile_experiment(experiment))
            return 0
        run_id = args.run_id or new_run_id()
        if args.runner == "kfp":
            print(f"submitted: {run_on_kfp(experiment, run_id, args.force)}")
            return 0
        report_url = run_local(experiment, run_id, args.force)
        store = store_for(experiment)
        print(store.get_text(store.key_of(report_url)))
        print(f"report: {report_url}")
        local = fetch_report(store, experiment.name, run_id, BUILD_DIR / "reports")
        print(f"report with figures, copied here: {local}")
        return 0
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
