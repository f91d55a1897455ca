"""``objdisc reproduce --table NAME``: run every cell of a published table and print it beside the paper.

Each runnable row x dataset is an ordinary ``objdisc run`` into ``OUT/<backbone>-<features>-<dataset>``
(resumable: rerun the command after a crash and finished cells are read back, not redone); a cell
that fails (no weights access, a missing dataset) is reported and the others go on. The table
printed is measured / published per dataset, and the change a row with registers brings over
its row without.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from objdisc.errors import OptionError
from objdisc.reports.paper_tables import TABLES, PaperRow, PaperTable


@dataclass(frozen=True)
class ReproduceConfig:
    """What ``objdisc reproduce`` was asked.

    Attributes:
        table: a name of :data:`objdisc.reports.paper_tables.TABLES`.
        out: the folder of the cells' run folders.
        data_root: where the datasets are (or go, with ``download``).
        device: ``auto``, ``cpu`` or ``cuda``.
        download: fetch each dataset first if it is missing.
        limit: only the first N images of each dataset (a quick look; not the paper's numbers).
    """

    table: str
    out: Path
    data_root: Path | None = None
    device: str = "auto"
    download: bool = False
    limit: int | None = None


def paper_table(name: str) -> PaperTable:
    """The table called ``name``.

    Raises:
        OptionError: an unknown name, listing the known ones.
    """
    if name not in TABLES:
        raise OptionError(f"--table {name}: unknown; known: {', '.join(TABLES)}")
    return TABLES[name]


def cell_folder(out: Path, row: PaperRow, dataset: str) -> Path:
    """The run folder of one cell."""
    return out / f"{row.backbone}-{row.features}-{dataset}"


def commands(config: ReproduceConfig) -> list[list[str]]:
    """The ``objdisc run`` command of every runnable cell."""
    table = paper_table(config.table)
    out = []
    for row in table.rows:
        if row.backbone is None:
            continue
        for dataset in table.datasets:
            cmd = ["objdisc", "run", "-b", row.backbone, "-d", dataset, "--method", table.method]
            cmd += ["--features", row.features, "-o", str(cell_folder(config.out, row, dataset))]
            cmd += ["--data-root", str(config.data_root)] if config.data_root is not None else []
            cmd += ["--device", config.device] + (["--download"] if config.download else [])
            cmd += ["--limit", str(config.limit)] if config.limit else []
            out.append(cmd)
    return out


def measured(config: ReproduceConfig) -> dict[tuple[str, str], float | None]:
    """``(backbone, dataset) -> the metric`` of every cell whose run folder is finished."""
    from objdisc.engine.run_files import read_metrics

    table = paper_table(config.table)
    found: dict[tuple[str, str], float | None] = {}
    for row in table.rows:
        if row.backbone is None:
            continue
        for dataset in table.datasets:
            folder = cell_folder(config.out, row, dataset)
            if (folder / "metrics.json").exists():
                block = (read_metrics(folder).get("metrics") or {}).get(table.metric) or {}
                found[(row.backbone, dataset)] = (block.get("values") or {}).get(table.metric)
    return found


def side_by_side(config: ReproduceConfig, values: dict[tuple[str, str], float | None]) -> str:
    """Markdown: per row and dataset ``measured / published`` (blank where missing), and a note per
    row not run."""
    table = paper_table(config.table)
    names = {"voc07": "VOC07", "voc12": "VOC12", "coco20k": "COCO20k"}
    header = ["row (paper)", "backbone", *(f"{names.get(d, d)} measured / published" for d in table.datasets)]
    lines = [f"{table.title} ({table.source}); {table.metric}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join([":---", ":---", *["---:"] * len(table.datasets)]) + "|")
    for row in table.rows:
        cells = []
        for dataset in table.datasets:
            got = values.get((row.backbone or "", dataset))
            published = row.published.get(dataset)
            cells.append(" / ".join("" if v is None else f"{v:.1f}" for v in (got, published)).strip(" /") or "")
        backbone = row.backbone or f"-- ({row.note})"
        lines.append(f"| {row.label} | {backbone} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(
    config: ReproduceConfig,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    run_cell: Callable[[list[str]], int] | None = None,
) -> str:
    """Run every runnable cell (resumable), then the side-by-side table.

    Args:
        run_cell: runs one ``objdisc run`` command line and returns its exit status (default:
            :func:`run_in_process`, each cell in its own Python process, its output on this
            terminal, its memory given back when it ends).

    Returns:
        The side-by-side table (also the failures, each on its own line, before it).
    """
    paper_table(config.table)  # an unknown name is refused before anything runs
    extra = [] if progress is None else ["--progress" if progress else "--no-progress"]
    failed = []
    for cmd in commands(config):
        echo("$ " + shlex.join(cmd))
        code = (run_cell or run_in_process)(cmd + extra)
        if code != 0:  # one failed cell never stops the others
            failed.append(shlex.join(cmd))
    text = side_by_side(config, measured(config))
    return "\n".join([*(f"failed: {cmd}" for cmd in failed), text])


def run_in_process(cmd: list[str]) -> int:
    """``objdisc ARGS`` as ``python -m objdisc ARGS`` with this interpreter; its exit status."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "objdisc", *cmd[1:]], check=False).returncode


def describe(name: str) -> str:
    """What reproducing a table downloads and how long it takes."""
    table = paper_table(name)
    return f"{table.title} ({table.source})\ndownloads: {table.downloads}\ntime: {table.estimate}"


__all__ = [
    "ReproduceConfig",
    "cell_folder",
    "commands",
    "describe",
    "measured",
    "paper_table",
    "run",
    "run_in_process",
    "side_by_side",
]
