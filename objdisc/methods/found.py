"""FOUND (Siméoni et al., CVPR 2023): the background seed, and a 1x1 saliency head trained on it.

As valeo.ai's FOUND (``bkg_seg.py``, ``model.py``, ``evaluation/saliency.py`` and ``uod.py``),
on the last block's keys ``k`` and its CLS attention ``a`` (``(N, heads)``; kind ``kattn``):

1. **Head weights** (after CroW's sparsity weighting): ``t`` = the mean of ``a`` over every head
   and patch; ``Q_h`` = the share of patches whose attention in head ``h`` is above ``t``;
   ``beta_h = log(sum_h' (Q_h' + 1e-10) / (Q_h + 1e-10))``.
2. **Background seed**: the patch with the least ``sum_h beta_h a_h`` (lowest index on a tie).
3. **Background**: the patches whose weighted keys (each head's ``k`` times ``beta_h``,
   L2-normalised) have cosine similarity above ``bkg_th`` (0.3) with the seed's; the object
   mask is the rest.
4. With ``--found-head FILE``, FOUND's saliency head instead: one 1x1 convolution on the keys,
   a logit per patch; foreground where it is above 0 (``sigmoid > 0.5``).

The answer is one object. In FOUND's "single" mode (``--found-mode single``, the default): at the grid,
the largest 4-connected component of the foreground gives the box (``uod.py``: scaled by the patch
size, clipped to the image); at the pixels, the map is upsampled (bilinear, ``align_corners=False``,
by the patch size, the padding cropped, as ``evaluation/saliency.py`` does for the head's logits)
and thresholded, and its largest component is the mask. In its "multi" mode (``--found-mode multi``,
``evaluation/saliency.py``'s ``evaluation_mode='multi'``): every foreground patch and pixel, all
components (the box around all of them), and on the saliency sets the head's soft map
(``sigmoid`` of the upsampled logits) is what is scored (F-max and S-measure on it, IoU, accuracy
and MAE on it above 0.5); the background step has no soft map ("not soft actually" in FOUND's
code), so its upsampled mask is scored. The score is 1.0; the per-patch map is the logit (head) or
the object mask.

Differences from the release, by design: FOUND's background evaluation resizes the padded
grid's mask to the image (a stretch by up to a patch); objdisc maps it as the head's logits
(scale and crop), so both modes share one geometry. FOUND drops the CLS token only: on a model
with registers its "patches" would include them; objdisc drops the model's prefix tokens.
Several components of one size: the lowest label wins (FOUND's order is numpy's unstable sort).
An image without foreground gives no object (FOUND's box step fails on it).

``heads``: the CLS attention sits after the keys in the features; its width is the number of
heads, ``C_total / 65`` for the 64-channel heads of every DINO, DINOv2, DeiT-III and ViT-S/B/L
(``--heads`` for others).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from objdisc.errors import OptionError
from objdisc.methods.base import Method
from objdisc.methods.options import at_least, cosine, finite, option

if TYPE_CHECKING:
    import torch

    from objdisc.models.saliency_head import SaliencyHead
    from objdisc.objects import Objects, ObjectsBatch

EPSILON = 1e-10  # bkg_seg.py's epsilon in the head weights
HEAD_DIM = 64


@dataclass(frozen=True)
class Found(Method):
    """FOUND: the background seed's dissimilar patches, or its trained 1x1 head; one object."""

    bkg_th: float = option(
        0.3,
        "FOUND: cosine similarity to the background seed above which a patch is background.",
        checks=[finite, cosine],
    )
    found_head: str = option(
        "",
        "FOUND: its saliency head, FOUND's decoder_weights.pt or objdisc train-head's .safetensors ('': none, "
        "the training-free background step).",
    )
    heads: int = option(0, "FOUND: attention heads of the model (0: 64 channels a head).", checks=[at_least(0)])
    found_mode: str = option(
        "single",
        "FOUND: single (the largest component, as uod.py and FOUND's single mode) or multi (every foreground "
        "component; the head's soft map scored, as FOUND's multi mode).",
        choices=("single", "multi"),
    )

    name: ClassVar[str] = "found"
    title: ClassVar[str] = "FOUND (Siméoni et al., CVPR 2023): background seed, or its trained 1x1 saliency head"
    map_label: ClassVar[str] = "foreground logit, or object mask (FOUND)"
    feature_kinds: ClassVar[tuple[str, ...]] = ("kattn",)
    pads: ClassVar[bool] = True  # FOUND's evaluation pads the full image to a multiple of the patch
    _head: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.found_head:
            from objdisc.models.saliency_head import load_head

            object.__setattr__(self, "_head", load_head(self.found_head))

    @property
    def saliency_head(self) -> SaliencyHead | None:
        """The loaded saliency head, or ``None``."""
        return self._head

    def options(self, deciding_only: bool = False) -> dict[str, Any]:
        """The options, and the head file's sha256 (a head of other weights finds other objects)."""
        found = super().options(deciding_only)
        if self._head is not None:
            found["found_head_sha256"] = self._head.sha256
        return found

    def input_side(self, patch_size: int) -> None:
        """FOUND sizes nothing itself; a head trained on another patch size is refused here,
        before the model runs.

        Raises:
            OptionError: the head's patch size is not ``patch_size``.
        """
        if self._head is not None:
            self._head.check_patch_size(patch_size, "this backbone")
        return None

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        return found_batch(feats, grid_hw, patch_size, image_hws, self)

    def display_map(self, score_map: np.ndarray) -> np.ndarray:
        """The foreground logit (head) or the object mask."""
        return score_map

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects:
        """The pixel mask of FOUND's single or multi mode (module docstring), boxes from the grid."""
        return pixel_object(objects, image_hw, 0.0 if self._head is not None else 0.5, self.found_mode == "multi")

    def saliency_map(self, objects: Objects, image_hw: tuple[int, int]) -> np.ndarray | None:
        """Multi mode with a head: ``sigmoid`` of the upsampled logits (FOUND's ``soft_preds``)."""
        if self.found_mode != "multi" or self._head is None or objects.score_map is None or objects.geometry is None:
            return None
        return 1.0 / (1.0 + np.exp(-upsampled(objects, image_hw).astype(np.float64)))


def split(feats: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys (B, N, C), CLS attention (B, N, heads))`` of ``kattn`` features ``(B, N, C + heads)``.

    Raises:
        OptionError: ``heads`` is 0 and the width is not ``heads * 65``.
    """
    total = feats.shape[-1]
    if heads == 0:
        if total % (HEAD_DIM + 1):
            raise OptionError(
                f"FOUND: features of {total} channels are not 64-channel heads with their attention; give --heads"
            )
        heads = total // (HEAD_DIM + 1)
    if not 0 < heads < total or (total - heads) % heads:
        raise OptionError(f"FOUND: --heads {heads} does not divide the {total - heads} key channels")
    return feats[..., : total - heads], feats[..., total - heads :]


def background(keys: torch.Tensor, attention: torch.Tensor, threshold: float) -> torch.Tensor:
    """Steps 1-3: ``(B, N)`` bool background of ``(B, N, C)`` keys and ``(B, N, heads)`` CLS attention."""
    import torch
    import torch.nn.functional as F

    b, n, heads = attention.shape
    att = attention.transpose(1, 2)  # (B, heads, N), as bkg_seg.py
    mean = att.reshape(b, -1).mean(dim=1)
    q = (att > mean[:, None, None]).sum(dim=2) / n  # (B, heads)
    beta = torch.log((q + EPSILON).sum(dim=1, keepdim=True) / (q + EPSILON))
    descs = (keys.reshape(b, n, heads, -1) * beta[:, None, :, None]).reshape(b, n, -1)
    descs = F.normalize(descs, dim=-1, p=2)
    seed = torch.argmin((att * beta[:, :, None]).sum(dim=1), dim=-1)  # (B,)
    similarity = torch.bmm(descs[torch.arange(b), seed][:, None], descs.transpose(1, 2))[:, 0]
    return similarity > threshold


def found_batch(
    feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor, settings: Found
) -> ObjectsBatch:
    """FOUND on a batch sharing one grid (module docstring), on the features' device.

    Args:
        feats: ``(B, N, C + heads)`` keys and CLS attention (kind ``kattn``).
        grid_hw: ``(h, w)`` patch grid.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` unpadded model-input sizes.
        settings: the method and its options (and head).

    Returns:
        :class:`~objdisc.objects.ObjectsBatch` with one slot: the largest foreground component
        (none where there is no foreground), its box, score 1.0, the map (logits or mask).
    """
    import torch
    import torch.nn.functional as F

    from objdisc.geometry import component_box
    from objdisc.methods.components import check_batch
    from objdisc.objects import ObjectsBatch
    from objdisc.utils.device import no_tf32

    check_batch(feats, grid_hw, image_hws)
    b, (h, w) = feats.shape[0], grid_hw
    keys, attention = split(feats.float(), settings.heads)
    with torch.autocast(device_type=feats.device.type, enabled=False), no_tf32():
        if settings.saliency_head is not None:
            settings.saliency_head.check_width(keys.shape[-1], "this backbone")
            head = settings.saliency_head
            weight = torch.from_numpy(head.weight).to(keys.device).view(1, -1, 1, 1)
            bias = torch.tensor([head.bias], dtype=torch.float32, device=keys.device)
            grid = keys.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # FOUND's decoder input (its memory layout too)
            maps = F.conv2d(grid, weight, bias)[:, 0].reshape(b, h * w)  # the 1x1 convolution's logits
            foreground = maps > 0
        else:
            foreground = ~background(keys, attention, settings.bkg_th)
            maps = foreground.float()
    grids = foreground.view(b, h, w).cpu().numpy()
    boxes = np.zeros((b, 1, 4), dtype=np.int64)
    valid = np.zeros((b, 1), dtype=bool)
    seeds = np.full((b, 1), -1, dtype=np.int64)
    masks = np.zeros((b, 1, h, w), dtype=bool)
    hws = image_hws.cpu().tolist()
    for i in range(b):
        component = grids[i] if settings.found_mode == "multi" else largest_component(grids[i])
        if component is None or not component.any():
            continue
        masks[i, 0], valid[i, 0] = component, True
        seeds[i, 0] = int(np.argmax(component))
        boxes[i, 0] = component_box(component, patch_size, (int(hws[i][0]), int(hws[i][1])))
    return ObjectsBatch(
        boxes=torch.from_numpy(boxes),
        scores=torch.from_numpy(valid.astype(np.float32)),
        valid=torch.from_numpy(valid),
        seeds=torch.from_numpy(seeds),
        masks=torch.from_numpy(masks),
        score_map=maps.view(b, h, w).float().cpu(),
    )


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected component of a bool mask (lowest label on a tie), or ``None``."""
    import scipy.ndimage

    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def upsampled(objects: Objects, image_hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32: the grid map upsampled bilinearly by the patch size (``align_corners=False``),
    the padding cropped, resized to the image when the model saw it resized (module docstring)."""
    import torch
    import torch.nn.functional as F

    geometry = objects.geometry
    assert geometry is not None and objects.score_map is not None
    grid = torch.from_numpy(np.ascontiguousarray(objects.score_map, dtype=np.float32))[None, None]
    up = F.interpolate(grid, scale_factor=geometry.patch_size, mode="bilinear", align_corners=False)
    model_h, model_w = geometry.model_hw
    up = up[..., :model_h, :model_w]
    if (model_h, model_w) != tuple(image_hw):
        up = F.interpolate(up, size=tuple(image_hw), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def pixel_object(objects: Objects, image_hw: tuple[int, int], threshold: float, every: bool = False) -> Objects:
    """The object's pixel mask from the grid map (module docstring): :func:`upsampled`, thresholded
    (``> threshold``), its largest component (``every``: all of it, multi mode); boxes mapped as any
    method's."""
    from objdisc.objects import Objects as ObjectsType
    from objdisc.objects import encode_rles

    assert objects.geometry is not None
    mapped = objects.at_image_size(image_hw)
    if not len(objects) or objects.score_map is None:
        return mapped
    foreground = upsampled(objects, image_hw) > threshold
    component = (foreground if foreground.any() else None) if every else largest_component(foreground)
    if component is None:
        return mapped.take([])
    return ObjectsType(
        mapped.boxes, mapped.scores, mapped.seeds, mapped.masks, encode_rles(component[None]), mapped.score_map,
        mapped.geometry,
    )  # fmt: skip


__all__ = ["Found", "background", "found_batch", "largest_component", "pixel_object", "split", "upsampled"]
