"""The run's report: Markdown (printed by `make pipeline-run`) and a self-contained HTML page
with the figures inlined (the Kubeflow UI shows it as an HTML artifact)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence

#: SiamPose paper (real Objectron, ResNet-50, 224 px, 25 epochs), as (category accuracy %,
#: re-ID mAP, 3D mAP). Table 5: SimSiam per pairing and augmentation preset (Table 2's Nearby
#: and Same rows are its LC+PX rows, Distant its Full row). The Nearby/Distant PX rows are
#: illegible in the paper's text and left out.
PAPER_SIMSIAM = {
    ("same", "px"): (44.2, 0.02, 0.29),
    ("same", "ulc_px"): (83.1, 0.24, 0.59),
    ("same", "lc_px"): (91.2, 0.26, 0.65),
    ("same", "full"): (96.8, 0.59, 0.67),
    ("nearby", "ulc_px"): (93.8, 0.55, 0.65),
    ("nearby", "lc_px"): (95.7, 0.53, 0.69),
    ("nearby", "full"): (94.5, 0.71, 0.66),
    ("distant", "ulc_px"): (93.8, 0.22, 0.58),
    ("distant", "lc_px"): (91.4, 0.82, 0.60),
    ("distant", "full"): (94.8, 0.85, 0.58),
}
#: Table 2's baselines, keyed by (method, pairing or sampler, preset) as the reference code ran
#: them: NT-Xent on nearby pairs with the Full preset (configs/config-pretrain-8gb-ntxent.yaml),
#: TCN triplets with the Full preset (config-pretrain-8gb-tcn.yaml).
PAPER_BASELINES = {
    ("ntxent", "nearby", "full"): (96.36, 0.63, 0.64),
    ("tcn", "triplets", "full"): (78.20, 0.19, 0.59),
}
#: Table 2's random embeddings, and Table 1's random fits (3D mAP only).
PAPER_RANDOM = {
    "random embeddings": (30.49, 0.03, 0.17),
    "random fit": (None, None, 0.06),
    "random in-category fit": (None, None, 0.25),
}


def paper_rows(training: dict | None) -> dict[str, tuple]:
    """The paper's rows that match the run's method, pairing (or sampler) and preset, then its
    random baselines: nothing else is shown as the paper's."""
    rows: dict[str, tuple] = {}
    if training:
        method, pairing, preset = (
            training["method"],
            training["pairing"],
            training["augmentation"],
        )
        if method == "simsiam" and (pairing, preset) in PAPER_SIMSIAM:
            rows[f"SimSiam, {pairing} pairs, {preset} (Table 5)"] = PAPER_SIMSIAM[pairing, preset]
        elif (method, pairing, preset) in PAPER_BASELINES:
            rows[f"{method}, {pairing}, {preset} (Table 2)"] = PAPER_BASELINES[
                method, pairing, preset
            ]
    rows.update({f"{name} (Tables 1-2)": values for name, values in PAPER_RANDOM.items()})
    return rows


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:540px}"
    "figure{display:inline-block;margin:8px}"
)


def slug(name: str) -> str:
    """A file-name-safe form: "nearby (ntxent)" -> "nearby-ntxent"."""
    return re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")


def render_html(markdown: str, figures: dict[str, bytes]) -> str:
    """The report as one self-contained page: tables as HTML, figures inlined."""
    body, table = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([html.escape(cell.strip()) for cell in line.strip("|").split("|")])
            continue
        if table:
            head, *rows = table
            body.append(
                "<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
                + "</table>"
            )  # fmt: skip
            table = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            continue
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    for name, data in figures.items():
        encoded = base64.b64encode(data).decode()
        image = f'<img alt="{name}" src="data:image/png;base64,{encoded}">'
        body.append(f"<figure>{image}<figcaption>{name}</figcaption></figure>")
    head = f"<meta charset='utf-8'><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None
) -> str:
    """A Markdown table (no trailing newline): the header, one line per row of cells. `align`
    has one letter per column, `l` (left, `---`) or `r` (right, `---:`); by default the first
    column is left-aligned and the rest, numbers, right-aligned. Every table vidssl writes
    (reports, sweeps, replications, data summaries) goes through here."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r}: one of l or r for each of {len(header)} columns")

    def line(cells: Sequence[str]) -> str:
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} cells for {len(header)} columns: {list(cells)}")
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    return "\n".join([line(header), rule, *(line(cells) for cells in rows)])


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


POSE_COLUMNS = (
    "embeddings", "3D mAP", "IoU>0.5 pooled", "Objectron AP@0.5", "mean IoU", "median IoU",
    "3D mAP, 10% labels", "3D mAP, 1% labels", "re-ID mAP", "category acc.",
)  # fmt: skip


def _pose_cells(
    name: str, pose: dict, reid: float | None = None, accuracy: float | None = None
) -> list[str]:
    full = pose["1"]
    pooled = full["pooled"]
    return [
        name,
        _f(full["3d_map"]),
        _f(pooled["fraction_iou_over_0.5"]),
        _f(pooled["objectron_ap_at_0.5"]),
        _f(pooled["mean_iou"]),
        _f(pooled["median_iou"]),
        *(_f(pose[key]["3d_map"]) if key in pose else "" for key in ("0.1", "0.01")),
        "" if reid is None else _f(reid),
        "" if accuracy is None else _f(accuracy),
    ]


def _paper_cell(value, digits: int = 2) -> str:  # type: ignore[no-untyped-def]
    return "" if value is None else f"{value:.{digits}f}"


def _paper_cells(name: str, row: tuple) -> list[str]:
    """A paper_rows row as cells: 3D mAP, re-ID mAP, category accuracy (the paper's % / 100)."""
    accuracy, reid, map_3d = row
    accuracy = None if accuracy is None else accuracy / 100
    return [name, _paper_cell(map_3d), _paper_cell(reid), _paper_cell(accuracy, 3)]


def _threshold_keys(scores: dict) -> list[str]:
    """The `pck@<t>px` keys of a correspondence result, in threshold order."""
    keys = [key for key in scores if key.startswith("pck@") and key.endswith("px")]
    return sorted(keys, key=lambda key: float(key[4:-2]))


def dense_section(dense: dict) -> list[str]:
    """Markdown lines of the dense benchmarks (`vidssl.stages.dense_bench`): a correspondence
    table (PCK at each threshold, its mean, EPE; then what a random cell scores) and a
    linear-probe segmentation table (then predicting the most frequent class everywhere)."""
    lines: list[str] = []
    correspondence = {
        name: model["correspondence"]
        for name, model in dense.items()
        if model.get("correspondence", {}).get("pairs")
    }
    if correspondence:
        first = next(iter(correspondence.values()))
        keys = _threshold_keys(first)
        header = ("embeddings", "pairs", "queries", *(k.upper()[:3] + k[3:] for k in keys))
        header = (*header, "PCK avg", "EPE px")
        rows = [
            [name, str(s["pairs"]), str(int(s["queries"])), *(_f(s[k]) for k in keys),
             _f(s.get("pck_avg")), _f(s["epe"], 2)]
            for name, s in correspondence.items()
        ]  # fmt: skip
        chance = first.get("chance", {})
        if chance:
            rows.append(
                ["random cell (chance)", "", "", *(_f(chance.get(k)) for k in keys),
                 _f(chance.get("pck_avg")), ""]
            )  # fmt: skip
        gap = int(first.get("frame_gap", 1))
        frames = "consecutive frames" if gap == 1 else f"frames {gap} kept frames apart"
        truth = "ground-truth flow" if first["truth"] == "flow" else "held-out point tracks"
        chained = ", chained" if gap > 1 and first["truth"] == "flow" else ""
        lines += [
            "",
            "## Dense correspondence",
            "",
            f"Nearest-pixel matching between {frames} of the test split (truth: {truth}"
            f"{chained}): a query's match is the cosine-nearest cell of the later frame; PCK@t "
            "is the fraction of queries matched within t px of the truth, EPE the mean error.",
            "",
            markdown_table(header, rows),
        ]
    segmentation = {
        name: model["segmentation"] for name, model in dense.items() if "segmentation" in model
    }
    if segmentation:
        header = ("embeddings", "mIoU", "fIoU", "pixel acc.", "train frames", "test frames")
        rows = [
            [name, _f(s["miou"]), _f(s["fiou"]), _f(s["pixel_accuracy"]),
             str(s["train_frames"]), str(s["test_frames"])]
            for name, s in segmentation.items()
        ]  # fmt: skip
        majority = next(iter(segmentation.values())).get("majority_miou")
        if majority is not None:
            rows.append(["most frequent class everywhere", _f(majority), "", "", "", ""])
        lines += [
            "",
            "## Linear-probe segmentation",
            "",
            "A per-pixel linear classifier (1x1 convolution, logits upsampled) trained on the "
            "frozen maps of the training frames against their category masks, scored on the "
            "test frames (PiCo section 4.1).",
            "",
            markdown_table(header, rows),
        ]
    return lines


def render_markdown(metrics: dict) -> str:
    lines = [f"# {metrics['experiment']}: benchmarks", ""]
    models = metrics["models"]
    if any("pose" in model for model in models.values()):
        lines += [
            "Zero-shot 9-DoF pose on the test split by nearest-neighbour box fitting. '3D mAP' "
            "is the SiamPose paper's: per category the fraction of queries whose fitted box has "
            "3D IoU > 0.5, averaged over categories; 'IoU>0.5 pooled' is that fraction over all "
            "queries; 'Objectron AP@0.5' is Objectron's evaluation (hits in dataset order, no "
            "ranking: about the square of the hit rate, not on the same scale).",
            "",
        ]
        rows = [
            _pose_cells(name, model["pose"], model["reid_map"], model["category_accuracy"])
            for name, model in models.items()
            if "pose" in model
        ]
        for name, table in metrics.get("baselines", {}).items():
            rows.append(_pose_cells(f"{name} (no embeddings)", {"1": table}))
        lines.append(markdown_table(POSE_COLUMNS, rows))
        training = metrics.get("training")
        described = (
            f"{training['method']}, {training['pairing']} pairs, {training['augmentation']}"
            if training
            else "unknown"
        )
        lines += [
            "",
            f"The paper's numbers (SiamPose: real Objectron, ResNet-50, 224 px, 25 epochs) for "
            f"this run's configuration ({described}) and its random baselines:",
            "",
            markdown_table(
                ("paper's row", "3D mAP", "re-ID mAP", "category acc."),
                [_paper_cells(name, row) for name, row in paper_rows(training).items()],
            ),
        ]
    if metrics.get("dense"):
        lines += dense_section(metrics["dense"])
    figures = metrics.get("figures", [])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}](plots/{name})" for name in figures]
    retrieval = {name: model["retrieval"] for name, model in models.items() if "retrieval" in model}
    if retrieval:
        ks = ("R@1", "R@5", "R@10", "R@20")
        rows = [(name, *(_f(recall[k]) for k in ks)) for name, recall in retrieval.items()]
        lines += ["", markdown_table(("embeddings", *ks), rows)]
    return "\n".join(lines) + "\n"
