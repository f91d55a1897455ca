"""Structure measure and mean absolute error of a saliency map, as FOUND evaluates them.

FOUND's ``evaluation/metrics/s_measure.py`` (SelfMask's, after Fan et al., ICCV 2017) and
``mae.py``, per image, for a map ``P`` (``(H, W)`` in ``[0, 1]``: a 0/1 mask, or soft) and the
ground truth ``G`` (bool):

- **MAE**: the mean of ``|B - G|`` over the pixels, with ``B = P > 0.5`` (FOUND scores the
  binarised prediction);
- **S-measure** ``S = alpha S_o + (1 - alpha) S_r``, ``alpha = 0.5``, clipped below at 0;
  ``1 - mean(P)`` when ``G`` is empty, ``mean(P)`` when it is full. The object term
  ``S_o = u O(P on G) + (1 - u) O(1 - P off G)`` with ``u`` the share of ``G`` and
  ``O(x) = 2 m / (m^2 + 1 + s + 1e-20)`` (``m``, ``s``: mean and unbiased standard deviation of
  ``x`` over the region). The region term splits both maps at the ground truth's centroid
  ``(X, Y)`` (rounded half to even; the image centre when ``G`` is empty) into four blocks
  weighted by their share of the image, and sums the blocks' SSIM
  ``4 mx my cxy / ((mx^2 + my^2)(vx + vy) + 1e-20)`` (means ``m``, variances ``v`` and
  covariance ``c`` divided by ``N - 1 + 1e-20``; 1 when numerator and denominator are both 0, 0
  when only the numerator is).

FOUND computes in float32 on the GPU; objdisc in float64 (the difference, measured against its
files, is in the README's Fidelity section). Two cases are defined differently, where FOUND's
answer is NaN and makes the dataset's average NaN: a centroid on the first row or column leaves
an empty block (a mean of nothing) that weighs 0, and objdisc gives it that weight; a ground
truth of one pixel has no unbiased standard deviation, and objdisc takes 0.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.5
TINY = 1e-20


def mae(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error of ``prediction > 0.5`` against ``truth`` (both ``(H, W)``), a fraction."""
    return float(np.mean((np.asarray(prediction) > 0.5) != np.asarray(truth, dtype=bool)))


def s_measure(prediction: np.ndarray, truth: np.ndarray, alpha: float = ALPHA) -> float:
    """The structure measure of a ``(H, W)`` map in ``[0, 1]`` against a ``(H, W)`` bool mask."""
    p = np.asarray(prediction, dtype=np.float64)
    g = np.asarray(truth, dtype=bool)
    share = g.mean()
    if share == 0:
        return float(1.0 - p.mean())
    if share == 1:
        return float(p.mean())
    q = alpha * _object_term(p, g) + (1 - alpha) * _region_term(p, g)
    return float(max(q, 0.0))


def _object_score(values: np.ndarray) -> float:
    """``2 m / (m^2 + 1 + s + 1e-20)`` over the region's values."""
    m = values.mean()
    s = values.std(ddof=1) if values.size > 1 else 0.0  # one value: 0, where torch's std is NaN
    return float(2.0 * m / (m * m + 1.0 + s + TINY))


def _object_term(p: np.ndarray, g: np.ndarray) -> float:
    share = g.mean()
    foreground = _object_score(p[g])
    background = _object_score(1.0 - p[~g])
    return float(share * foreground + (1 - share) * background)


def _centroid(g: np.ndarray) -> tuple[int, int]:
    """``(X, Y)``: the column and row of ``g``'s centroid, rounded half to even."""
    rows, cols = g.shape
    total = g.sum()
    if total == 0:
        return round(cols / 2), round(rows / 2)
    x = float(np.round((g.sum(axis=0) * np.arange(cols)).sum() / total))
    y = float(np.round((g.sum(axis=1) * np.arange(rows)).sum() / total))
    return int(x), int(y)


def _ssim(p: np.ndarray, g: np.ndarray) -> float:
    n = p.size
    x, y = p.mean(), g.mean()
    sigma_x2 = ((p - x) ** 2).sum() / (n - 1 + TINY)
    sigma_y2 = ((g - y) ** 2).sum() / (n - 1 + TINY)
    sigma_xy = ((p - x) * (g - y)).sum() / (n - 1 + TINY)
    numerator = 4 * x * y * sigma_xy
    denominator = (x * x + y * y) * (sigma_x2 + sigma_y2)
    if numerator != 0:
        return float(numerator / (denominator + TINY))
    return 1.0 if denominator == 0 else 0.0


def _region_term(p: np.ndarray, g: np.ndarray) -> float:
    h, w = g.shape
    x, y = _centroid(g)
    gf = g.astype(np.float64)
    weights = (x * y / (h * w), (w - x) * y / (h * w), x * (h - y) / (h * w))
    weights = (*weights, 1 - sum(weights))
    top, bottom, left, right = slice(0, y), slice(y, h), slice(0, x), slice(x, w)
    blocks = ((top, left), (top, right), (bottom, left), (bottom, right))
    total = 0.0
    for weight, (rows, cols) in zip(weights, blocks, strict=True):
        if p[rows, cols].size:  # an empty block weighs 0 (module docstring)
            total += weight * _ssim(p[rows, cols], gf[rows, cols])
    return total


__all__ = ["ALPHA", "mae", "s_measure"]
