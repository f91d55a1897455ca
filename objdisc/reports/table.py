"""``objdisc table``: comparison tables (Markdown, LaTeX, CSV) from run folders.

Every number comes from a run's ``metrics.json`` metric blocks (:mod:`objdisc.evaluation.evaluator`)
and every label from its ``run.json`` / ``producer`` block, never retyped. Rows are backbone +
the options that differ from plain LOST on last-layer keys (a method's own defaults are read
from the method); columns are datasets, times the metrics shown (each evaluator's headline
values, or ``--metric``); the best value of a column is bold, by the metric's own direction. A
register model whose no-register twin is in the table gets a "+reg" column with its change per
column, and a row with test-time registers whose plain run is in the table a "+ttr" column.
Each block is checked against its own counts by its evaluator before it is shown.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.engine.run_files import read_metrics
from objdisc.errors import ObjdiscError
from objdisc.evaluation import EVALUATORS
from objdisc.methods import METHODS
from objdisc.methods.options import options_of
from objdisc.models.specs import BACKBONES
from objdisc.models.test_time_registers import RegisterNeurons
from objdisc.utils.jsonio import read_json

FORMATS = ("md", "latex", "csv")
_DATASET_LABELS = {"voc07": "VOC07", "voc12": "VOC12", "coco20k": "COCO20k"}

Column = tuple[str, str]  # (dataset, metric value name)


class UntrustedMetricsError(ObjdiscError):
    """A metrics.json whose numbers disagree with its own counts (edited by hand?)."""


@dataclass
class Row:
    """One table row: a backbone with its weights and options, and its values per column.

    Attributes:
        backbone: the backbone name (or an eval row's label).
        options: the options that differ from plain LOST, ``"k=v, ..."``.
        weights: ``""`` for the pretrained hub weights, else ``"local <sha256 prefix>"``.
        ttr: ``""``, or the test-time registers' label
            (:attr:`objdisc.models.test_time_registers.RegisterNeurons.label`).
        cells: value per ``(dataset, metric)`` column.
        speed: images/s of the row's runs.
        folders: the run folders the row's cells come from.
        split: whether the same label had several runs of one dataset (the folders then tell
            the rows apart).
    """

    backbone: str
    options: str
    weights: str = ""
    ttr: str = ""
    cells: dict[Column, float] = field(default_factory=dict)
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


def options_label(discovery: dict[str, Any], recorded: dict[str, Any]) -> str:
    """``"k=v, ..."`` of what differs from plain LOST on last-layer keys.

    Args:
        discovery: ``producer.discovery`` of the run (method, features, layer, the method's options).
        recorded: ``run.json`` ``options`` (where objdisc 0.1 kept the method options).
    """
    method = str(discovery.get("method") or recorded.get("method") or "lost")
    cls = METHODS.get(method)
    differs = [] if method == "lost" else [f"method={method}"]
    default_kind = cls.feature_kinds[0] if cls is not None else "k"
    kind = discovery.get("features", recorded.get("features")) or default_kind
    if kind != default_kind:
        differs.append(f"features={kind}")
    layer = discovery.get("layer", recorded.get("layer", -1))
    if layer != -1:
        differs.append(f"layer={layer}")
    own = recorded.get("method_options") or {}
    for info in options_of(cls) if cls is not None else []:
        value = discovery.get(info.name, own.get(info.name, recorded.get(info.name, info.default)))
        if value != info.default:
            differs.append(f"{info.name}={value}")
    if discovery.get("refine", "none") != "none":  # the saliency map's refinement (--refine)
        differs.append(f"refine={discovery['refine']}")
    return ", ".join(differs)


def check_blocks(folder: Path, blocks: dict[str, Any]) -> None:
    """Refuse metric blocks whose numbers their evaluator does not trust.

    Raises:
        UntrustedMetricsError: naming the folder, the metric and why.
    """
    fix = "the file was changed after objdisc wrote it: rerun or re-evaluate"
    for name, block in blocks.items():
        if not isinstance(block, dict):
            raise UntrustedMetricsError(f"{folder}/metrics.json: metrics.{name} is not an object; {fix}")
        for key, value in (block.get("values") or {}).items():
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise UntrustedMetricsError(
                    f"{folder}/metrics.json: {name} value {key} = {value!r} is not a number; {fix}"
                )
        evaluator = EVALUATORS.get(name)
        why = evaluator.check(block) if evaluator is not None else None
        if why is not None:
            raise UntrustedMetricsError(f"{folder}/metrics.json: {why}; {fix}")


def read_run(folder: Path) -> dict[str, Any]:
    """What a row needs from one run folder (``objdisc run``, ``sweep`` point or ``eval --out``).

    Raises:
        ObjdiscError: naming the folder and the missing or unfinished file.
        UntrustedMetricsError: numbers that disagree with their own counts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ObjdiscError(f"{folder}: not a run folder")
    try:
        metrics = read_metrics(folder)
        info = read_json(folder / "run.json")
    except FileNotFoundError as exc:
        raise ObjdiscError(f"{folder}: not a finished run ({Path(exc.filename).name} missing)") from None
    except ValueError as exc:
        raise ObjdiscError(f"{folder}: unreadable run files ({exc})") from None
    if not isinstance(info, dict):
        raise ObjdiscError(f"{folder}: not an objdisc run (run.json is not an object)")
    if info.get("status") != "finished":
        raise ObjdiscError(f"{folder}: run is {info.get('status')!r}, not finished")
    blocks = metrics.get("metrics") or {}
    if not isinstance(blocks, dict):
        raise UntrustedMetricsError(f"{folder}/metrics.json: 'metrics' is not an object; rerun or re-evaluate")
    check_blocks(folder, blocks)
    values: dict[str, float] = {}
    labels: dict[str, str] = {}
    higher: dict[str, bool] = {}
    headline: list[str] = []
    for block in blocks.values():
        for key, value in (block.get("values") or {}).items():
            if value is not None:
                values[key] = float(value)
                labels[key] = str((block.get("labels") or {}).get(key, key))
                higher[key] = bool((block.get("higher_is_better") or {}).get(key, True))
        headline += [k for k in block.get("headline") or [] if k in values]
    if not values:
        raise ObjdiscError(f"{folder}: no metric to show (a dataset without ground truth?)")
    made_by = metrics.get("producer") or info.get("producer") or {}
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
        "options": options_label(made_by.get("discovery") or {}, info.get("options") or {}),
        "dataset": str(metrics["dataset"]).split("/")[0],
        "dataset_name": str(metrics["dataset"]),
        "image_set": (images.get("n"), images.get("sha256")),
        "values": values,
        "labels": labels,
        "higher_is_better": higher,
        "headline": headline,
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
        except UntrustedMetricsError:
            raise
        except ObjdiscError as exc:
            notes.append(f"skipped {exc}")
    if not runs:
        raise ObjdiscError("no finished run among the folders given: " + "; ".join(notes))
    return runs, notes


def _image_set(r: dict[str, Any]) -> tuple[str, int, str | None]:
    """``(dataset name, images scored, sha256 of their list or None)`` of a run."""
    n, sha = r["image_set"]
    return r["dataset_name"], n, sha


def _same_images(a: tuple[str, int, str | None], b: tuple[str, int, str | None]) -> bool:
    return a[0] == b[0] and a[1] == b[1] and (a[2] is None or b[2] is None or a[2] == b[2])


def group_by_image_set(runs: list[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Runs split into tables whose every dataset column holds one image set, and a note per
    extra table saying which runs it holds and why (a ``--limit`` run beside full ones, another split).

    A run goes to the first table whose column of its dataset is empty or scored on the same
    images (same split, same number of images, same image list when both recorded it).
    """
    groups: list[tuple[dict[str, tuple[str, int, str | None]], list[dict[str, Any]]]] = []
    for r in runs:
        key = _image_set(r)
        for sets, members in groups:
            if r["dataset"] not in sets or _same_images(sets[r["dataset"]], key):
                sets.setdefault(r["dataset"], key)
                members.append(r)
                break
        else:
            groups.append(({r["dataset"]: key}, [r]))
    notes = []
    for n, (sets, members) in enumerate(groups[1:], start=2):
        what = ", ".join(f"{name}: {count} images" for name, count, _ in sets.values())
        folders = ", ".join(str(m["folder"]) for m in members)
        notes.append(
            f"table {n} holds {folders} ({what}): scored on other images than table 1's runs of the same dataset, "
            "so not in its columns (rerun on the same images, or `objdisc eval --images-of` to compare)"
        )
    return [members for _, members in groups], notes


def columns_of(runs: list[dict[str, Any]], metrics: Sequence[str] | None = None) -> list[Column]:
    """The ``(dataset, metric)`` columns: datasets VOC07, VOC12, COCO20k first, then in first-seen
    order; per dataset the asked metrics, or every headline metric its runs have.

    Raises:
        ObjdiscError: an asked metric that no run has.
    """
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    known = [d for d in _DATASET_LABELS if d in datasets]
    datasets = known + [d for d in datasets if d not in known]
    if metrics:
        have = {k for r in runs for k in r["values"]}
        unknown = [m for m in metrics if m not in have]
        if unknown:
            have_text = ", ".join(sorted(have))
            raise ObjdiscError(f"--metric {', '.join(unknown)}: no run has it (the runs have {have_text})")
    out: list[Column] = []
    for dataset in datasets:
        of = [r for r in runs if r["dataset"] == dataset]
        names = list(metrics) if metrics else list(dict.fromkeys(k for r in of for k in r["headline"]))
        out += [(dataset, name) for name in names if any(name in r["values"] for r in of)]
    return out


def build_rows(runs: list[dict[str, Any]], metrics: Sequence[str] | None = None) -> tuple[list[Row], list[Column]]:
    """Rows (in first-seen order) and columns (:func:`columns_of`).

    Runs with the same backbone, weights and options share a row; a second run of one dataset
    starts another row, and such rows carry their folder names in the label.
    """
    columns = columns_of(runs, metrics)
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in runs:
        group = groups.setdefault((r["backbone"], r["weights"], r["options"], r["ttr"]), [])
        row = next((row for row in group if not any(c[0] == r["dataset"] for c in row.cells)), None)
        if row is None:
            row = Row(r["backbone"], r["options"], r["weights"], r["ttr"])
            group.append(row)
        for dataset, name in columns:
            if dataset == r["dataset"] and name in r["values"]:
                row.cells[(dataset, name)] = r["values"][name]
        row.folders.append(r["folder"])
        if r["images_per_s"]:
            row.speed.append(float(r["images_per_s"]))
    rows = []
    for group in groups.values():
        for row in group:
            row.split = len(group) > 1
            rows.append(row)
    return rows, columns


def _deltas(
    rows: list[Row],
    columns: list[Column],
    key: Callable[[Row], tuple[str, ...]],
    partner: Callable[[Row], tuple[str, ...] | None],
) -> dict[int, list[float | None]]:
    """Change per column of each row over its partner row (``None`` where either lacks that
    column). Only unambiguous pairs count: one row under the row's key, one under the partner's."""
    index: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(rows):
        index.setdefault(key(r), []).append(i)
    out: dict[int, list[float | None]] = {}
    for i, row in enumerate(rows):
        wanted = partner(row)
        twins = index.get(wanted, []) if wanted is not None else []
        if len(twins) == 1 and len(index[key(row)]) == 1:
            twin = rows[twins[0]]
            out[i] = [row.cells[c] - twin.cells[c] if c in row.cells and c in twin.cells else None for c in columns]
    return out


def register_deltas(rows: list[Row], columns: list[Column]) -> dict[int, list[float | None]]:
    """``+reg``: each register model over its no-register twin with the same options (neither
    with test-time registers)."""

    def twin(row: Row) -> tuple[str, ...] | None:
        spec = BACKBONES.get(row.backbone)
        return (spec.twin, row.options, "") if spec is not None and spec.twin and not row.ttr else None

    return _deltas(rows, columns, lambda r: (r.backbone, r.options, r.ttr), twin)


def ttr_deltas(rows: list[Row], columns: list[Column]) -> dict[int, list[float | None]]:
    """``+ttr``: each row with test-time registers over the same backbone, weights and options
    without them."""
    return _deltas(
        rows,
        columns,
        lambda r: (r.backbone, r.weights, r.options, r.ttr),
        lambda r: (r.backbone, r.weights, r.options, "") if r.ttr else None,
    )


def render(
    rows: list[Row],
    columns: list[Column],
    fmt: str,
    speed: bool = False,
    labels: dict[str, str] | None = None,
    higher_is_better: dict[str, bool] | None = None,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """The table as Markdown, LaTeX (booktabs) or CSV, best value per column in bold.

    Markdown shows a row's changes over its twin (``+reg``, ``+ttr``) in one cell, ``a / b / c``;
    LaTeX and CSV give every metric column its own change column (``+reg VOC07``), numbers a
    spreadsheet or ``\\num`` can use. LaTeX groups the columns of a dataset under one
    ``\\multicolumn`` heading (with ``\\cmidrule``) when the table shows several metrics, and
    with ``caption`` or ``label`` is a whole ``table`` float; it needs ``\\usepackage{booktabs}``.

    Args:
        labels: metric name -> its column label (``corloc`` -> ``CorLoc``); a table of one
            metric labels its columns by dataset only.
        higher_is_better: metric name -> its direction (default: higher is better).
        caption: LaTeX only: the float's caption.
        label: LaTeX only: the float's ``\\label``.
    """
    if fmt not in FORMATS:
        raise ObjdiscError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    labels, higher_is_better = labels or {}, higher_is_better or {}
    deltas = {"+reg": register_deltas(rows, columns), "+ttr": ttr_deltas(rows, columns)}
    deltas = {name: found for name, found in deltas.items() if found}
    one_metric = len({name for _, name in columns}) == 1

    def title(column: Column) -> str:
        dataset, name = column
        return _DATASET_LABELS.get(dataset, dataset) + ("" if one_metric else f" {labels.get(name, name)}")

    def best(column: Column) -> float:
        values = [r.cells[column] for r in rows if column in r.cells]
        pick = max if higher_is_better.get(column[1], True) else min
        return pick(values, default=math.nan)

    tops = {c: best(c) for c in columns}
    empty = "--" if fmt == "latex" else ""

    def cell(row: Row, column: Column) -> str:
        if column not in row.cells:
            return empty
        text = f"{row.cells[column]:.1f}"
        if row.cells[column] != tops[column] or len(rows) == 1:
            return text
        return {"latex": f"\\textbf{{{text}}}", "md": f"**{text}**"}.get(fmt, text)

    def change(value: float | None) -> str:
        if value is None:
            return empty
        return f"${value:+.1f}$" if fmt == "latex" else f"{value:+.1f}"

    def speed_cell(row: Row) -> str:
        return f"{sorted(row.speed)[len(row.speed) // 2]:.1f}" if row.speed else empty

    per_column = fmt != "md"
    header = ["backbone", *map(title, columns)]
    if per_column:
        header += [f"{name} {title(c)}" for name in deltas for c in columns]
    else:
        header += list(deltas)
    header += ["images/s"] if speed else []
    body = []
    for i, row in enumerate(rows):
        line = [_latex_escape(row.label) if fmt == "latex" else row.label, *(cell(row, c) for c in columns)]
        for found in deltas.values():
            values = found.get(i)
            if per_column:
                line += [change(None if values is None else v) for v in (values or [None] * len(columns))]
            else:
                line.append("" if values is None else " / ".join("--" if v is None else change(v) for v in values))
        if speed:
            line.append(speed_cell(row))
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
    return _latex(header, body, columns, deltas, one_metric, speed, labels, caption, label)


def _latex(
    header: list[str],
    body: list[list[str]],
    columns: list[Column],
    deltas: dict[str, Any],
    one_metric: bool,
    speed: bool,
    labels: dict[str, str],
    caption: str | None,
    label: str | None,
) -> str:
    """The booktabs ``tabular`` (in a ``table`` float with a caption or label); with several metrics,
    a first header row of datasets (and change kinds) spanning their metric columns."""
    spec = "l" + "r" * (len(header) - 1)
    heading: list[str] = []
    if one_metric:
        heading.append(" & ".join(_latex_escape(h) for h in header) + r" \\")
    else:
        groups: list[tuple[str, int]] = [("", 1)]
        names: list[str] = ["backbone"]
        for prefix in ["", *deltas]:
            for dataset in dict.fromkeys(d for d, _ in columns):
                of = [c for c in columns if c[0] == dataset]
                groups.append(((prefix + " " if prefix else "") + _DATASET_LABELS.get(dataset, dataset), len(of)))
                names += [labels.get(name, name) for _, name in of]
        if speed:
            groups.append(("", 1))
            names.append("images/s")
        top, rules, start = [], [], 0
        for text, width in groups:
            name = _latex_escape(text)
            top.append(f"\\multicolumn{{{width}}}{{c}}{{{name}}}" if text and width > 1 else name)
            if text:
                rules.append(f"\\cmidrule(lr){{{start + 1}-{start + width}}}")
            start += width
        heading += [" & ".join(top) + r" \\", " ".join(rules), " & ".join(_latex_escape(n) for n in names) + r" \\"]
    tabular = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        *heading,
        "\\midrule",
        *(" & ".join(line) + r" \\" for line in body),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    if caption is None and label is None:
        return "\n".join(tabular) + "\n"
    float_lines = ["\\begin{table}[t]", "\\centering"]
    if caption is not None:
        float_lines.append(f"\\caption{{{_latex_escape(caption)}}}")
    if label is not None:
        float_lines.append(f"\\label{{{label}}}")
    return "\n".join([*float_lines, *tabular, "\\end{table}"]) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def table(
    folders: list[Path],
    fmt: str = "md",
    speed: bool = False,
    metrics: Sequence[str] | None = None,
    caption: str | None = None,
    label: str | None = None,
) -> tuple[str, list[str]]:
    """``objdisc table``: read the run folders and render.

    Runs scored on different images of one dataset are never put in one column: they go to
    further tables (:func:`group_by_image_set`), one after another in the text, each said in a note.

    Args:
        metrics: the metric values to show (``corloc``), or ``None``: each evaluator's headline ones.
        caption, label: LaTeX only (:func:`render`); the tables after the first get ``(2)``, ... and
            ``-2``, ... appended.

    Returns:
        The table(s), and a note per folder skipped because it is not a finished run and per extra table.
    """
    runs, notes = read_runs(folders)
    groups, group_notes = group_by_image_set(runs)
    texts = []
    for n, members in enumerate(groups, start=1):
        rows, columns = build_rows(members, metrics)
        labels = {k: v for r in members for k, v in r["labels"].items()}
        higher = {k: v for r in members for k, v in r["higher_is_better"].items()}
        suffix = (f" ({n})", f"-{n}") if n > 1 else ("", "")
        texts.append(
            render(
                rows, columns, fmt, speed, labels, higher,
                None if caption is None else caption + suffix[0], None if label is None else label + suffix[1],
            )
        )  # fmt: skip
    return "\n".join(texts), notes + group_notes


__all__ = [
    "FORMATS",
    "Row",
    "UntrustedMetricsError",
    "build_rows",
    "columns_of",
    "group_by_image_set",
    "options_label",
    "read_run",
    "read_runs",
    "register_deltas",
    "render",
    "table",
]
