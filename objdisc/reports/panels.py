"""One picture per image: what the method did, beside the maps it read.

Left panel: the image with the ground-truth boxes (blue), the predicted boxes (orange, thicker;
the best-scoring one thickest), the seed patches (vermillion, filled with a white outline) and
the method's masks (sky blue, translucent, outlined). Middle: the method's score map, as the
method shows it (LOST: inverse degree; TokenCut: |eigenvector|; DINO-seg: the CLS attention).
Right: the output patch-token norm map. All panels keep the image's aspect ratio and share
one height; maps use the viridis colour map. Colours are Okabe-Ito (see :mod:`.plots`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from objdisc.reports.plots import BLACK, BLUE, ORANGE, SKY, VERMILLION, WHITE, text

PANEL_HEIGHT = 320
_HEADER = 60


def grid_to_image(grid: np.ndarray, patch: int, model_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Upsample a ``(h, w)`` patch map to pixels: nearest to the padded model input, cropped
    to the unpadded model input ``model_hw``, then resized to ``out_hw``."""
    h, w = grid.shape
    full = cv2.resize(grid.astype(np.float32), (w * patch, h * patch), interpolation=cv2.INTER_NEAREST)
    crop = full[: model_hw[0], : model_hw[1]]
    return cv2.resize(crop, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)


def colour_map(values: np.ndarray) -> np.ndarray:
    """Float map -> viridis BGR uint8, scaled to its own min..max."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = np.zeros(values.shape, np.uint8) if hi <= lo else ((values - lo) / (hi - lo) * 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_VIRIDIS)


def _scale_box(box: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    return x1, y1, x2, y2


def figure(
    rgb: np.ndarray,
    pred_boxes: Sequence[Sequence[float]],
    gt_boxes: Sequence[Sequence[float]],
    seeds: Sequence[int],
    masks: np.ndarray,
    score_map: np.ndarray,
    norm_map: np.ndarray | None,
    patch: int,
    model_hw: tuple[int, int],
    score_label: str,
    caption: str,
    extra: Sequence[tuple[np.ndarray, str]] = (),
) -> np.ndarray:
    """The picture for one image.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image at its original size.
        pred_boxes: ``K`` predicted ``(x1, y1, x2, y2)`` in original pixels, the best first.
        gt_boxes: ground-truth boxes in original pixels.
        seeds: ``K`` row-major seed indices on the ``(h, w)`` grid (-1: none drawn).
        masks: ``(K, h, w)`` bool object masks.
        score_map: ``(h, w)`` float map for the middle panel.
        norm_map: ``(h, w)`` output patch-token norms, or ``None`` (panel left out).
        patch: patch size in pixels.
        model_hw: ``(H', W')`` of the image the model saw (differs from ``rgb`` under --max-side).
        score_label: title of the middle panel.
        caption: first line of the header (file name, hit / miss, IoU).
        extra: more panels, each an ``(H, W)`` map in ``[0, 1]`` at the original size and its
            title (a saliency run's mask, refined mask and ground truth), drawn in grey.

    Returns:
        ``(PANEL_HEIGHT + 60, total width, 3)`` uint8 BGR.
    """
    height, width = rgb.shape[:2]
    scale = PANEL_HEIGHT / height
    out_hw = (PANEL_HEIGHT, max(1, round(width * scale)))
    base = cv2.resize(np.ascontiguousarray(rgb[..., ::-1]), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
    overlay = base.copy()
    components = [grid_to_image(m.astype(np.float32), patch, model_hw, out_hw) > 0.5 for m in masks]
    for component in components:
        overlay[component] = SKY
    left = cv2.addWeighted(overlay, 0.4, base, 0.6, 0)
    # The outline keeps the mask visible where the fill colour matches the image (a blue sky).
    for component in components:
        contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(left, contours, -1, BLACK, 3)
        cv2.drawContours(left, contours, -1, SKY, 1)
    for box in gt_boxes:
        x1, y1, x2, y2 = _scale_box(box, scale)
        cv2.rectangle(left, (x1, y1), (x2 - 1, y2 - 1), BLUE, 2)
    for k, box in enumerate(pred_boxes):
        x1, y1, x2, y2 = _scale_box(box, scale)
        cv2.rectangle(left, (x1, y1), (x2 - 1, y2 - 1), ORANGE, 3 if k == 0 else 2)
    w = masks.shape[-1]
    fx, fy = model_hw[1] / out_hw[1], model_hw[0] / out_hw[0]  # model pixels per panel pixel
    for seed in seeds:
        if seed < 0:
            continue
        row, col = divmod(int(seed), w)
        sx1, sy1 = int(col * patch / fx), int(row * patch / fy)
        sx2, sy2 = int(min((col + 1) * patch, model_hw[1]) / fx), int(min((row + 1) * patch, model_hw[0]) / fy)
        cv2.rectangle(left, (sx1, sy1), (max(sx1 + 3, sx2), max(sy1 + 3, sy2)), VERMILLION, -1)
        cv2.rectangle(left, (sx1 - 1, sy1 - 1), (max(sx1 + 3, sx2) + 1, max(sy1 + 3, sy2) + 1), WHITE, 1)
    panels = [(left, "image")]
    panels.append((colour_map(grid_to_image(score_map, patch, model_hw, out_hw)), score_label))
    if norm_map is not None:
        panels.append((colour_map(grid_to_image(norm_map, patch, model_hw, out_hw)), "output patch-token norm"))
    for values, label in extra:
        grey = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
        grey = cv2.resize(grey, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
        panels.append((np.repeat(grey[..., None], 3, axis=2), label))
    gap = 8
    total = sum(p.shape[1] for p, _ in panels) + gap * (len(panels) - 1)
    canvas = np.full((PANEL_HEIGHT + _HEADER, max(total, 520), 3), 255, np.uint8)
    text(canvas, caption, (4, 16), 0.5, BLACK, 1)
    text(canvas, "GT: blue   prediction: orange   seed: vermillion   mask: sky blue", (4, 34), 0.4)
    x = 0
    for image, label in panels:
        text(canvas, label, (x + 2, 54), 0.4)
        canvas[_HEADER:, x : x + image.shape[1]] = image
        x += image.shape[1] + gap
    return canvas


__all__ = ["PANEL_HEIGHT", "colour_map", "figure", "grid_to_image"]
