"""``objdisc table``: a comparison table from run folders (rows: backbone and options; columns:
datasets x metrics), as Markdown, LaTeX or CSV (:func:`objdisc.reports.table.table`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from objdisc.reports.table import table


@dataclass(frozen=True)
class TableConfig:
    """Everything ``objdisc table`` takes.

    Attributes:
        runs: run folders (or ``objdisc eval --out`` folders).
        fmt: ``md``, ``latex`` or ``csv``.
        speed: add an images/s column (the median over the row's runs).
        metrics: the metrics to show (empty: each metric's headline values).
        caption: LaTeX: the table float's caption.
        label: LaTeX: the table float's label.
    """

    runs: list[Path]
    fmt: str = "md"
    speed: bool = False
    metrics: list[str] = field(default_factory=list)
    caption: str | None = None
    label: str | None = None


def run(config: TableConfig) -> tuple[str, list[str]]:
    """The table's text (a table per image set) and the notes for the user (runs skipped and why,
    tables after the first and why).

    Raises:
        ObjdiscError: no usable run, untrusted metrics.
    """
    return table(
        list(config.runs), config.fmt, config.speed, list(config.metrics) or None, config.caption, config.label
    )


__all__ = ["TableConfig", "run"]
