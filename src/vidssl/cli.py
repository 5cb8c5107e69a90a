"""`vidssl`: one subcommand per stage, plus `config show` and the local S3 server."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console

from vidssl.cluster import EXPERIMENT_JSON_ENV
from vidssl.config import ConfigError, Experiment, experiment_from_json, load_experiment
from vidssl.errors import InputError, VidsslError
from vidssl.store import StoreError

app = typer.Typer(
    help="Self-supervised learning from video, as Kubeflow Pipelines.", no_args_is_help=True
)
config_app = typer.Typer(help="Experiment configuration.", no_args_is_help=True)
store_app = typer.Typer(help="The local S3 server (SeaweedFS on 127.0.0.1).", no_args_is_help=True)
flow_app = typer.Typer(help="Optical flow (PiCo's point tracks start here).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(store_app, name="store")
app.add_typer(flow_app, name="flow")

console = Console(soft_wrap=True)  # URLs and paths are never wrapped: scripts read them
errors = Console(stderr=True, soft_wrap=True)

DEFAULT_STATE_DIR = ".store"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an error instead of one line."
    ),
) -> None:
    _setup_logging(verbose)


@config_app.command("show")
def config_show(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
) -> None:
    """Print the resolved experiment (every default filled in)."""
    exp = load_experiment(experiment)
    console.print(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False), end="")


@config_app.command("check")
def config_check(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
) -> None:
    """Check that the experiment is valid and that every local file and folder its stages read
    is here (each by its config key); exit status 2 naming the missing ones."""
    from vidssl.stages.inputs import check_local_inputs, gpu_stages, local_inputs

    exp = load_experiment(experiment)
    inputs = local_inputs(exp)
    for item in inputs:
        console.print(item.line(), highlight=False)
    if not inputs:
        console.print(f"{exp.name} reads no local files (its data is generated or in the store)")
    wants_gpu = gpu_stages(exp)
    if wants_gpu:
        console.print(f"GPU asked for by: {', '.join(wants_gpu)} (cluster.<stage>.gpu)")
    check_local_inputs(exp)


@app.command("synth-objectron")
def synth_objectron(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into."),
    videos_per_class: int = typer.Option(8, "--videos-per-class"),
    seed: int = typer.Option(0, "--seed"),
    frames: int = typer.Option(60, "--frames", help="Frames per video (30 fps)."),
    width: int = typer.Option(192, "--width"),
    height: int = typer.Option(256, "--height"),
    workers: int = typer.Option(0, "--workers", help="Processes; 0 = one per core."),
    flow_step: int = typer.Option(
        0,
        "--flow-step",
        min=0,
        help="> 0: also write ground-truth flow of frames (0, N), (N, 2N), ... and category "
        "masks under flow/ (ingest with frame_stride N puts them into the clips).",
    ),
    specular: float = typer.Option(
        0.0,
        "--specular",
        min=0.0,
        max=1.0,
        help="Peak of a Blinn-Phong highlight per face (a fraction of white); 0: Lambertian.",
    ),
    roll_turn: float = typer.Option(
        0.0,
        "--roll-turn",
        min=0.0,
        max=360.0,
        help="Degrees the camera turns about its optical axis over each video; 0: tremor only.",
    ),
) -> None:
    """Write a synthetic dataset in Objectron's layout (videos, .pbdata, index files, masks;
    with --flow-step, ground-truth flow and category masks)."""
    from vidssl.synth.objectron import SynthSpec, generate

    spec = SynthSpec(
        videos_per_class=videos_per_class,
        frames=frames,
        width=width,
        height=height,
        seed=seed,
        flow_step=flow_step,
        specular=specular,
        roll_turn=roll_turn,
        workers=workers,
    )
    truths = generate(out, spec)
    defects = sum(1 for truth in truths if truth.defects)
    console.print(f"{len(truths)} videos in {out} ({defects} with recorded defects)")


@app.command()
def synth(
    experiment: str = typer.Argument(..., help="Experiment with a synthetic_objectron source."),
    force: bool = typer.Option(False, "--force", help="Redo even if a finished output exists."),
) -> None:
    """The synth stage: generate the experiment's synthetic data into the store; prints the URL
    of its raw folder (what `vidssl ingest EXP --source-url` takes)."""
    from vidssl.stages import synth as stage

    console.print(stage.raw_url(stage.run(load_experiment(experiment), force=force)))


@app.command()
def ingest(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    source_url: str = typer.Option("", "--source-url", help="Where generated data was written."),
    force: bool = typer.Option(False, "--force", help="Redo even if a finished output exists."),
) -> None:
    """Videos -> clip shards in the store; prints the output URL."""
    from vidssl.stages import ingest as stage

    output = stage.run(load_experiment(experiment), source_url=source_url or None, force=force)
    console.print(output.url)


@app.command()
def clean(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    clips: str = typer.Option(..., "--clips", help="URL of Objectron clip shards."),
    force: bool = typer.Option(False, "--force", help="Redo even if a finished output exists."),
) -> None:
    """Objectron clip shards -> cleaned clip shards + report.json; prints the output URL."""
    from vidssl.stages import clean as stage

    output = stage.run(load_experiment(experiment), clips, force=force)
    report = output.manifest.details["report"]
    errors.print(
        f"kept {report['frames_kept']} of {report['frames_in']} frames; dropped "
        f"{report['dropped_by_reason']}",
        highlight=False,
    )
    console.print(output.url)


@app.command()
def inspect(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    clips: str = typer.Option(..., "--clips", help="URL of a clip-shard output."),
    run_id: str = typer.Option("", "--run-id", help="Run folder name; default: a timestamp."),
) -> None:
    """Read clip shards back and count samples, frames and videos per split."""
    from vidssl.stages import inspect as stage

    report = stage.run(load_experiment(experiment), clips, run_id or None)
    console.print(stage.render_markdown(report), markup=False, highlight=False, emoji=False)


@app.command()
def train(
    experiment: str = typer.Argument(
        "", help=f"Experiment name or YAML path; leave out to read ${EXPERIMENT_JSON_ENV}."
    ),
    clips: str = typer.Option(..., "--clips", help="URL of the clip shards to train on."),
    force: bool = typer.Option(False, "--force", help="Start over instead of resuming."),
    tracks: str = typer.Option(
        "", "--tracks", help="URL of the flow stage's tracks of the clips (pixel_pairs)."
    ),
) -> None:
    """Self-supervised training (resumes from the latest checkpoint); prints the model URL.
    Several processes: `torchrun --nproc_per_node N -m vidssl.cli train ...`; a pipeline's
    torchrun (vidssl.cluster) hands over its resolved experiment as JSON in
    $VIDSSL_EXPERIMENT_JSON instead of a name."""
    from vidssl.stages import train as stage

    output = stage.run(_experiment_or_json(experiment), clips, force=force, tracks_url=tracks)
    console.print(output.model_url)


def _experiment_or_json(experiment: str) -> Experiment:
    given = os.environ.get(EXPERIMENT_JSON_ENV, "")
    if experiment and given:
        raise ConfigError(f"give an experiment or set {EXPERIMENT_JSON_ENV}, not both")
    if experiment:
        return load_experiment(experiment)
    if not given:
        raise ConfigError(f"no experiment: give its name or path, or set {EXPERIMENT_JSON_ENV}")
    try:
        return experiment_from_json(given)
    except ValueError as exc:
        raise ConfigError(f"{EXPERIMENT_JSON_ENV}: not a valid experiment: {exc}") from None


@app.command("export")
def export_embeddings(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    clips: str = typer.Option(..., "--clips", help="URL of the clip shards to embed."),
    model: str = typer.Option("", "--model", help="URL of a trained final.pt."),
    baseline: str = typer.Option("", "--baseline", help="random or imagenet, instead of --model."),
    force: bool = typer.Option(False, "--force", help="Redo even if a finished output exists."),
) -> None:
    """Embed every frame/crop with a frozen encoder into fp16 embedding shards; prints the URL."""
    from vidssl.stages import export as stage

    output = stage.run(
        load_experiment(experiment),
        clips,
        model_url=model or None,
        baseline=baseline or None,
        force=force,
    )
    console.print(output.url)


def labelled_urls(values: list[str], option: str) -> dict[str, str]:
    """{label: url} from repeated `LABEL=URL` values of `option` (at least one, labels unique)."""
    if not values:
        raise InputError(f"{option}: give at least one LABEL=URL")
    urls: dict[str, str] = {}
    for value in values:
        label, equals, url = value.partition("=")
        label, url = label.strip(), url.strip()
        if not (equals and label and url):
            raise InputError(f"{option} {value!r}: expected LABEL=URL (e.g. nearby=s3://...)")
        if label in urls:
            raise InputError(f"{option} {value!r}: the label {label!r} is given twice")
        urls[label] = url
    return urls


@app.command()
def bench(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    embeddings: list[str] = typer.Option(
        [], "--embeddings", help="LABEL=URL of an export's embeddings; repeat for several."
    ),
    clips: str = typer.Option(
        "", "--clips", help="URL of the clips they embed (adds figures of frames to the report)."
    ),
    run_id: str = typer.Option("", "--run-id", help="Run folder name; default: a timestamp."),
) -> None:
    """Score exported embeddings (the bench stage) and write the run's report; prints the
    report's Markdown, then its URL."""
    exports = labelled_urls(embeddings, "--embeddings")  # before the slow imports
    from vidssl.evaluate.report import render_markdown
    from vidssl.stages import bench as stage

    metrics = stage.run(
        load_experiment(experiment), exports, run_id or None, clips_url=clips or None
    )
    console.print(render_markdown(metrics), markup=False, highlight=False, emoji=False)
    console.print(metrics["report_url"])


@app.command("voc-probe")
def voc_probe(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path (its store, model)."),
    root: str = typer.Option(..., "--root", help="VOC-layout folder or s3:// prefix."),
    model: str = typer.Option(
        "", "--model", help="URL of a trained dense model; default: the random baseline."
    ),
    train_split: str = typer.Option("train", "--train-split"),
    val_split: str = typer.Option("val", "--val-split"),
    masks: str = typer.Option("SegmentationClass", "--masks", help="e.g. SegmentationClassAug"),
    size: int = typer.Option(224, "--size", help="px: shorter side, then a centre square crop"),
    limit: int = typer.Option(0, "--limit", help="images per split at most; 0 = all"),
    out: Path = typer.Option(None, "--out", help="Write the scores here as JSON."),
) -> None:
    """PiCo's linear-probe segmentation (mIoU) of a dense model on a VOC-layout set: frozen
    per-pixel features, a per-pixel linear classifier trained on one split, scored on another."""
    import json

    from vidssl.evaluate.dense import ProbeSettings
    from vidssl.stages.base import store_for
    from vidssl.stages.export import _encoder
    from vidssl.stages.voc_probe import voc_probe as probe

    loaded = load_experiment(experiment)
    cfg = loaded.bench.dense
    encoder, _ = _encoder(loaded, store_for(loaded), model or None, None if model else "random")
    settings = ProbeSettings(
        epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, lr=cfg.probe_lr,
        seed=loaded.bench.seed,
    )  # fmt: skip
    scores = probe(encoder, root, train_split, val_split, size, limit or None, settings, masks)
    label = model or "random embeddings"
    console.print(
        f"{label}: mIoU {scores['miou']:.3f}, fIoU {scores['fiou']:.3f}, pixel accuracy "
        f"{scores['pixel_accuracy']:.3f} (most frequent class: mIoU "
        f"{scores['majority_miou']:.3f}); {scores['train_frames']} {train_split} / "
        f"{scores['test_frames']} {val_split} images at {size} px",
        markup=False, highlight=False,
    )  # fmt: skip
    if out:
        out.write_text(json.dumps({"model": label, **scores}, indent=2, default=float))
        console.print(str(out))


@app.command()
def verify(
    url: str = typer.Argument(..., help="URL of a stage output (its folder)."),
    experiment: str = typer.Option("smoke", "--exp", help="Experiment whose store holds it."),
) -> None:
    """Re-hash every shard of a stage output against the sha256s in its manifest."""
    from vidssl.shards import verify_output
    from vidssl.stages.base import store_for

    store = store_for(load_experiment(experiment))
    problems = verify_output(store, store.key_of(url.rstrip("/")))
    for problem in problems:
        errors.print(problem, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print(f"{url}: every shard matches its manifest")


@app.command()
def report(
    target: str = typer.Argument(..., help="An experiment (its latest run) or a run id."),
    run_id: str = typer.Argument("", help="With an experiment: which of its runs."),
    store_of: str = typer.Option(
        "siampose_synthetic", "--exp", help="With a run id: the experiment whose store to search."
    ),
    out: Path = typer.Option(Path("build/reports"), "--out", help="Local folder for reports."),
) -> None:
    """Copy a run's report.html, report.md, metrics.json and plots from the store to
    <out>/<EXP>/<RUN_ID>/ and print the local path of report.html."""
    from vidssl.config import experiment_path
    from vidssl.run_reports import fetch_report, find_run, run_ids
    from vidssl.stages.base import store_for

    is_experiment = experiment_path(target).is_file()
    experiment = load_experiment(target if is_experiment else store_of)
    store = store_for(experiment)
    if not is_experiment:
        name, run_id = find_run(store, target), target
    else:
        name = experiment.name
        if not run_id:
            runs = run_ids(store, name)
            if not runs:
                raise StoreError(f"{store.url(f'runs/{name}')}: no finished run")
            run_id = runs[-1]
    console.print(str(fetch_report(store, name, run_id, out)))


@store_app.command("up")
def store_up(
    state_dir: Path = typer.Option(
        DEFAULT_STATE_DIR, "--dir", help="Data, settings and credentials."
    ),
    bucket: str = typer.Option("vidssl", "--bucket"),
) -> None:
    """Start SeaweedFS on loopback (or find it running); credentials go to <dir>/env."""
    from vidssl.store import seaweed

    server = seaweed.start(state_dir, bucket=bucket)
    errors.print(
        f"S3 server ready at {server.endpoint}, bucket {bucket!r}; environment in {state_dir}/env"
    )


@store_app.command("down")
def store_down(state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--dir")) -> None:
    """Stop the local S3 server (its data stays in <dir>/data)."""
    from vidssl.store import seaweed

    stopped = seaweed.stop(state_dir)
    errors.print("S3 server stopped" if stopped else "no S3 server was running")


@store_app.command("ls")
def store_ls(
    prefix: str = typer.Argument("", help="Key prefix."),
    experiment: str = typer.Option("smoke", "--exp", help="Experiment whose store to list."),
) -> None:
    """List objects under a prefix of the experiment's store."""
    from vidssl.stages.base import store_for

    store = store_for(load_experiment(experiment))
    for info in store.list(prefix):
        console.print(f"{info.size:>12}  {store.url(info.key)}")


@flow_app.command("pair")
def flow_pair(
    first: Path = typer.Argument(..., metavar="IMG1", help="The earlier image (PNG, JPEG...)."),
    second: Path = typer.Argument(..., metavar="IMG2", help="The later image, same size."),
    method: str = typer.Option("dis", "--method", help="dis, farneback, raft_small, raft_large."),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local RAFT state-dict file (RAFT only; nothing is downloaded)."
    ),
    device: str = typer.Option("", "--device", help="Torch device for RAFT; default cuda if any."),
    out: Path = typer.Option(..., "--out", help="Where to write the flow (.npy)."),
) -> None:
    """Flow from IMG1 to IMG2 with one estimator, saved raw for checking it on its own: float32
    (H, W, 2) in pixels, (dx, dy), IMG1's pixel (x, y) moving to (x + dx, y + dy). Prints the
    .npy path."""
    import numpy as np

    from vidssl.flow.estimators import build_estimator, read_rgb

    estimator = build_estimator(method, weights=weights, device=device or None)
    image_a, image_b = read_rgb(first), read_rgb(second)
    if image_a.shape != image_b.shape:
        raise InputError(
            f"{first} {image_a.shape[:2]} and {second} {image_b.shape[:2]}: sizes differ"
        )
    flow = estimator(image_a[None], image_b[None])[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, flow)
    magnitude = np.linalg.norm(flow, axis=-1)
    errors.print(
        f"{method}: flow {flow.shape[1]}x{flow.shape[0]} px, |flow| mean {magnitude.mean():.2f} "
        f"max {magnitude.max():.2f} px",
        highlight=False,
    )
    console.print(str(out))


@flow_app.command("run")
def flow_run(
    experiment: str = typer.Argument(..., help="Experiment name or YAML path."),
    clips: str = typer.Option(..., "--clips", help="URL of the clip shards to track."),
    force: bool = typer.Option(False, "--force", help="Redo even if a finished output exists."),
) -> None:
    """The flow stage: forward and backward flow between consecutive kept frames and point
    tracks through it, in track shards that follow the clip shards; prints the output URL."""
    from vidssl.stages import flow as stage

    output = stage.run(load_experiment(experiment), clips, force=force)
    details = output.manifest.details
    errors.print(
        f"{details['tracked']} clips tracked ({details['skipped']} skipped), "
        f"{details['tracks_per_clip']} tracks per clip",
        highlight=False,
    )
    console.print(output.url)


#: Errors about the user's inputs, files or store: one line naming the culprit, exit status 2.
USER_ERRORS = (VidsslError, FileNotFoundError)


def run(argv: list[str] | None = None) -> None:
    """Entry point with the one-line errors users should see instead of tracebacks
    (`--debug` shows the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        app(args=argv, prog_name="vidssl", standalone_mode=True)
    except USER_ERRORS as exc:
        if "--debug" in argv:
            raise
        message = str(exc).strip() or type(exc).__name__
        errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
