"""The run's report: Markdown (printed by `make pipeline-run`) and a self-contained HTML page
with the figures inlined (the Kubeflow UI shows it as an HTML artifact)."""

from __future__ import annotations

import base64
import html
import re

#: SiamPose paper, Table 5 (Objectron, ResNet-50, 25 epochs): classif. acc., re-ID mAP, 3D mAP.
PAPER_TABLE_5 = {
    "Same - Full": (96.8, 0.59, 0.67),
    "Nearby - LC+PX": (95.7, 0.53, 0.69),
    "Nearby - Full": (94.5, 0.71, 0.66),
    "Distant - Full": (94.8, 0.85, 0.58),
}


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


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


POSE_HEADER = (
    "| embeddings | IoU>0.5 | AP@0.5 | mean IoU | median IoU | IoU>0.5, 10% labels "
    "| IoU>0.5, 1% labels | re-ID mAP | category acc. |"
)


def _pose_row(name: str, table: dict, pose: dict | None = None, reid=None, accuracy=None) -> str:  # type: ignore[no-untyped-def]
    full = table["all"]
    subsets = [
        _f((pose or {}).get(key, {}).get("all", {}).get("fraction_iou_over_0.5")) if pose else ""
        for key in ("0.1", "0.01")
    ]
    cells = [
        name,
        _f(full["fraction_iou_over_0.5"]),
        _f(full["ap_at_0.5"]),
        _f(full["mean_iou"]),
        _f(full["median_iou"]),
        *subsets,
        _f(reid) if pose else "",
        _f(accuracy) if pose else "",
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(metrics: dict) -> str:
    lines = [f"# {metrics['experiment']}: benchmarks", ""]
    models = metrics["models"]
    if any("pose" in model for model in models.values()):
        lines += [
            "Zero-shot 9-DoF pose on the test split by nearest-neighbour box fitting. "
            "'IoU>0.5' is the fraction of queries whose fitted box has 3D IoU above 0.5 (the "
            "SiamPose paper's \"3D mAP\"); 'AP@0.5' is Objectron's average precision.",
            "",
            POSE_HEADER,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, model in models.items():
            if "pose" in model:
                pose = model["pose"]
                lines.append(
                    _pose_row(name, pose["1"], pose, model["reid_map"], model["category_accuracy"])
                )
        for name, table in metrics.get("baselines", {}).items():
            lines.append(_pose_row(f"{name} (no embeddings)", table))
        lines += [
            "",
            "The paper's numbers (SiamPose, Table 5: real Objectron, ResNet-50, 25 epochs):",
            "",
            "| paper's configuration | 3D mAP (IoU>0.5) | re-ID mAP | category acc. |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {m:.2f} | {r:.2f} | {a / 100:.3f} |"
            for name, (a, r, m) in PAPER_TABLE_5.items()
        ]
    figures = metrics.get("figures", [])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}](plots/{name})" for name in figures]
    retrieval = {name: model["retrieval"] for name, model in models.items() if "retrieval" in model}
    if retrieval:
        lines += ["", "| embeddings | R@1 | R@5 | R@10 | R@20 |", "|---|---:|---:|---:|---:|"]
        for name, recall in retrieval.items():
            values = " | ".join(_f(recall[k]) for k in ("R@1", "R@5", "R@10", "R@20"))
            lines.append(f"| {name} | {values} |")
    return "\n".join(lines) + "\n"
