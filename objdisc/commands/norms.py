"""``objdisc norms``: the registers paper's artifact diagnostics on any dataset.

The model and the dataset are resolved before ``--out`` is touched; the norms are computed by
:func:`objdisc.registers.norm_diagnostics.norm_summary` and written by
:func:`objdisc.reports.norm_figures.write_norm_files`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.datasets import DatasetArgs
from objdisc.engine.out_folder import (
    LOCK_NAME,
    check_folder,
    claim_folder,
    lock_out,
    record_outputs,
    recorded_outputs,
)
from objdisc.errors import OptionError
from objdisc.models.args import ModelArgs
from objdisc.registers.norm_diagnostics import norm_summary
from objdisc.reports.norm_figures import NORMS_FILES, write_norm_files
from objdisc.utils.device import resolve_device
from objdisc.utils.provenance import producer


@dataclass(frozen=True)
class NormsConfig:
    """Everything ``objdisc norms`` takes.

    Attributes:
        model: which model (test-time registers included).
        data: which images.
        out: the folder for ``norms.json``, ``layers.csv`` and the pictures.
        limit: the first N images.
        threshold: the high-norm threshold (``None``: found in the bimodal gap).
        all_layers: also a histogram of every block's patch norms.
        max_side: resize larger images first.
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an earlier ``objdisc norms`` output in ``out``.
        figures: also the charts for print in these formats (``pdf``, ``svg``, ``png``; matplotlib).
    """

    model: ModelArgs
    data: DatasetArgs
    out: Path
    limit: int = 200
    threshold: float | None = None
    all_layers: bool = False
    max_side: int | None = None
    device: str = "auto"
    overwrite: bool = False
    figures: tuple[str, ...] = ()


def is_norms_folder(out: Path) -> bool:
    """Whether ``out`` holds an ``objdisc norms`` output written before output manifests existed."""
    try:
        data = json.loads((out / "norms.json").read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in out.iterdir()}
    return isinstance(data, dict) and "threshold_source" in data and names <= {*NORMS_FILES, LOCK_NAME}


def run(config: NormsConfig, progress: bool | None = None) -> dict[str, Any]:
    """Build the model, collect the first ``limit`` images' norms, write the files.

    ``out`` must be new, empty, or an earlier ``objdisc norms`` output (replaced with ``overwrite``
    only): a folder holding anything else is refused before any work
    (:func:`objdisc.engine.out_folder.claim_folder`).

    Returns:
        The summary written to ``norms.json``.

    Raises:
        ObjdiscError: a bad option, dataset, backbone, weights file or ``out``.
    """
    if config.threshold is not None and not (math.isfinite(config.threshold) and config.threshold > 0):
        raise OptionError(f"--threshold {config.threshold}: a norm threshold is a finite number > 0")
    from objdisc.reports.print_figures import parse_formats

    parse_formats(config.figures)  # matplotlib missing: refused before any work
    out = Path(config.out)
    check_folder(out, "objdisc norms", config.overwrite, legacy=is_norms_folder)  # without touching it
    model = config.model.resolve()
    data = config.data.load(exclude=config.out)
    where = resolve_device(config.device)
    with lock_out(out, "objdisc norms"):
        claim_folder(out, "objdisc norms", config.overwrite, legacy=is_norms_folder)  # before the slow work
        backbone = model.build(where)
        made_by = {**producer(model.spec, model.weights, where, "fp32"), "dataset": data.name, "limit": config.limit}
        if model.neurons is not None:
            made_by["test_time_registers"] = model.neurons.describe()
        records = data.records[: config.limit]
        summary, norms = norm_summary(backbone, records, where, config.threshold, config.max_side, made_by, progress)
        written = write_norm_files(out, summary, norms, model.spec.name, config.all_layers, config.figures)
        record_outputs(out, "objdisc norms", sorted({*written, *(out / n for n in NORMS_FILES if (out / n).exists())}))
    return summary


def report(summary: dict[str, Any], out: Path) -> str:
    """What ``objdisc norms`` prints."""
    share = 100 * summary["share_high"]
    found = summary["threshold"]
    line = f"threshold {found:.2f} ({summary['threshold_source']})" if found is not None else "no bimodal gap found"
    lines = [f"{summary['n_images']} images, {summary['n_patch_tokens']:,} patch tokens; {line}"]
    top = summary["output_norm"]["max"]
    lines.append(f"{summary['n_high']:,} high-norm patch tokens ({share:.2f}%); output norm max {top:.1f}")
    cos = summary["neighbour_cosine"]
    if cos["high_norm_mean"] is not None or cos["other_mean"] is not None:
        high, other = (("none" if v is None else f"{v:.3f}") for v in (cos["high_norm_mean"], cos["other_mean"]))
        lines.append(f"patch-embedding cosine to 4 neighbours: high-norm {high}, others {other}")
    if "test_time_registers" in summary:
        ttr = summary["test_time_registers"]
        lines.append(
            f"test-time registers: high-norm patch tokens {ttr['n_high_before']:,} "
            f"({100 * ttr['share_high_before']:.2f}%) -> {ttr['n_high_after']:,} "
            f"({100 * ttr['share_high_after']:.2f}%); extra token norm mean "
            f"{ttr['extra_token_norm']['mean']:.1f}, max {ttr['extra_token_norm']['max']:.1f}"
        )
    lines.append(f"files in {out}/ ({', '.join(_written(out))})")
    return "\n".join(lines)


def _written(out: Path) -> list[str]:
    """The files the run wrote in ``out`` (its manifest), print figures included; the data first."""
    names = recorded_outputs(out)
    first = ["norms.json", "layers.csv"]
    return [n for n in first if n in names] + [n for n in names if n not in first]


__all__ = ["NormsConfig", "is_norms_folder", "report", "run"]
