"""``objdisc table``: CorLoc comparison tables (Markdown, LaTeX, CSV) from run folders.

Every number comes from a run's ``metrics.json`` and every label from its ``run.json`` /
``producer`` block, never retyped. Rows are backbone + the options that differ from plain
LOST on last-layer keys; columns are datasets; a register model whose no-register twin is in
the table gets a "+reg" column with its CorLoc change per dataset.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.backbones import BACKBONES
from objdisc.errors import ObjdiscError
from objdisc.jsonio import read_json
from objdisc.methods import Lost, TokenCut

FORMATS = ("md", "latex", "csv")
_DATASET_LABELS = {"voc07": "VOC07", "voc12": "VOC12", "coco20k": "COCO20k"}
# Plain LOST on last-layer keys; the method options' defaults come from the methods themselves.
_DEFAULTS = {
    "method": Lost.name,
    "features": "k",
    "layer": -1,
    "gram_bias": Lost.gram_bias,
    "k_patches": Lost.k_patches,
    "tau": TokenCut.tau,
}


@dataclass
class Row:
    """One table row: a backbone with its options, and its CorLoc per dataset column."""

    backbone: str
    options: str
    cells: dict[str, float] = field(default_factory=dict)
    speed: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``backbone`` or ``backbone (options)``."""
        return f"{self.backbone} ({self.options})" if self.options else self.backbone


def read_run(folder: Path) -> dict[str, Any]:
    """What a row needs from one run folder (``objdisc run``, ``sweep`` point or ``eval --out``).

    Raises:
        ObjdiscError: naming the folder and the missing or unfinished file.
    """
    folder = Path(folder)
    try:
        metrics = read_json(folder / "metrics.json")
        info = read_json(folder / "run.json")
    except FileNotFoundError as exc:
        raise ObjdiscError(f"{folder}: not a finished run ({Path(exc.filename).name} missing)") from None
    if info.get("status") != "finished":
        raise ObjdiscError(f"{folder}: run is {info.get('status')!r}, not finished")
    if metrics.get("corloc") is None:
        raise ObjdiscError(f"{folder}: no CorLoc (a dataset without ground truth?)")
    made_by = metrics.get("producer") or info.get("producer") or {}
    options = {**_DEFAULTS, **info.get("options", {}), **made_by.get("discovery", {})}
    used = ["method", "features", "layer", *(["gram_bias", "k_patches"] if options["method"] == "lost" else ["tau"])]
    differs = [f"{k}={options[k]}" for k in used if options.get(k, _DEFAULTS[k]) != _DEFAULTS[k]]
    return {
        "folder": str(folder),
        "backbone": made_by.get("backbone") or info.get("label") or folder.name,
        "options": ", ".join(differs),
        "dataset": str(metrics["dataset"]).split("/")[0],
        "corloc": float(metrics["corloc"]),
        "images_per_s": metrics.get("images_per_s"),
    }


def build_rows(runs: list[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows (in first-seen order) and dataset columns (VOC07, VOC12, COCO20k first)."""
    rows: dict[tuple[str, str], Row] = {}
    datasets: list[str] = []
    for r in runs:
        row = rows.setdefault((r["backbone"], r["options"]), Row(r["backbone"], r["options"]))
        if r["dataset"] in row.cells:
            raise ObjdiscError(f"{r['folder']}: a second {r['dataset']} run for {row.label}")
        row.cells[r["dataset"]] = r["corloc"]
        if r["images_per_s"]:
            row.speed.append(float(r["images_per_s"]))
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    known = [d for d in _DATASET_LABELS if d in datasets]
    return list(rows.values()), known + [d for d in datasets if d not in known]


def register_deltas(rows: list[Row], datasets: list[str]) -> dict[int, list[float | None]]:
    """For each row whose backbone has a no-register twin row with the same options: CorLoc
    change per dataset (``None`` where either lacks that dataset)."""
    index = {(r.backbone, r.options): i for i, r in enumerate(rows)}
    out: dict[int, list[float | None]] = {}
    for i, row in enumerate(rows):
        spec = BACKBONES.get(row.backbone)
        twin = index.get((spec.twin, row.options)) if spec is not None and spec.twin else None
        if twin is not None:
            out[i] = [
                row.cells[d] - rows[twin].cells[d] if d in row.cells and d in rows[twin].cells else None
                for d in datasets
            ]
    return out


def render(rows: list[Row], datasets: list[str], fmt: str, speed: bool = False) -> str:
    """The table as Markdown, LaTeX (booktabs, best per column bold) or CSV."""
    if fmt not in FORMATS:
        raise ObjdiscError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    deltas = register_deltas(rows, datasets)
    labels = [_DATASET_LABELS.get(d, d) for d in datasets]
    header = ["backbone", *labels] + (["+reg"] if deltas else []) + (["images/s"] if speed else [])
    best = {d: max((r.cells[d] for r in rows if d in r.cells), default=math.nan) for d in datasets}

    def cell(row: Row, d: str) -> str:
        if d not in row.cells:
            return "--" if fmt == "latex" else ""
        text = f"{row.cells[d]:.1f}"
        return f"\\textbf{{{text}}}" if fmt == "latex" and row.cells[d] == best[d] else text

    def delta(i: int) -> str:
        if i not in deltas:
            return ""
        parts = ["--" if v is None else (f"${v:+.1f}$" if fmt == "latex" else f"{v:+.1f}") for v in deltas[i]]
        return " / ".join(parts)

    body = []
    for i, row in enumerate(rows):
        line = [row.label if fmt != "latex" else _latex_escape(row.label), *(cell(row, d) for d in datasets)]
        if deltas:
            line.append(delta(i))
        if speed:
            line.append(f"{sorted(row.speed)[len(row.speed) // 2]:.1f}" if row.speed else "")
        body.append(line)

    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
        lines += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(lines) + "\n"
    spec = "l" + "r" * (len(header) - 1)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        "\\midrule",
        *(" & ".join(line) + r" \\" for line in body),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def table(folders: list[Path], fmt: str = "md", speed: bool = False) -> str:
    """``objdisc table``: read the run folders and render."""
    rows, datasets = build_rows([read_run(f) for f in folders])
    return render(rows, datasets, fmt, speed)


__all__ = ["FORMATS", "Row", "build_rows", "read_run", "register_deltas", "render", "table"]
