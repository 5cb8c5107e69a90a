"""`make perf-train-gpu`: SimSiam ResNet-50 224 px (and MoCo-v2, and PiCo with `--pico EXP`:
pixels/s through the dense encoder, on that experiment's data and the flow stage's tracks) through
the real trainer on one GPU, in one run, step by step:

1. a plain fp32 loop (PIL transforms, no trainer; `vidssl.perf.train.plain_loop_images_per_second`);
2. the trainer with the CPU input path and every step switch off;
3. the trainer with the GPU input path (`train.input: gpu`);
4. then each step switch added in turn: bf16 autocast (`amp`), `channels_last`,
   `fused_optimizer`, `compile`, `cuda_graphs`.

Each row: images/s and examples/s (pairs/s for SimSiam), GPU busy % (nvidia-smi sampled while
it runs), the data-loader wait as a share of step time (what the trainer's
`vidssl_train_data_wait_seconds` observes), peak GPU memory. Timing starts after `--warmup`
steps (loader workers up, compilation done). Then the paper's run projected from the fastest
SimSiam row (`vidssl.perf.projection`), and with `--minutes M` one end-to-end run of the fastest
configuration for at least M minutes from the S3 shards, GPU busy sampled over all of it.

Data: the experiment's prepared clips (`--exp`, default the synthetic Objectron demo's data,
decoded and cropped to 224 px exactly as Objectron's would be). Without a GPU (`--smoke`, the
test) every row runs on the CPU on a small backbone and few steps, to check the driver; its
numbers mean nothing for a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from vidssl.config import Experiment, load_experiment
from vidssl.perf import save_results
from vidssl.perf.projection import pairs_from_clean_manifest, paper_run
from vidssl.perf.train import GpuUtilisation, plain_loop_images_per_second
from vidssl.stages.base import store_for
from vidssl.stages.prepare import prepared_clips
from vidssl.train.methods import build_method
from vidssl.train.trainer import Trainer

#: The step switches, in the order they are added (each row keeps the ones before it).
SWITCHES = ("amp", "channels_last", "fused_optimizer", "compile", "cuda_graphs")
ALL_OFF = {switch: False for switch in SWITCHES}
#: The rows an end-to-end run can take its setup from (`--e2e`): SimSiam through the trainer.
E2E_SETUPS = (
    "simsiam: trainer, CPU input",
    "simsiam: trainer, GPU input",
    *(f"simsiam: + {switch}" for switch in SWITCHES),
)


@dataclass
class Row:
    name: str
    images_per_second: float
    examples_per_second: float
    gpu_busy_percent: float | None
    data_wait_share: float
    peak_memory_gib: float | None
    steps: int
    #: Dense methods: input pixels through the encoder per second (images/s x H x W).
    pixels_per_second: float | None = None
    #: With `train.compile`: whether the step still ran compiled at the end (False: it fell
    #: back to eager, the row measures the eager step), and what dynamo compiled for the row:
    #: graphs (more than the model's one or two: recompiles) and graph breaks.
    compiled: bool | None = None
    graphs: int | None = None
    graph_breaks: int | None = None
    seconds: float = 0.0


def measure(
    name: str, experiment: Experiment, clips_url: str, steps: int, warmup: int,
    seconds: float = float("inf"), tracks_url: str = "",
) -> Row:  # fmt: skip
    """One configuration through the trainer: `warmup` steps, then `steps` timed or as many as
    fit in `seconds`, whichever ends first. GPU busy is averaged over the timed steps alone."""
    store = store_for(experiment)
    prefix = f"perf/train-gpu/{uuid.uuid4().hex[:8]}"
    cfg = experiment.train.model_copy(update={"checkpoint_every": 10**9})
    torch.manual_seed(cfg.seed)
    before = _dynamo_counts()
    trainer = Trainer(
        build_method(cfg), cfg, store, prefix, experiment.store_uri(), store.key_of(clips_url),
        steps_per_epoch=10**6, tracks_prefix=store.key_of(tracks_url) if tracks_url else None,
    )  # fmt: skip
    cuda = trainer.device.type == "cuda"
    waits: list[tuple[float, float]] = []
    observe = trainer.metrics.observe_step

    def record(step_seconds: float, data_wait: float) -> None:
        if trainer.step > warmup:
            waits.append((step_seconds, data_wait))
        observe(step_seconds, data_wait)

    trainer.metrics.observe_step = record  # type: ignore[method-assign]
    marks: dict[int, float] = {}
    deadline = [float("inf")]

    def mark(step: int) -> None:
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            marks[step] = time.perf_counter()
            deadline[0] = marks[step] + seconds
        if step > warmup and (step == warmup + steps or time.perf_counter() >= deadline[0]):
            if cuda:
                torch.cuda.synchronize()
            marks.setdefault(-1, time.perf_counter())
            marks.setdefault(-2, step)
            raise _Done

    last = warmup + steps
    busy = GpuUtilisation() if cuda else contextlib.nullcontext()
    try:
        with busy, contextlib.suppress(_Done):
            trainer.fit(stop_after_step=last, on_step=mark)
        compiled = trainer.step_model.compiled if cfg.compile else None
    finally:
        trainer.metrics.observe_step = observe  # type: ignore[method-assign]
        store.delete_prefix(prefix + "/")
    timed = int(marks[-2]) - warmup
    elapsed = marks[-1] - marks[warmup]
    views = len(cfg.sampler.views)
    examples = timed * cfg.batch_size / elapsed
    step_total = sum(s for s, _ in waits) or 1.0
    counts = _dynamo_counts()
    row = Row(
        name=name,
        images_per_second=round(examples * views, 1),
        examples_per_second=round(examples, 1),
        gpu_busy_percent=(
            round(busy.mean_between(marks[warmup], marks[-1]), 1)
            if isinstance(busy, GpuUtilisation)
            else None
        ),
        data_wait_share=round(sum(w for _, w in waits) / step_total, 3),
        peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        steps=timed,
        pixels_per_second=(
            round(examples * views * cfg.image_size**2) if cfg.method.kind == "pico" else None
        ),
        compiled=compiled,
        graphs=counts[0] - before[0] if cfg.compile else None,
        graph_breaks=counts[1] - before[1] if cfg.compile else None,
        seconds=round(elapsed, 1),
    )
    return row


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from dynamo's counters."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def release_between_rows() -> None:
    """What one row leaves behind must not weigh on the next: dynamo's compiled code (and its
    CUDA-graph memory pools), cycles holding the trainer, and the CUDA allocator's cache; a fresh
    dynamo cache also keeps the rows' compiles from adding up to its recompile limit."""
    torch.compiler.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Done(Exception):
    """Ends a measured run from the trainer's step callback."""


def configured(base: Experiment, **train: object) -> Experiment:
    return base.model_copy(update={"train": base.train.model_copy(update=train)})


def rows_for(
    label: str, base: Experiment, clips_url: str, args: argparse.Namespace, plain: bool,
    done: Callable[[Row], None], gpu_input: bool = True, tracks_url: str = "",
) -> list[Row]:  # fmt: skip
    """The plain loop (CUDA only), then the trainer: CPU input, GPU input, each switch added.
    `done(row)` is called as each row finishes (printed and saved: a run cut short keeps them)."""
    rows: list[Row] = []

    def add(row: Row) -> None:
        release_between_rows()  # the row's trainer is gone with `measure`'s frame
        rows.append(row)
        done(row)

    if plain and torch.cuda.is_available():
        with GpuUtilisation() as busy:
            loop = plain_loop_images_per_second(
                base, clips_url, args.steps, seconds=args.row_seconds
            )
        rate, views = loop.images_per_second, len(base.train.sampler.views)
        add(Row(f"{label}: plain fp32 loop", round(rate, 1), round(rate / views, 1),
                round(busy.mean_between(loop.start, loop.end), 1), float("nan"), None,
                loop.steps, seconds=round(loop.end - loop.start, 1)))  # fmt: skip
    settings: dict[str, object] = {**ALL_OFF, "input": "cpu"}
    timing = {"steps": args.steps, "warmup": args.warmup, "seconds": args.row_seconds}
    add(measure(f"{label}: trainer, CPU input", configured(base, **settings), clips_url,
                tracks_url=tracks_url, **timing))  # fmt: skip
    if gpu_input:
        settings["input"] = "gpu"
        add(measure(f"{label}: trainer, GPU input", configured(base, **settings), clips_url,
                    **timing))  # fmt: skip
    for switch in SWITCHES:
        settings[switch] = True
        add(measure(f"{label}: + {switch}", configured(base, **settings), clips_url,
                    tracks_url=tracks_url, **timing))  # fmt: skip
    return rows


HEADER = (
    f"{'configuration':44} {'images/s':>9} {'examples/s':>10} {'GPU busy':>8} {'data wait':>9} "
    f"{'peak GiB':>8}"
)


def row_line(row: Row) -> str:
    """One row of the printed table; compiled rows say what dynamo did, and a row that fell
    back to eager says so."""
    busy = "-" if row.gpu_busy_percent is None else f"{row.gpu_busy_percent:.0f}%"
    memory = "-" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.1f}"
    line = (
        f"{row.name:44} {row.images_per_second:9.1f} {row.examples_per_second:10.1f} "
        f"{busy:>8} {row.data_wait_share:9.1%} {memory:>8}"
    )
    if row.pixels_per_second is not None:
        line += f"  {row.pixels_per_second:,.0f} px/s"
    if row.compiled is not None:
        line += (
            f"  [{row.graphs} graphs, {row.graph_breaks} breaks]"
            if row.compiled
            else "  [fell back to eager: not a compiled rate]"
        )
    return line


def _simsiam(demo: Experiment, args: argparse.Namespace) -> Experiment:
    method = {"kind": "simsiam", "projection_dim": 2048 if not args.smoke else 64}
    if args.smoke:
        method.update(predictor_dim=16)
    return _scaled(demo, method, {"kind": "pairs", "pairing": "nearby"}, args)


def _moco(demo: Experiment, args: argparse.Namespace) -> Experiment:
    method: dict = {"kind": "moco"}
    if args.smoke:
        method.update(queue_size=256, hidden_dim=64, projection_dim=16, bn_splits=2)
    return _scaled(demo, method, {"kind": "temporal"}, args)


def _pico(pico_demo: Experiment, args: argparse.Namespace) -> Experiment:
    """PiCo's own demo data and sampler (tracks), with the paper's FPN widths on ResNet-50."""
    method = pico_demo.train.method.model_dump(mode="json")
    sampler = pico_demo.train.sampler.model_dump(mode="json")
    if not args.smoke:
        method.update(fpn_channels=256, branch_channels=128, embedding_dim=128,
                      projection_dim=128, hidden_dim=2048, queue_size=65536)  # fmt: skip
    return _scaled(pico_demo, method, sampler, args, augmentation="px")


def _scaled(
    demo: Experiment, method: dict, sampler: dict, args: argparse.Namespace,
    augmentation: str = "full",
) -> Experiment:  # fmt: skip
    """The demo's data with the benchmark's model: ResNet-50 at 224 px (a small backbone at
    64 px with --smoke), the benchmark's batch and loader workers."""
    from vidssl.config import parse_experiment

    raw = demo.model_dump(mode="json")
    if args.smoke:  # inductor's first compile takes ~30 s on 2 cores; the driver is what is checked
        raw["train"]["compile_backend"] = "aot_eager"
    raw["train"].update(
        method=method,
        sampler=sampler,
        backbone="resnet_small" if args.smoke else "resnet50",
        image_size=64 if args.smoke else 224,
        batch_size=args.batch,
        loader_workers=args.workers,
        augmentation=augmentation,
    )
    return parse_experiment(raw, source="perf-train-gpu")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="siampose_synthetic", help="whose prepared clips")
    parser.add_argument("--steps", type=int, default=100, help="timed steps a row, at most")
    parser.add_argument(
        "--row-seconds", type=float, default=30.0, help="a row's timed window, at most (s)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing (compiles)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--methods", nargs="*", default=["simsiam", "moco"],
                        choices=["simsiam", "moco"])  # fmt: skip
    parser.add_argument(
        "--pico", default="", metavar="EXP", help="also PiCo on this experiment's data, tracks"
    )
    parser.add_argument(
        "--minutes", type=float, default=0.0,
        help="then one SimSiam run this long, end to end: the fastest row's setup, or --e2e's",
    )  # fmt: skip
    parser.add_argument(
        "--e2e", default="", metavar="ROW",
        help="the end-to-end run's setup by row name (e.g. 'simsiam: + fused_optimizer')",
    )  # fmt: skip
    parser.add_argument("--out", default="train_gpu", help="results name under build/perf/")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: checks the driver")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.row_seconds <= 0:
        parser.error("--warmup and --steps: at least 1 step; --row-seconds: above 0")
    if args.e2e and not args.minutes:
        parser.error("--e2e names the end-to-end run's setup: give --minutes too")
    if args.e2e and args.e2e not in E2E_SETUPS:
        parser.error(f"--e2e {args.e2e!r}: one of the SimSiam trainer rows: {list(E2E_SETUPS)}")
    if not torch.cuda.is_available() and not args.smoke:
        print("no GPU on this machine: make perf-train-gpu needs one (--smoke checks the driver)")
        return {}
    os.environ.setdefault("VIDSSL_STORE_URI", "s3://vidssl")
    demo = load_experiment(args.exp)
    clips_url = prepared_clips(demo)
    results: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "cores": os.cpu_count(), "batch": args.batch,
        "workers": args.workers, "steps": args.steps, "row_seconds": args.row_seconds,
        "warmup": args.warmup, "rows": [],
    }  # fmt: skip
    print(HEADER, flush=True)

    def done(row: Row) -> None:
        print(row_line(row), flush=True)
        results["rows"].append(asdict(row))
        save_results(args.out, results)

    build = {"simsiam": _simsiam, "moco": _moco}
    rows: list[Row] = []
    for method in args.methods:
        rows += rows_for(method, build[method](demo, args), clips_url, args,
                         plain=method == "simsiam", done=done)  # fmt: skip
    if args.pico:
        from vidssl.stages.prepare import prepared_tracks

        pico_demo = load_experiment(args.pico)
        pico_clips = prepared_clips(pico_demo)
        tracks = prepared_tracks(pico_demo, pico_clips)
        rows += rows_for("pico", _pico(pico_demo, args), pico_clips, args, plain=False,
                         done=done, gpu_input=False, tracks_url=tracks)  # fmt: skip
    simsiam = [row for row in rows if row.name.startswith("simsiam: trainer")
               or row.name.startswith("simsiam: +")]  # fmt: skip
    counted = _paper_pairs(demo, clips_url, args.exp)
    if simsiam:
        best = max(simsiam, key=lambda row: row.examples_per_second)
        print(f"fastest SimSiam row: {best.name}")
        results["paper_run"] = _projection(best, counted, args.exp)
    if args.minutes and (simsiam or args.e2e):
        setup = args.e2e or best.name
        print(f"end to end for {args.minutes:g} min: {setup}", flush=True)
        long = measure("simsiam: end to end", configured(_simsiam(demo, args),
                       **_settings_of(setup)), clips_url, 10**9, args.warmup,
                       seconds=args.minutes * 60)  # fmt: skip
        print(row_line(long))
        results["end_to_end"] = {**asdict(long), "minutes": args.minutes, "setup": setup}
        results["paper_run_end_to_end"] = _projection(long, counted, args.exp)
    save_results(args.out, results)
    return results


def _paper_pairs(demo: Experiment, clips_url: str, exp: str) -> int | None:
    """The paper run's pairs an epoch, counted from the clean manifest on real Objectron (else
    None: `paper_run` estimates them from public figures)."""
    if not exp.startswith("objectron"):
        return None
    from vidssl.shards import read_manifest

    store = store_for(demo)
    return pairs_from_clean_manifest(read_manifest(store, store.key_of(clips_url)).details)


def _projection(row: Row, counted: int | None, exp: str) -> dict:
    """The paper's run projected from one row's pairs/s, printed and as the results' entry."""
    projection = paper_run(row.examples_per_second, counted,
                           f"{exp}'s clean manifest" if counted else "")  # fmt: skip
    print(projection.line(), flush=True)
    return {**asdict(projection), "hours": round(projection.hours, 2), "from_row": row.name}


def _settings_of(name: str) -> dict[str, object]:
    """The train settings of a row of `rows_for` from its name."""
    settings: dict[str, object] = {**ALL_OFF, "input": "cpu" if "CPU input" in name else "gpu"}
    if "+ " in name:
        last = name.split("+ ")[1]
        for switch in SWITCHES[: SWITCHES.index(last) + 1]:
            settings[switch] = True
    return settings


if __name__ == "__main__":
    main()
