"""DINO-seg (LOST's baseline, Siméoni et al., BMVC 2021, Table 1): the CLS token's attention -> one box.

As valeoai/LOST's ``dino_seg`` (``main_lost.py --dinoseg``, after DINO's ``visualize_attention.py``),
on the last block's attention of the CLS token to the patches (feature kind ``attn``: prefix
tokens dropped by the model's own count, :mod:`objdisc.models.features`), for one head:

1. ``a`` = the head's attention row, float32; sorted ascending (ties: the lower patch index
   first, a stable sort), divided by its sum, cumulated;
2. a patch is kept when the cumulated mass up to it exceeds ``1 - keep_mass``: the smallest set
   of most-attended patches holding ``keep_mass`` (0.6) of the attention;
3. 4-connected components of the kept patches (scipy's labelling, raster order);
4. the component, and its grid box times the patch size; as LOST's code, the box is not
   clipped to the image (``clip``, default off): a component touching the zero padding gives a
   box up to ``patch - 1`` pixels past the image's right or bottom edge, and the IoU is
   computed with that box, as LOST's evaluation did.

Step 4's choice of component, ``component``:

- ``lost`` (default, reproduces the published numbers): LOST's code measures the sizes of labels
  ``0 .. n - 1`` (``range(np.max(labels))``: the last component, ``n``, is never a candidate) and,
  when that list has more than one entry, takes the largest of labels ``1 .. n - 1`` (the first
  on equal sizes); with a single component (``n = 1``) it takes label 0, the *background*: every
  patch that was not kept. When that background is empty (the component covers every patch)
  LOST's code fails (``min`` of an empty array); objdisc returns the whole image.
- ``largest``: the largest of all components ``1 .. n`` (the first on equal sizes), i.e. what
  the code means to do.

``clip`` cuts the box at the image's edges, as LOST's own method does (the other methods' boxes
always lie inside the image); ``benchmarks/fidelity.py`` counts the images where it matters.

DINO-seg gives no seed (``seeds`` are -1) and no score (1.0). The map kept for pictures is the
head's attention: for register models, the map the registers paper shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from objdisc.errors import OptionError
from objdisc.methods.base import Method
from objdisc.methods.options import at_least, in_open_unit, option

if TYPE_CHECKING:
    import torch

    from objdisc.objects import ObjectsBatch


@dataclass(frozen=True)
class DinoSeg(Method):
    """DINO-seg: the largest blob of one head's CLS attention; one object per image."""

    head: int = option(4, "DINO-seg: the attention head to read (LOST's --dinoseg_head).", checks=[at_least(0)])
    keep_mass: float = option(
        0.6, "DINO-seg: share of the head's attention the kept patches hold (DINO's threshold).",
        checks=[in_open_unit], short="m",
    )
    component: str = option(
        "lost", "DINO-seg: which component: lost (as LOST's code, published numbers) or largest.",
        choices=("lost", "largest"), short="c",
    )
    clip: bool = option(False, "DINO-seg: clip the box to the image (LOST's dino_seg does not).")

    name: ClassVar[str] = "dinoseg"
    title: ClassVar[str] = "DINO-seg (LOST's baseline): largest blob of the CLS attention of one head"
    feature_kinds: ClassVar[tuple[str, ...]] = ("attn",)
    map_label: ClassVar[str] = "CLS attention (DINO-seg head)"

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        return dinoseg_batch(
            feats, grid_hw, patch_size, image_hws, self.head, self.keep_mass, self.component, self.clip
        )


def kept_patches(attention: torch.Tensor, keep_mass: float = 0.6) -> torch.Tensor:
    """Steps 1-2: ``(heads, N)`` attention -> ``(heads, N)`` bool, the patches holding ``keep_mass`` of it.

    Every head at once, as LOST's code does (so that the sums and cumulated sums round as there).
    """
    import torch

    values, order = torch.sort(attention.float(), dim=1, stable=True)
    values = values / torch.sum(values, dim=1, keepdim=True)
    kept_sorted = torch.cumsum(values, dim=1) > (1 - keep_mass)
    return torch.empty_like(kept_sorted).scatter_(1, order, kept_sorted)


def pick_component(kept: np.ndarray, component: str = "lost") -> np.ndarray:
    """Steps 3-4: ``(h, w)`` kept patches -> ``(h, w)`` bool, the chosen component (never empty)."""
    import scipy.ndimage

    labels, n = scipy.ndimage.label(kept)  # default structure: 4-connectivity
    if component == "lost":
        sizes = [int(np.sum(labels == c)) for c in range(n)]  # labels 0 .. n - 1, as LOST's code
        chosen = int(np.argmax(sizes[1:])) + 1 if len(sizes) > 1 else 0
    else:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        chosen = int(np.argmax(sizes)) + 1 if n else 0
    mask = labels == chosen
    if not mask.any():  # the background of a component covering every patch: the whole image
        mask = np.ones_like(kept, dtype=bool)
    return mask


def dinoseg_batch(
    attn: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hws: torch.Tensor,
    head: int = 4,
    keep_mass: float = 0.6,
    component: str = "lost",
    clip: bool = False,
) -> ObjectsBatch:
    """DINO-seg on a batch of images sharing one patch grid (on the host: a sync, like TokenCut).

    Args:
        attn: ``(B, N, heads)`` CLS attention to the ``N`` patches, per head (feature kind ``attn``).
        grid_hw: ``(h, w)`` patch grid, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` int64 unpadded image sizes ``(H, W)`` in pixels.
        head: which head.
        keep_mass: share of the attention mass to keep.
        component: ``lost`` or ``largest`` (module docstring).
        clip: cut the boxes at the unpadded image's edges (LOST's code does not).

    Returns:
        :class:`~objdisc.objects.ObjectsBatch` on the host, ``K = 1``, seed -1, score 1,
        ``score_map`` = the head's attention.

    Raises:
        OptionError: the model has no head ``head``.
    """
    import torch

    from objdisc.geometry import component_box
    from objdisc.methods.components import check_batch

    check_batch(attn, grid_hw, image_hws)
    b, _, heads = attn.shape
    if not 0 <= head < heads:
        raise OptionError(f"--head {head}: this model's attention has {heads} heads (0 .. {heads - 1})")
    h, w = grid_hw
    per_head = attn.float().cpu().transpose(1, 2)  # (B, heads, N)
    maps = per_head[:, head]  # (B, N)
    hws = image_hws.cpu().tolist()
    masks = np.zeros((b, 1, h, w), dtype=bool)
    boxes = np.zeros((b, 1, 4), dtype=np.int64)
    for i in range(b):
        kept = kept_patches(per_head[i], keep_mass)[head].numpy().reshape(h, w)
        masks[i, 0] = pick_component(kept, component)
        limit = (int(hws[i][0]), int(hws[i][1])) if clip else (h * patch_size, w * patch_size)
        boxes[i, 0] = component_box(masks[i, 0], patch_size, limit)
    from objdisc.objects import ObjectsBatch

    return ObjectsBatch(
        boxes=torch.from_numpy(boxes),
        scores=torch.ones((b, 1)),
        valid=torch.ones((b, 1), dtype=torch.bool),
        seeds=torch.full((b, 1), -1, dtype=torch.long),
        masks=torch.from_numpy(masks),
        score_map=maps.reshape(b, h, w),
    )


__all__ = ["DinoSeg", "dinoseg_batch", "kept_patches", "pick_component"]
