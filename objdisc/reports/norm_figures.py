"""The files of ``objdisc norms``: ``norms.json``, ``layers.csv`` and the pictures of the token norms.

In ``--out``: ``norms.json`` (the summary of :func:`objdisc.registers.norm_diagnostics.norm_summary`),
``layers.csv``, ``histogram.png``, ``layers.png``, and, with ``--all-layers``, ``histogram_layers.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from objdisc.registers.norm_diagnostics import NormSummary
from objdisc.utils.jsonio import write_json_atomic, write_text_atomic

NORMS_FILES = ("norms.json", "layers.csv", "histogram.png", "layers.png", "histogram_layers.png")


def layers_csv(summary: dict[str, Any]) -> str:
    """Per-layer table as CSV text."""
    buffer = io.StringIO()
    columns = ["block", "patch_mean", "patch_max", "register_mean", "register_max", "cls_mean"]
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in summary["layers"]:
        writer.writerow({k: "" if row[k] is None else row[k] for k in columns})
    return buffer.getvalue()


def write_norm_files(
    out: Path,
    summary: dict[str, Any],
    acc: NormSummary,
    label: str,
    all_layers: bool,
    figures: tuple[str, ...] = (),
) -> list[Path]:
    """norms.json, layers.csv and the pictures; with ``figures`` (``pdf``, ``svg``, ``png``) each
    chart also for print, ``histogram.print.pdf`` ... (:mod:`objdisc.reports.print_figures`);
    returns the written paths."""
    import cv2

    from objdisc.reports.plots import histogram, lines

    out.mkdir(parents=True, exist_ok=True)
    series = [("patch tokens", acc.patch_norms())]
    registers = acc.register_norms()
    if registers.size:
        series.append(("register tokens", registers))
    share = 100 * summary["share_high"]
    title = f"{label}: output token norms, {summary['n_patch_tokens']:,} patches, {share:.2f}% above threshold"
    pictures = {"histogram.png": histogram(series, threshold=summary["threshold"], title=title)}
    blocks = [row["block"] for row in summary["layers"]]
    chart = [("patch mean", [r["patch_mean"] for r in summary["layers"]])]
    chart.append(("patch max", [r["patch_max"] for r in summary["layers"]]))
    if summary["layers"][0]["register_mean"] is not None:
        chart.append(("register mean", [r["register_mean"] for r in summary["layers"]]))
    if summary["layers"][0]["cls_mean"] is not None:
        chart.append(("CLS", [r["cls_mean"] for r in summary["layers"]]))
    pictures["layers.png"] = lines(blocks, chart, title=f"{label}: token norms per block")
    if all_layers:
        per_layer = [(f"block {b}", acc.patch_norms(b)) for b in blocks]
        pictures["histogram_layers.png"] = histogram(per_layer[-6:], title=f"{label}: patch norms, last 6 blocks")
    written = []
    for name, image in pictures.items():
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError(f"PNG encoding of {name} failed")
        (out / name).write_bytes(data.tobytes())
        written.append(out / name)
    if figures:
        from objdisc.reports.print_figures import describe, histogram_chart, line_chart

        about = describe(summary.get("producer", {}), "objdisc norms")
        written += histogram_chart(
            series, title, "output token L2 norm", out / "histogram.print", figures,
            threshold=summary["threshold"], about=about,
        )  # fmt: skip
        written += line_chart(blocks, chart, f"{label}: token norms per block", "block", "L2 norm",
                              out / "layers.print", figures, about=about)  # fmt: skip
        if all_layers:
            written += histogram_chart(per_layer[-6:], f"{label}: patch norms, last 6 blocks", "patch token L2 norm",
                                       out / "histogram_layers.print", figures, about=about)  # fmt: skip
    write_text_atomic(out / "layers.csv", layers_csv(summary))
    write_json_atomic(out / "norms.json", summary)
    return [*written, out / "layers.csv", out / "norms.json"]



__all__ = ["NORMS_FILES", "layers_csv", "write_norm_files"]
