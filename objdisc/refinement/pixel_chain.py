"""CutLER's pixel chain: masks on the patch grid to masks of the original image.

maskcut.py's steps after the cuts, which other many-object methods repeat: the grid masks upsampled (nearest) to
the fixed square the model saw, refined there with the dense CRF (:mod:`objdisc.refinement.crf`,
holes filled, a mask dropped when its IoU with the unrefined one is below 0.5), then resized to
the original image (PIL's bicubic filter on the 0/255 mask) and thresholded at half its maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from objdisc.objects import Objects



def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 0 when both are empty (the reference's NaN never exceeds 0.5)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def finalize_masks(
    objects: Objects,
    load: Callable[[], np.ndarray],
    image_hw: tuple[int, int],
    fixed_size: int,
    crf: bool,
    exclusive: bool = True,
) -> Objects:
    """The grid masks as pixel masks of the original image, maskcut.py's chain (module docstring).

    Args:
        objects: one image's cuts on the grid (boxes in model-input pixels).
        load: decodes the original image, ``(H, W, 3)`` uint8 RGB.
        image_hw: ``(H, W)`` of the original image.
        fixed_size: the square side the model's input was made from (0: native size).
        crf: refine each mask with the dense CRF.
        exclusive: remove the earlier masks' pixels from each mask before the CRF (MaskCut's
            cuts never share a patch, its upsampled masks do not either); ``False`` for masks
            that may overlap (ProMerge's clusters).

    Returns:
        The objects whose final mask is not empty, in discovery order: boxes from the masks
        (original pixels, x2/y2 exclusive), the masks as RLEs (``segmentation``).
    """
    import scipy.ndimage
    from PIL import Image

    from objdisc.geometry import component_box
    from objdisc.images import fixed_square
    from objdisc.objects import Objects, encode_rles
    from objdisc.refinement.crf import ImageCRF

    geometry = objects.geometry
    assert geometry is not None and objects.masks is not None
    height, width = image_hw
    original = load()
    square = fixed_square(original, fixed_size) if fixed_size else original
    keep, finals = [], []
    masks = unrefined_masks(objects, square.shape[:2], fixed_size, image_hw, exclusive)
    image_crf = ImageCRF(square) if crf and masks else None  # the kernels once, for every mask
    for k, mask in enumerate(masks):
        refined = mask > 0.5
        if image_crf is not None:
            refined = scipy.ndimage.binary_fill_holes(image_crf.refine(mask) >= 0.5)
            if mask_iou(mask > 0.5, refined) < 0.5 and np.logical_or(mask > 0.5, refined).any():
                continue
        if fixed_size:
            resized = np.asarray(Image.fromarray(np.uint8(refined * 255)).resize((width, height)))
            refined = resized > resized.max() / 2.0 if resized.max() > 0 else np.zeros((height, width), dtype=bool)
        if refined.any():
            keep.append(k)
            finals.append(refined)
    found = objects.take(keep)
    pixel = np.stack(finals) if finals else np.zeros((0, height, width), dtype=bool)
    # patch size 1: each mask's pixel extent, x2/y2 exclusive (pycocotools' toBbox)
    boxes = np.array([component_box(m, 1, m.shape) for m in pixel], dtype=np.int64).reshape(-1, 4)
    where = replace(geometry, image_hw=(height, width))
    return Objects(boxes, found.scores, found.seeds, found.masks, encode_rles(pixel), found.score_map, where)


def unrefined_masks(
    objects: Objects,
    square_hw: tuple[int, int],
    fixed_size: int,
    image_hw: tuple[int, int],
    exclusive: bool = True,
) -> list[np.ndarray]:
    """The masks before the CRF, as maskcut.py hands them to it: float64 0/1 on the square
    (``fixed_size``; on the original image at native size), with ``exclusive`` each without the
    earlier masks' pixels."""
    import torch
    import torch.nn.functional as F

    from objdisc.objects import grid_to_pixels

    geometry = objects.geometry
    assert geometry is not None and objects.masks is not None
    if not len(objects):
        return []
    if fixed_size:
        grid = torch.from_numpy(objects.masks.astype(np.float64))[:, None]  # (K, 1, h, w)
        upsampled = F.interpolate(grid, size=tuple(square_hw), mode="nearest")[:, 0].numpy()
    else:
        at_image = replace(geometry, image_hw=tuple(image_hw))
        upsampled = grid_to_pixels(objects.masks, at_image).astype(np.float64)
    if not exclusive:
        return list(upsampled)
    taken = np.zeros(upsampled.shape[1:], dtype=np.float64)
    out = []
    for mask in upsampled:
        mask = mask - taken
        mask[mask <= 0] = 0
        taken += mask
        out.append(mask)
    return out


__all__ = ["finalize_masks", "mask_iou", "unrefined_masks"]
