"""Two small charts drawn with OpenCV: a log-count histogram and a per-layer line chart.

OpenCV is already a dependency (image decoding), and these two charts need only lines,
rectangles and text; matplotlib would add a 40 MB dependency (and a font cache built on first
import) for them. Colours are the Okabe-Ito palette, readable with every common colour-vision
deficiency; series are also told apart by line style (solid / dashed) and marker.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import cv2
import numpy as np

# Okabe-Ito, as BGR for OpenCV.
BLUE = (178, 114, 0)
ORANGE = (0, 159, 230)
SKY = (233, 180, 86)
GREEN = (115, 158, 0)
VERMILLION = (0, 94, 213)
PURPLE = (167, 121, 204)
BLACK = (0, 0, 0)
GREY = (170, 170, 170)
WHITE = (255, 255, 255)
SERIES = [BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def text(image: np.ndarray, s: str, xy: tuple[int, int], scale: float = 0.45, color=BLACK, thickness: int = 1) -> None:
    """Anti-aliased text with its baseline at ``xy`` (pixels)."""
    cv2.putText(image, s, xy, _FONT, scale, color, thickness, cv2.LINE_AA)


def _frame(
    size: tuple[int, int], title: str, xlabel: str, ylabel: str, legend_width: int = 0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """White canvas ``(H, W)`` with a title and axis labels; returns it and the plot area x0, y0, x1, y1
    (``legend_width`` pixels are kept free on the right for a legend)."""
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    area = (70, 40, width - 20 - legend_width, height - 50)
    text(image, title, (area[0], 24), 0.55, BLACK, 1)
    text(image, xlabel, ((area[0] + area[2]) // 2 - 4 * len(xlabel), height - 12))
    label = np.full((20, 8 * len(ylabel) + 8, 3), 255, np.uint8)
    text(label, ylabel, (2, 15))
    rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top = max(0, (area[1] + area[3]) // 2 - rotated.shape[0] // 2)
    image[top : top + rotated.shape[0], 4 : 4 + rotated.shape[1]] = rotated[: height - top]
    cv2.rectangle(image, area[:2], area[2:], BLACK, 1)
    return image, area


def _ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for mult in (1, 2, 5, 10):
        if span / (step * mult) <= count:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2g}"


def histogram(
    series: Sequence[tuple[str, np.ndarray]],
    bins: int = 80,
    threshold: float | None = None,
    title: str = "",
    xlabel: str = "token norm",
    size: tuple[int, int] = (420, 720),
) -> np.ndarray:
    """Histogram(s) of values with a log10 count axis, optional vertical threshold line.

    Args:
        series: ``(label, values)`` pairs, drawn as outlined step histograms in series colours.
        bins: number of equal-width bins over the joint range.
        threshold: drawn as a dashed vertical line when given.

    Returns:
        ``(H, W, 3)`` uint8 BGR image.
    """
    image, (x0, y0, x1, y1) = _frame(size, title, xlabel, "count (log10)")
    values = [np.asarray(v, np.float64) for _, v in series if len(v)]
    lo = min((float(v.min()) for v in values), default=0.0)
    hi = max((float(v.max()) for v in values), default=1.0)
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(np.asarray(v, np.float64), edges)[0] for _, v in series]
    top = max((int(c.max()) for c in counts), default=1)
    log_top = math.log10(max(top, 1)) + 0.2

    def px(x: float) -> int:
        return int(x0 + (x - lo) / (hi - lo) * (x1 - x0))

    def py(count: float) -> int:  # 0 counts sit on the axis; 1 count is log10(1) = 0 above it
        level = math.log10(count) + 0.2 if count > 0 else 0.0
        return int(y1 - level / log_top * (y1 - y0))

    for tick in _ticks(lo, hi):
        cv2.line(image, (px(tick), y1), (px(tick), y1 + 4), BLACK, 1)
        text(image, _fmt(tick), (px(tick) - 10, y1 + 18), 0.4)
    for power in range(math.floor(log_top) + 1):
        y = py(10**power)
        if y < y0:
            break
        cv2.line(image, (x0 - 4, y), (x0, y), BLACK, 1)
        text(image, f"1e{power}", (x0 - 38, y + 4), 0.4)
    for n, ((label, _), count) in enumerate(zip(series, counts, strict=True)):
        color = SERIES[n % len(SERIES)]
        points = []
        for i, c in enumerate(count):
            points += [(px(edges[i]), py(c)), (px(edges[i + 1]), py(c))]
        cv2.polylines(image, [np.array(points, np.int32)], False, color, 2 if n == 0 else 1, cv2.LINE_AA)
        cv2.line(image, (x1 - 170, y0 + 18 + 18 * n), (x1 - 140, y0 + 18 + 18 * n), color, 2)
        text(image, label, (x1 - 134, y0 + 22 + 18 * n), 0.42)
    if threshold is not None and lo <= threshold <= hi:
        for y in range(y0, y1, 10):
            cv2.line(image, (px(threshold), y), (px(threshold), min(y + 5, y1)), BLACK, 1)
        text(image, f"threshold {threshold:.1f}", (min(px(threshold) + 4, x1 - 110), y0 + 14), 0.4)
    return image


def lines(
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float]]],
    title: str = "",
    xlabel: str = "block",
    ylabel: str = "norm",
    size: tuple[int, int] = (420, 720),
) -> np.ndarray:
    """Line chart of several series over shared x values; series alternate solid / dashed."""
    image, (x0, y0, x1, y1) = _frame(size, title, xlabel, ylabel, legend_width=130)
    finite = [float(v) for _, ys in series for v in ys if np.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    lo = min(lo, 0.0)
    hi = hi if hi > lo else lo + 1.0
    xlo, xhi = (min(xs), max(xs)) if len(xs) > 1 else (0.0, 1.0)

    def pt(x: float, y: float) -> tuple[int, int]:
        return (
            int(x0 + 10 + (x - xlo) / ((xhi - xlo) or 1) * (x1 - x0 - 20)),
            int(y1 - (y - lo) / (hi - lo) * (y1 - y0 - 10)),
        )

    for tick in _ticks(lo, hi):
        y = pt(xlo, tick)[1]
        cv2.line(image, (x0 - 4, y), (x0, y), BLACK, 1)
        text(image, _fmt(tick), (x0 - 40, y + 4), 0.4)
    for x in xs:
        cv2.line(image, (pt(x, lo)[0], y1), (pt(x, lo)[0], y1 + 4), BLACK, 1)
        if len(xs) <= 16 or int(x) % 2 == 0:
            text(image, _fmt(x), (pt(x, lo)[0] - 6, y1 + 18), 0.4)
    for n, (label, ys) in enumerate(series):
        color = SERIES[n % len(SERIES)]
        points = [pt(x, y) for x, y in zip(xs, ys, strict=True) if np.isfinite(y)]
        for a, b in itertools.pairwise(points):
            if n % 2 == 0:
                cv2.line(image, a, b, color, 2, cv2.LINE_AA)
            else:  # dashed: told apart without colour
                steps = max(1, int(math.dist(a, b) // 8))
                for s in range(0, steps, 2):
                    p = (a[0] + (b[0] - a[0]) * s // steps, a[1] + (b[1] - a[1]) * s // steps)
                    q = (a[0] + (b[0] - a[0]) * (s + 1) // steps, a[1] + (b[1] - a[1]) * (s + 1) // steps)
                    cv2.line(image, p, q, color, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, p, 3, color, -1 if n % 2 == 0 else 1, cv2.LINE_AA)
        ly = y0 + 14 + 18 * n
        if n % 2 == 0:
            cv2.line(image, (x1 + 10, ly), (x1 + 38, ly), color, 2)
        else:
            for x in range(x1 + 10, x1 + 38, 8):
                cv2.line(image, (x, ly), (x + 4, ly), color, 2)
        text(image, label, (x1 + 44, ly + 4), 0.42)
    return image


__all__ = ["BLACK", "BLUE", "ORANGE", "SERIES", "SKY", "VERMILLION", "histogram", "lines", "text"]
