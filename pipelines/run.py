"""Compile an experiment's pipeline, and run it locally (`kfp.local`) or on a KFP endpoint.

python -m pipelines.run compile EXP            -> build/pipelines/EXP.yaml
python -m pipelines.run run EXP --runner local -> kfp.local, SubprocessRunner(use_venv=False)
python -m pipelines.run run EXP --runner kfp   -> compile, submit to $KFP_HOST ($KFP_NAMESPACE)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import warnings
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import kfp
from kfp import compiler

from pipelines.experiment import build
from vidssl.config import ConfigError, Experiment, load_experiment
from vidssl.metrics import RUN_ID_ENV
from vidssl.run_reports import fetch_report, report_markdown_key
from vidssl.stages.base import store_for
from vidssl.stages.inputs import check_local_inputs, cuda_required, gpu_stages
from vidssl.stages.inspect import new_run_id
from vidssl.store import StoreError

BUILD_DIR = Path("build")
#: The Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline.kubeflow:8888 inside the cluster.
KFP_HOST_ENV = "KFP_HOST"
#: The profile namespace of a multi-user KFP; empty (or unset) for a single-user one.
KFP_NAMESPACE_ENV = "KFP_NAMESPACE"


def compile_experiment(experiment: Experiment, out_dir: Path = BUILD_DIR / "pipelines") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    package = out_dir / f"{experiment.name}.yaml"
    compiler.Compiler().compile(build(experiment), str(package))
    return package


class PipelineFailed(RuntimeError):
    """A local run's task failed: which task, and the error its log ended with."""


class RecentLines(io.TextIOBase):
    """A text stream that writes through to `stream` and keeps its last `keep` lines: kfp.local
    prints each task's log to stdout, and a failed task's error is among the last lines."""

    def __init__(self, stream: TextIO, keep: int = 400) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


#: How many lines of a failed task's final exception the one-line summary keeps.
ERROR_LINES = 12


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def task_error(lines: Iterable[str]) -> str | None:
    """The exception a failed task's log ended with: the final exception of the last traceback
    after the last `Executing task` line (kfp.local opens each task's log with it), its message
    whole when it runs over several lines; None when that log holds no traceback."""
    lines = list(lines)
    opened = [i for i, line in enumerate(lines) if "Executing task" in line]
    lines = lines[opened[-1] + 1 :] if opened else lines
    tracebacks = [
        i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"
    ]
    if not tracebacks:
        return None
    indent = _indent(lines[tracebacks[-1]])  # kfp.local indents the task's output
    error: list[str] = []
    for line in lines[tracebacks[-1] + 1 :]:
        if not line.strip():
            if error:
                break
        elif error or _indent(line) == indent:  # frames and their source lines are deeper
            error.append(line[indent:])
            if len(error) == ERROR_LINES:
                break
    return "\n".join(error) or None


def _ansi_free(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # kfp colours its task names


def _pipeline_failure(exc: RuntimeError, log_lines: Iterable[str]) -> PipelineFailed | None:
    """kfp.local's RuntimeError for a failed task, as one plain line with the error the task's
    log ended with (None for other errors)."""
    text = _ansi_free(str(exc))
    if "finished with status FAILURE" not in text:
        return None
    error = task_error(_ansi_free(line) for line in log_lines)
    if error is None:
        return PipelineFailed(f"{text} Its error ends that task's log, above.")
    return PipelineFailed(f"{text} {error} (the task's whole log is above)")


def check_local_machine(experiment: Experiment) -> None:
    """Refuse a local run whose stages would not find their files here (every missing one
    named by its config key) or that names a CUDA device this machine lacks; warn when stages
    sized for a GPU will run on the CPU."""
    check_local_inputs(experiment)
    wants_cuda, wants_gpu = cuda_required(experiment), gpu_stages(experiment)
    if not (wants_cuda or wants_gpu):
        return
    import torch

    if torch.cuda.is_available():
        return
    if wants_cuda:
        raise ConfigError(
            f"{', '.join(wants_cuda)}, and this machine has no CUDA device: set it to cpu (or "
            "leave it unset: cuda where there is one) in an experiment file of your own"
        )
    print(
        f"warning: {experiment.name} asks for a GPU for {', '.join(wants_gpu)} "
        f"(cluster.<stage>.gpu) and this machine has none: those stages run on the "
        "CPU, far slower than on the GPU they were sized for",
        file=sys.stderr,
    )


def run_local(experiment: Experiment, run_id: str, force: bool) -> str:
    from kfp import local

    check_local_machine(experiment)
    store_for(experiment).check()  # fail now, in one line, if the store cannot be used
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(BUILD_DIR / "local_outputs"),
    )
    saved = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id  # the run label of every metric (kfp.local's tasks inherit it)
    task_logs = RecentLines(sys.stdout)
    try:
        with contextlib.redirect_stdout(task_logs):
            build(experiment)(run_id=run_id, force=force, metrics_grace_seconds=0.0)
    except RuntimeError as exc:
        failure = _pipeline_failure(exc, task_logs.lines)
        if failure is None:
            raise
        raise failure from None
    finally:
        if saved is None:
            os.environ.pop(RUN_ID_ENV)
        else:
            os.environ[RUN_ID_ENV] = saved
    store = store_for(experiment)
    return store.url(report_markdown_key(store, experiment.name, run_id))


def kfp_client() -> kfp.Client:
    """A `kfp.Client` for $KFP_HOST in $KFP_NAMESPACE. Inside a pod that mounts KFP's projected
    service-account token (what a multi-user KFP asks of in-cluster callers), it authenticates
    with that token."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    host = os.environ.get(KFP_HOST_ENV)
    if not host:
        raise ConfigError(
            f"{KFP_HOST_ENV} is not set: the Kubeflow Pipelines API endpoint "
            "(e.g. http://ml-pipeline.kubeflow:8888 in the cluster, or a port-forward)"
        )
    token = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)
    credentials = ServiceAccountTokenVolumeCredentials(str(token)) if token.is_file() else None
    with warnings.catch_warnings():  # "This client only works with KFP v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        # namespace="" (not kfp's default "kubeflow") overrides a local kfp context's namespace.
        return kfp.Client(
            host=host, namespace=os.environ.get(KFP_NAMESPACE_ENV, ""), credentials=credentials
        )


def run_on_kfp(experiment: Experiment, run_id: str, force: bool) -> str:
    package = compile_experiment(experiment)
    client = kfp_client()
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments={"run_id": run_id, "force": force},
        run_name=f"{experiment.name}-{run_id}",
        experiment_name=experiment.name,
        # force=True is a parameter string like any other: a second forced run would hit the
        # first one's KFP cache entries and redo nothing.
        enable_caching=False if force else None,
    )
    return f"{os.environ[KFP_HOST_ENV]}/#/runs/details/{run.run_id}"


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
    except PipelineFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
