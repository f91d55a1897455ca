"""Figures for print: PDF, SVG or PNG through matplotlib (``pip install 'objdisc[plots]'``).

The gallery's pictures (:mod:`.panels`, :mod:`.plots`) are OpenCV rasters made for a screen;
these are for a paper: vector boxes, contours and text, a colour bar on every map (with the map's
name and unit), 8-point fonts at a column's width (3.3 in; ``width`` for a page), and panels on
a grid (``rows x cols``, or as square as the panel count allows) instead of one strip.
matplotlib is optional because the PNG gallery needs only OpenCV; every researcher has it, and
it writes PDF and SVG that LaTeX and the journals take as they are.

Colours are the Okabe-Ito palette of :mod:`.plots` (ground truth blue, prediction orange, seed
vermillion, mask sky blue), maps viridis, grey maps ``gray``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.errors import OptionError
from objdisc.reports import plots

FORMATS = ("pdf", "svg", "png")
COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
FONT_SIZE = 8  # points
MISSING = "figures as PDF / SVG need matplotlib: pip install 'objdisc[plots]'"
# the Okabe-Ito colours of :mod:`.plots` (BGR for OpenCV there), as matplotlib's RGB fractions
_RGB = {
    name: (bgr[2] / 255, bgr[1] / 255, bgr[0] / 255)
    for name, bgr in (("blue", plots.BLUE), ("orange", plots.ORANGE), ("vermillion", plots.VERMILLION),
                      ("sky", plots.SKY), ("green", plots.GREEN), ("purple", plots.PURPLE))
}  # fmt: skip
SERIES = ["blue", "orange", "green", "vermillion", "purple", "sky"]  # plots.SERIES's order


@dataclass
class Panel:
    """One panel of a figure.

    Attributes:
        title: above the panel.
        image: ``(H, W, 3)`` uint8 RGB, or ``None`` for a map panel.
        values: ``(H, W)`` float map (with a colour bar), or ``None``.
        colorbar: the colour bar's label (the map's quantity and unit).
        cmap: the map's colour map.
        limits: ``(vmin, vmax)`` of the map, or ``None``: its own range.
        boxes: ``(colour name, [x1, y1, x2, y2], line width)`` drawn on the panel (pixels, x2/y2 exclusive).
        masks: ``(H, W)`` bool masks drawn translucent and outlined (sky blue).
        points: ``(x, y)`` seed centres (pixels), drawn as vermillion squares.
        note: a line under the panel (the image's legend).
    """

    title: str
    image: np.ndarray | None = None
    values: np.ndarray | None = None
    colorbar: str = ""
    cmap: str = "viridis"
    limits: tuple[float, float] | None = None
    boxes: list[tuple[str, Sequence[float], float]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"pdf,svg"`` -> ``("pdf", "svg")``.

    Raises:
        OptionError: an unknown format, or matplotlib missing when any is asked for.
    """
    if not text:
        return ()
    names = tuple(dict.fromkeys(x.strip().lower() for x in (text.split(",") if isinstance(text, str) else text)))
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise OptionError(f"--figures {','.join(unknown)}: use pdf, svg and/or png")
    pyplot()
    return names


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """``"2,3"`` -> ``(2, 3)`` (rows, columns).

    Raises:
        OptionError: not two positive integers.
    """
    if text is None:
        return None
    try:
        rows, cols = (int(v) for v in text.split(","))
    except ValueError:
        raise OptionError(f"--grid {text!r}: give ROWS,COLUMNS (e.g. 2,3)") from None
    if rows < 1 or cols < 1:
        raise OptionError(f"--grid {text!r}: rows and columns must be at least 1")
    return rows, cols


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, fonts at print size.

    Raises:
        OptionError: matplotlib is not installed, naming the extra.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise OptionError(MISSING) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": FONT_SIZE,
            "axes.titlesize": FONT_SIZE,
            "axes.labelsize": FONT_SIZE,
            "xtick.labelsize": FONT_SIZE - 1,
            "ytick.labelsize": FONT_SIZE - 1,
            "legend.fontsize": FONT_SIZE - 1,
            "pdf.fonttype": 42,  # TrueType in the PDF: text stays text, editable and searchable
            "svg.fonttype": "none",
            "svg.hashsalt": "objdisc",  # fixed element ids (else random): reproducible SVG files
        }
    )
    return plt


def layout(n: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """Rows and columns for ``n`` panels: ``grid`` when it holds them, else two columns for 2 to 4
    panels and three above (a column-wide figure stays readable).

    Raises:
        OptionError: a grid too small for the panels.
    """
    if grid is not None:
        if grid[0] * grid[1] < n:
            raise OptionError(f"--grid {grid[0]},{grid[1]}: {grid[0] * grid[1]} cells for {n} panels")
        return grid
    cols = 1 if n == 1 else (2 if n <= 4 else 3)
    return math.ceil(n / cols), cols


def figure(
    panels: Sequence[Panel],
    caption: str,
    path_stem: Path,
    formats: Sequence[str],
    grid: tuple[int, int] | None = None,
    width: float = COLUMN_WIDTH,
    about: str = "",
) -> list[Path]:
    """Write the panels as one figure in each format; returns the files.

    Args:
        panels: the panels, in reading order (row by row).
        caption: the figure's title line (file name, hit / miss).
        path_stem: the files' path without suffix.
        formats: some of :data:`FORMATS`.
        grid: ``(rows, cols)``, or ``None`` (:func:`layout`).
        width: the figure's width in inches.
        about: what produced it (:func:`describe`), in each file's metadata.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    rows, cols = layout(len(panels), grid)
    aspect = _aspect(panels)
    cell_w = width / cols
    height = rows * (cell_w * aspect + 0.55) + 0.25  # each row: the panels, a title and a colour bar
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained")
    fig.suptitle(caption, fontsize=FONT_SIZE)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        ax.set_title(panel.title)
        ax.set_xticks([])
        ax.set_yticks([])
        if panel.note:  # wrapped to the cell: a 6-pt character is about 1/22 in wide
            ax.set_xlabel(textwrap.fill(panel.note, max(16, int(cell_w * 22))), fontsize=FONT_SIZE - 2)
        if panel.image is not None:
            ax.imshow(panel.image, interpolation="nearest")
            for mask in panel.masks:
                overlay = np.zeros((*mask.shape, 4))
                overlay[mask] = (*_RGB["sky"], 0.4)
                ax.imshow(overlay, interpolation="nearest")
                if mask.any() and not mask.all():
                    ax.contour(mask.astype(float), levels=[0.5], colors=[_RGB["sky"]], linewidths=0.6)
            for colour, (x1, y1, x2, y2), line in panel.boxes:
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=line, ec=_RGB[colour]))
            for x, y in panel.points:
                ax.plot([x], [y], marker="s", ms=3, mfc=_RGB["vermillion"], mec="white", mew=0.5)
        elif panel.values is not None:
            low, high = panel.limits if panel.limits is not None else (None, None)
            shown = ax.imshow(panel.values, cmap=panel.cmap, vmin=low, vmax=high, interpolation="nearest")
            bar = fig.colorbar(shown, ax=ax, orientation="horizontal", fraction=0.06, pad=0.03, aspect=25)
            bar.set_label(panel.colorbar, fontsize=FONT_SIZE - 1)
            bar.ax.tick_params(labelsize=FONT_SIZE - 2)
            bar.ax.locator_params(nbins=4)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    return _save(fig, plt, path_stem, formats, about)


def histogram_chart(
    series: Sequence[tuple[str, np.ndarray]],
    title: str,
    xlabel: str,
    path_stem: Path,
    formats: Sequence[str],
    threshold: float | None = None,
    bins: int = 80,
    width: float = COLUMN_WIDTH,
    about: str = "",
) -> list[Path]:
    """Step histograms on a log count axis, with a dashed threshold line; returns the files
    (``about``: what produced it, in the files' metadata)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, width * 0.62), layout="constrained")
    values = [np.asarray(v, np.float64) for _, v in series if len(v)]
    edges = np.linspace(min(v.min() for v in values), max(v.max() for v in values), bins + 1) if values else bins
    for n, (label, data) in enumerate(series):
        if len(data):
            ax.hist(np.asarray(data), bins=edges, histtype="step", lw=1.0, color=_RGB[SERIES[n % 6]], label=label)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=0.8, label=f"threshold {threshold:.1f}")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, plt, path_stem, formats, about)


def line_chart(
    x: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    xlabel: str,
    ylabel: str,
    path_stem: Path,
    formats: Sequence[str],
    width: float = COLUMN_WIDTH,
    about: str = "",
) -> list[Path]:
    """Lines with markers (solid and dashed alternating); returns the files (``about``: what
    produced it, in the files' metadata)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, width * 0.62), layout="constrained")
    markers = "osD^v*"
    for n, (label, ys) in enumerate(series):
        values = [np.nan if v is None else v for v in ys]
        ax.plot(x, values, color=_RGB[SERIES[n % 6]], marker=markers[n % 6], ms=3, lw=1.0,
                ls="-" if n % 2 == 0 else "--", label=label)  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, plt, path_stem, formats, about)


def describe(producer: dict[str, Any], extra: str = "") -> str:
    """One line of what produced a figure, from a run's ``producer`` block: objdisc's version,
    the backbone and its timm model, the weights (source and sha256), device and precision.

    Example:
        ``objdisc 0.1.0; dinov2_reg (vit_large_patch14_reg4_dinov2.lvd142m); weights hub
        sha256 3f2a…; cpu fp32; lost``
    """
    weights = producer.get("weights", {})
    parts = [
        f"objdisc {producer.get('versions', {}).get('objdisc', '?')}",
        f"{producer.get('backbone')} ({producer.get('timm_model')})",
        f"weights {weights.get('source')} sha256 {weights.get('sha256')}",
        f"{producer.get('device')} {producer.get('precision')}",
    ]
    return "; ".join([*parts, extra] if extra else parts)


def _aspect(panels: Sequence[Panel]) -> float:
    for panel in panels:
        array = panel.image if panel.image is not None else panel.values
        if array is not None:
            return array.shape[0] / max(1, array.shape[1])
    return 0.75


def _save(fig: Any, plt: Any, path_stem: Path, formats: Sequence[str], about: str) -> list[Path]:
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in formats:
            path = path_stem.with_name(path_stem.name + f".{fmt}")
            fig.savefig(path, format=fmt, dpi=300 if fmt == "png" else None, metadata=_metadata(fmt, about))
            written.append(path)
    finally:
        plt.close(fig)
    return written


def _metadata(fmt: str, about: str) -> dict[str, str | None]:
    """What produced the file (``about``) and no creation date (matplotlib writes one
    otherwise), so that one run's figures are byte-identical however often they are drawn."""
    if fmt == "pdf":
        return {"Creator": "objdisc", "CreationDate": None, "Subject": about or None}
    if fmt == "svg":
        return {"Creator": "objdisc", "Date": None, "Description": about or None}
    return {"Software": "objdisc", "Description": about} if about else {"Software": "objdisc"}


__all__ = [
    "COLUMN_WIDTH",
    "FORMATS",
    "Panel",
    "describe",
    "figure",
    "histogram_chart",
    "layout",
    "line_chart",
    "parse_formats",
    "parse_grid",
    "pyplot",
]
