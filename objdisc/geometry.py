"""Boxes and patch-grid components on the host: conventions, IoU, resizing, a seed's component.

objdisc boxes are ``(x1, y1, x2, y2)`` in absolute pixels, x2/y2 exclusive (a box covering a
whole ``W x H`` image is ``(0, 0, W, H)``). COCO files use ``[x, y, w, h]``. Everything here is
numpy (and scipy's labelling): the lowest floor that results, methods and metrics share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage


def xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    """``(x1, y1, x2, y2)`` -> ``[x, y, w, h]`` (pixels)."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (pixels)."""
    x, y, w, h = box
    return [x, y, x + w, y + h]


def iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one box against many.

    Args:
        box: ``(x1, y1, x2, y2)`` pixels.
        boxes: ``(M, 4)`` array of ``(x1, y1, x2, y2)`` pixels; ``M`` may be 0.

    Returns:
        ``(M,)`` float64 IoU values in ``[0, 1]``; a pair whose union is empty scores 0.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in box)
    iw = np.clip(np.minimum(x2, boxes[:, 2]) - np.maximum(x1, boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(y2, boxes[:, 3]) - np.maximum(y1, boxes[:, 1]), 0, None)
    inter = iw * ih
    area_a = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    area_b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area_a + area_b - inter
    out = np.zeros(len(boxes), dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def map_box(
    box: Sequence[int], from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A pixel box ``(x1, y1, x2, y2)`` on an image of size ``from_hw`` mapped onto the same image
    at ``to_hw`` (rounded to the nearest pixel, clipped to the image)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    x1, y1, x2, y2 = box
    return (
        max(0, round(x1 * sx)),
        max(0, round(y1 * sy)),
        min(to_hw[1], round(x2 * sx)),
        min(to_hw[0], round(y2 * sy)),
    )


def seed_component(mask: np.ndarray, seed: int) -> np.ndarray:
    """Host reference: the 4-connected component of ``mask`` holding the seed patch.

    Args:
        mask: ``(h, w)`` bool grid.
        seed: row-major index of the seed patch.

    Returns:
        ``(h, w)`` bool grid of that component; the seed patch alone when the seed is not
        in ``mask``.
    """
    labels, _ = scipy.ndimage.label(mask)  # default structure: 4-connectivity in 2-D
    label = labels.flat[seed]
    if label == 0:
        component = np.zeros(mask.shape, dtype=bool)
        component.flat[seed] = True
        return component
    return labels == label


def component_box(component: np.ndarray, patch_size: int, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Host reference: bounding box of a non-empty ``(h, w)`` patch component, in pixels.

    Args:
        component: ``(h, w)`` bool grid with at least one True.
        patch_size: patch side in pixels.
        image_hw: ``(H, W)`` unpadded image size; the box is clipped to it.

    Returns:
        ``(x1, y1, x2, y2)`` integer pixels, x2/y2 exclusive.
    """
    rows = np.flatnonzero(component.any(axis=1))
    cols = np.flatnonzero(component.any(axis=0))
    height, width = image_hw
    x1 = int(cols[0]) * patch_size
    y1 = int(rows[0]) * patch_size
    x2 = min((int(cols[-1]) + 1) * patch_size, int(width))
    y2 = min((int(rows[-1]) + 1) * patch_size, int(height))
    return (x1, y1, x2, y2)
