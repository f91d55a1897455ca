"""``objdisc table``: CorLoc comparison tables (Markdown, LaTeX, CSV) from run folders.

Every number comes from a run's ``metrics.json`` and every label from its ``run.json`` /
``producer`` block, never retyped. Rows are backbone + the options that differ from plain
LOST on last-layer keys; columns are datasets; a register model whose no-register twin is in
the table gets a "+reg" column with its CorLoc change per dataset, and a row with test-time
registers whose plain run is in the table a "+ttr" column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.errors import ObjdiscError
from objdisc.methods import Lost, TokenCut
from objdisc.models.backbones import BACKBONES
from objdisc.registers.test_time import RegisterNeurons
from objdisc.utils.jsonio import read_json

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
    """One table row: a backbone with its weights and options, and its CorLoc per dataset column.

    Attributes:
        backbone: the backbone name (or an eval row's label).
        options: the options that differ from plain LOST, ``"k=v, ..."``.
        weights: ``""`` for the pretrained hub weights, else ``"local <sha256 prefix>"``.
        cells: CorLoc per dataset.
        speed: images/s of the row's runs.
        folders: the run folders the row's cells come from.
        split: whether the same label had several runs of one dataset (the folders then tell
            the rows apart).
        ttr: ``""``, or the test-time registers' label (:attr:`objdisc.registers.test_time.RegisterNeurons.label`).
    """

    backbone: str
    options: str
    weights: str = ""
    ttr: str = ""
    cells: dict[str, float] = field(default_factory=dict)
    speed: list[float] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    split: bool = False

    @property
    def label(self) -> str:
        """``backbone [weights] +ttr:<neurons> (options) [folders]``, each part only when it says something."""
        text = self.backbone + (f" [{self.weights}]" if self.weights else "")
        text += f" +ttr:{self.ttr}" if self.ttr else ""
        text += f" ({self.options})" if self.options else ""
        return text + (f" [{', '.join(Path(f).name for f in self.folders)}]" if self.split else "")


def read_run(folder: Path) -> dict[str, Any]:
    """What a row needs from one run folder (``objdisc run``, ``sweep`` point or ``eval --out``).

    Raises:
        ObjdiscError: naming the folder and the missing or unfinished file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ObjdiscError(f"{folder}: not a run folder")
    try:
        metrics = read_json(folder / "metrics.json")
        info = read_json(folder / "run.json")
    except FileNotFoundError as exc:
        raise ObjdiscError(f"{folder}: not a finished run ({Path(exc.filename).name} missing)") from None
    except ValueError as exc:
        raise ObjdiscError(f"{folder}: unreadable run files ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(info, dict):
        raise ObjdiscError(f"{folder}: not an objdisc run (metrics.json or run.json is not an object)")
    if info.get("status") != "finished":
        raise ObjdiscError(f"{folder}: run is {info.get('status')!r}, not finished")
    if metrics.get("corloc") is None:
        raise ObjdiscError(f"{folder}: no CorLoc (a dataset without ground truth?)")
    made_by = metrics.get("producer") or info.get("producer") or {}
    options = {**_DEFAULTS, **info.get("options", {}), **made_by.get("discovery", {})}
    used = ["method", "features", "layer", *(["gram_bias", "k_patches"] if options["method"] == "lost" else ["tau"])]
    differs = [f"{k}={options[k]}" for k in used if options.get(k, _DEFAULTS[k]) != _DEFAULTS[k]]
    weights = made_by.get("weights") or {}
    source = str(weights.get("source") or "")
    tag = "" if not weights or source.startswith("hf-hub:") else f"{source} {str(weights.get('sha256', ''))[:8]}"
    images = metrics.get("image_set") or {"n": metrics.get("n_images"), "sha256": None}
    ttr = made_by.get("test_time_registers")
    return {
        "folder": str(folder),
        "backbone": made_by.get("backbone") or info.get("label") or folder.name,
        "weights": tag.strip(),
        "ttr": RegisterNeurons.from_record(ttr).label if ttr else "",
        "options": ", ".join(differs),
        "dataset": str(metrics["dataset"]).split("/")[0],
        "dataset_name": str(metrics["dataset"]),
        "image_set": (images.get("n"), images.get("sha256")),
        "corloc": float(metrics["corloc"]),
        "images_per_s": metrics.get("images_per_s"),
    }


def read_runs(folders: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished runs among ``folders``, and one note per folder that is not one.

    Raises:
        ObjdiscError: none of the folders is a finished run.
    """
    runs, notes = [], []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except ObjdiscError as exc:
            notes.append(f"skipped {exc}")
    if not runs:
        raise ObjdiscError("no finished run among the folders given: " + "; ".join(notes))
    return runs, notes


def check_image_sets(runs: list[dict[str, Any]]) -> None:
    """Refuse a dataset column whose cells were scored on different images.

    Raises:
        ObjdiscError: naming two runs of one dataset with different image sets (e.g. one made
            with ``--limit``) and how to make them comparable.
    """
    first: dict[str, dict[str, Any]] = {}
    for r in runs:
        other = first.setdefault(r["dataset"], r)
        if other["dataset_name"] != r["dataset_name"]:
            raise ObjdiscError(
                f"{r['folder']} is a run of {r['dataset_name']}, {other['folder']} of {other['dataset_name']}: "
                "one column cannot hold both; give the runs of one split"
            )
        (n_a, sha_a), (n_b, sha_b) = other["image_set"], r["image_set"]
        if n_a != n_b or (sha_a and sha_b and sha_a != sha_b):
            raise ObjdiscError(
                f"{r['folder']} scored {n_b} images of {r['dataset_name']}, {other['folder']} {n_a}"
                f"{' (other images)' if n_a == n_b else ''}: their CorLoc are not comparable; rerun on the "
                "same images, or score one's predictions with `objdisc eval --images-of` the other"
            )


def build_rows(runs: list[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows (in first-seen order) and dataset columns (VOC07, VOC12, COCO20k first).

    Runs with the same backbone, weights and options share a row; a second run of one dataset
    starts another row, and such rows carry their folder names in the label.
    """
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    datasets: list[str] = []
    for r in runs:
        group = groups.setdefault((r["backbone"], r["weights"], r["options"], r["ttr"]), [])
        row = next((row for row in group if r["dataset"] not in row.cells), None)
        if row is None:
            row = Row(r["backbone"], r["options"], r["weights"], r["ttr"])
            group.append(row)
        row.cells[r["dataset"]] = r["corloc"]
        row.folders.append(r["folder"])
        if r["images_per_s"]:
            row.speed.append(float(r["images_per_s"]))
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    rows = []
    for group in groups.values():
        for row in group:
            row.split = len(group) > 1
            rows.append(row)
    known = [d for d in _DATASET_LABELS if d in datasets]
    return rows, known + [d for d in datasets if d not in known]


def _deltas(
    rows: list[Row],
    datasets: list[str],
    key: Callable[[Row], tuple[str, ...]],
    partner: Callable[[Row], tuple[str, ...] | None],
) -> dict[int, list[float | None]]:
    """CorLoc change per dataset of each row over its partner row (``None`` where either lacks
    that dataset). Only unambiguous pairs count: one row under the row's key, one under the
    partner's."""
    index: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(rows):
        index.setdefault(key(r), []).append(i)
    out: dict[int, list[float | None]] = {}
    for i, row in enumerate(rows):
        wanted = partner(row)
        twins = index.get(wanted, []) if wanted is not None else []
        if len(twins) == 1 and len(index[key(row)]) == 1:
            twin = rows[twins[0]]
            out[i] = [row.cells[d] - twin.cells[d] if d in row.cells and d in twin.cells else None for d in datasets]
    return out


def register_deltas(rows: list[Row], datasets: list[str]) -> dict[int, list[float | None]]:
    """``+reg``: each register model over its no-register twin with the same options (neither
    with test-time registers)."""

    def twin(row: Row) -> tuple[str, ...] | None:
        spec = BACKBONES.get(row.backbone)
        return (spec.twin, row.options, "") if spec is not None and spec.twin and not row.ttr else None

    return _deltas(rows, datasets, lambda r: (r.backbone, r.options, r.ttr), twin)


def ttr_deltas(rows: list[Row], datasets: list[str]) -> dict[int, list[float | None]]:
    """``+ttr``: each row with test-time registers over the same backbone, weights and options
    without them."""
    return _deltas(
        rows,
        datasets,
        lambda r: (r.backbone, r.weights, r.options, r.ttr),
        lambda r: (r.backbone, r.weights, r.options, "") if r.ttr else None,
    )


def render(rows: list[Row], datasets: list[str], fmt: str, speed: bool = False) -> str:
    """The table as Markdown or LaTeX (booktabs), best value per column in bold, or CSV."""
    if fmt not in FORMATS:
        raise ObjdiscError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    columns = {"+reg": register_deltas(rows, datasets), "+ttr": ttr_deltas(rows, datasets)}
    columns = {name: found for name, found in columns.items() if found}
    labels = [_DATASET_LABELS.get(d, d) for d in datasets]
    header = ["backbone", *labels, *columns] + (["images/s"] if speed else [])
    best = {d: max((r.cells[d] for r in rows if d in r.cells), default=math.nan) for d in datasets}

    def cell(row: Row, d: str) -> str:
        if d not in row.cells:
            return "--" if fmt == "latex" else ""
        text = f"{row.cells[d]:.1f}"
        if row.cells[d] != best[d] or len(rows) == 1:
            return text
        return {"latex": f"\\textbf{{{text}}}", "md": f"**{text}**"}.get(fmt, text)

    def delta(deltas: dict[int, list[float | None]], i: int) -> str:
        if i not in deltas:
            return ""
        parts = ["--" if v is None else (f"${v:+.1f}$" if fmt == "latex" else f"{v:+.1f}") for v in deltas[i]]
        return " / ".join(parts)

    body = []
    for i, row in enumerate(rows):
        line = [row.label if fmt != "latex" else _latex_escape(row.label), *(cell(row, d) for d in datasets)]
        line += [delta(deltas, i) for deltas in columns.values()]
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


def table(folders: list[Path], fmt: str = "md", speed: bool = False) -> tuple[str, list[str]]:
    """``objdisc table``: read the run folders and render.

    Returns:
        The table, and a note per folder skipped because it is not a finished run.
    """
    runs, notes = read_runs(folders)
    check_image_sets(runs)
    rows, datasets = build_rows(runs)
    return render(rows, datasets, fmt, speed), notes


__all__ = [
    "FORMATS",
    "Row",
    "build_rows",
    "check_image_sets",
    "read_run",
    "read_runs",
    "register_deltas",
    "render",
    "table",
]
