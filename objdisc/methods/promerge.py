"""ProMerge (Li & Shin, ECCV 2024): many objects per image from point prompts, merged; no eigen-solve.

As ProMerge's ``promerge.py`` (facebookresearch/ProMerge, the settings of its ``run_script.sh``),
per image, on the unit features ``f / (||f|| + 1e-5)`` (float32, TF32 off):

1. **Point prompts.** Every ``stride``-th patch of every ``stride``-th row, row-major, is a point;
   its mask is the patches whose affinity (dot product of unit features) with it is above ``tau``.
2. **Background candidates.** A border of the grid is foreground when more than half its patches
   are in the mask; a mask with two or more foreground borders is a background candidate.
3. **Mask splitting.** Any other mask is split into its 4-connected components; those at least
   ``cc_area`` times the size of the point's own component are foreground candidates, largest
   first (the reference's quirk kept: a point outside its own mask takes the last component's size).
4. **Background.** The patches in more than half the background candidates. An image with no
   foreground or no background candidate, or whose background covers under a tenth of the grid,
   gives no object (the reference skips it).
5. **Cascade filter.** Foreground candidates from the smallest up (ties in point order): a
   candidate is kept when its patches not yet covered by kept ones lie mostly outside the
   background (share inside below ``iou_filter``; none left: refused) and its mean unit feature's
   dot product with the background's is below ``fg_include``.
6. **Progressive merging.** Kept masks from the largest down: a mask joins (and unites) every
   cluster it overlaps by more than ``intersection_merge`` of its own area, or by more than
   ``merge_ioa`` when the two mean unit features' dot product is at least ``dino_merge``; else it
   starts a cluster. The reference keeps its clusters in a Python ``set`` of tensors (iterated in
   memory-address order); the clusters it ends with do not depend on that order, and objdisc
   returns them largest first (ties: lowest first patch).
7. **Pixels.** As MaskCut's chain (:func:`objdisc.refinement.pixel_chain.finalize_masks`), but
   the masks may overlap: nearest upsampling to the ``fixed_size`` square, the dense CRF, holes
   filled, dropped when its IoU with the unrefined mask is under 0.5, PIL's resize to the
   original image, threshold at half the maximum (``annotations.py``).

Scores. ProMerge gives every mask the score 1.0 (``annotations.py``: "a constant for the
evaluation pipeline"); so does objdisc. AP then ranks an image's masks in their order (largest
first) and CorLoc takes the largest.

Ratios are compared as the reference's float32 tensors compare them; border and background
votes are counts. The per-patch map (``visualize``) is one minus the share of background
candidates a patch is in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from objdisc.errors import OptionError
from objdisc.methods.base import Method
from objdisc.methods.options import at_least, cosine, finite, option, unit_interval

if TYPE_CHECKING:
    import torch

    from objdisc.objects import Objects, ObjectsBatch

EPS = 1e-5  # added to the feature norms (the reference's eps)
MIN_BACKGROUND = 0.1  # of the grid: a smaller background means no object (hard-coded in the reference)


@dataclass(frozen=True)
class ProMerge(Method):
    """ProMerge: objects from point prompts on the patch grid, filtered and merged."""

    stride: int = option(4, "ProMerge: a point every this many patches, in rows and columns.", checks=[at_least(1)])
    tau: float = option(
        0.2, "ProMerge: affinity above which a patch joins a point's mask (bipartition_tau).", checks=[finite, cosine]
    )
    cc_area: float = option(
        0.5,
        "ProMerge: keep a mask's components of at least this share of the point's own (cc_maskarea_tau).",
        checks=[finite, at_least(0.0)],
        short="cca",
    )
    iou_filter: float = option(
        0.8,
        "ProMerge: keep a mask whose new patches lie less than this share in the background (iou_filter_tau).",
        checks=[finite, unit_interval],
        short="iouf",
    )
    fg_include: float = option(
        0.1,
        "ProMerge: keep a mask whose mean feature's dot product with the background's is below this "
        "(foreground_include_tau).",
        checks=[finite, cosine],
        short="fgi",
    )
    intersection_merge: float = option(
        0.5,
        "ProMerge: merge into a cluster overlapping this share of the mask (intersection_merge_tau).",
        checks=[finite, unit_interval],
        short="im",
    )
    merge_ioa: float = option(
        0.1,
        "ProMerge: merge at this overlap when the mean features agree (merge_ioa_tau).",
        checks=[finite, unit_interval],
        short="ioa",
    )
    dino_merge: float = option(
        0.1,
        "ProMerge: dot product of mean features at which they agree (dino_merge_tau).",
        checks=[finite, cosine],
        short="dm",
    )
    fixed_size: int = option(
        480,
        "ProMerge: resize every image to this square side in pixels first, as promerge.py (0: native size).",
        checks=[at_least(0)],
        short="fs",
    )
    crf: bool = option(True, "ProMerge: refine each mask with the dense CRF (needs pip install 'objdisc[crf]').")

    name: ClassVar[str] = "promerge"
    title: ClassVar[str] = "ProMerge (Li & Shin, ECCV 2024): point prompts, filtered and merged; many masks"
    map_label: ClassVar[str] = "1 - background votes (ProMerge)"
    needs_image: ClassVar[bool] = True

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        return promerge_batch(feats, grid_hw, patch_size, image_hws, self)

    def input_side(self, patch_size: int) -> int | None:
        """The square side every image is resized to before the model (``None``: native size).

        Raises:
            OptionError: a fixed size below one patch.
        """
        if self.fixed_size == 0:
            return None
        if self.fixed_size < patch_size:
            raise OptionError(
                f"--fixed-size {self.fixed_size}: below one patch ({patch_size} px); use 0 for native size"
            )
        return self.fixed_size

    def check_ready(self) -> None:
        """With the CRF on, pydensecrf must import.

        Raises:
            OptionError: it does not, naming the extra that installs it and ``--no-crf``.
        """
        from objdisc.refinement.crf import CRF_MISSING, crf_available

        if self.crf and not crf_available():
            raise OptionError(f"--crf: {CRF_MISSING}")

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects:
        """Pixel masks at the original size (module docstring, step 7), boxes from them."""
        from objdisc.refinement.pixel_chain import finalize_masks

        return finalize_masks(objects, load, image_hw, self.fixed_size, self.crf, exclusive=False)


@dataclass
class _Candidates:
    """One image's point masks after steps 1-4, on the host.

    Attributes:
        foreground: ``(M, N)`` bool foreground candidates, in point order, largest component first.
        points: ``(M,)`` the row-major patch of each candidate's point.
        background: ``(N,)`` bool, or ``None`` when the image gives no object.
        votes: ``(N,)`` float32 share of the background candidates each patch is in.
    """

    foreground: np.ndarray
    points: np.ndarray
    background: np.ndarray | None
    votes: np.ndarray


def promerge_batch(
    feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor, settings: ProMerge
) -> ObjectsBatch:
    """ProMerge on a batch sharing one patch grid (module docstring, steps 1-6).

    Affinities, border votes and the candidates' mean features are computed on the features'
    device for the whole batch; components, the cascade and the merging on the host.

    Args:
        feats: ``(B, N, C)`` patch features, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` unpadded model-input sizes ``(H, W)`` in pixels.
        settings: the method and its options.

    Returns:
        :class:`~objdisc.objects.ObjectsBatch` on the host, ``K`` = the most clusters of an image
        of the batch (at least 1; ``valid`` marks them), boxes of the grid masks clipped to the
        model input, scores 1.0, each cluster's first point as its seed, and the map.
    """
    import torch

    from objdisc.geometry import component_box
    from objdisc.methods.components import check_batch
    from objdisc.objects import ObjectsBatch
    from objdisc.utils.device import no_tf32

    check_batch(feats, grid_hw, image_hws)
    b, (h, w) = feats.shape[0], grid_hw
    points = np.array([r * w + c for r in range(0, h, settings.stride) for c in range(0, w, settings.stride)])
    with torch.autocast(device_type=feats.device.type, enabled=False), no_tf32():
        raw = feats.float()
        unit = raw / (torch.linalg.vector_norm(raw, dim=-1, keepdim=True) + EPS)  # (B, N, C)
        prompts = unit[:, torch.from_numpy(points).to(feats.device)]  # (B, S, C)
        masks = torch.bmm(prompts, unit.transpose(1, 2)) > settings.tau  # (B, S, N)
    grids = masks.view(b, len(points), h, w)
    sides = sum(
        (border.sum(-1) * 2 > border.shape[-1]).long()
        for border in (grids[..., 0, :], grids[..., :, -1], grids[..., -1, :], grids[..., :, 0])
    )
    background_candidate = (sides > 1).cpu().numpy()  # (B, S)
    host_masks = masks.cpu().numpy()
    found: list[list[tuple[np.ndarray, int]]] = []
    maps = np.zeros((b, h, w), dtype=np.float32)
    for i in range(b):
        candidates = _candidates(host_masks[i], background_candidate[i], points, (h, w), settings.cc_area)
        maps[i] = (1.0 - candidates.votes).reshape(h, w)
        if candidates.background is None:
            found.append([])
            continue
        with torch.autocast(device_type=feats.device.type, enabled=False), no_tf32():
            means = _mean_features(unit[i], np.concatenate([candidates.background[None], candidates.foreground]))
        kept = _cascade(candidates, means[1:] @ means[0], settings)
        found.append(_merge(candidates.foreground[kept], candidates.points[kept], unit[i], settings))
    k = max(1, max(len(f) for f in found))
    boxes = np.zeros((b, k, 4), dtype=np.int64)
    valid = np.zeros((b, k), dtype=bool)
    seeds = np.full((b, k), -1, dtype=np.int64)
    out_masks = np.zeros((b, k, h, w), dtype=bool)
    hws = image_hws.cpu().tolist()
    for i, clusters in enumerate(found):
        for j, (mask, seed) in enumerate(clusters):
            grid = mask.reshape(h, w)
            out_masks[i, j], seeds[i, j], valid[i, j] = grid, seed, True
            boxes[i, j] = component_box(grid, patch_size, (int(hws[i][0]), int(hws[i][1])))
    return ObjectsBatch(
        boxes=torch.from_numpy(boxes),
        scores=torch.from_numpy(valid.astype(np.float32)),
        valid=torch.from_numpy(valid),
        seeds=torch.from_numpy(seeds),
        masks=torch.from_numpy(out_masks),
        score_map=torch.from_numpy(maps),
    )


def _candidates(
    masks: np.ndarray, background_candidate: np.ndarray, points: np.ndarray, grid_hw: tuple[int, int], cc_area: float
) -> _Candidates:
    """Steps 2-4 for one image: ``masks`` ``(S, N)`` bool point masks, ``background_candidate``
    ``(S,)`` bool, ``points`` ``(S,)`` their patches."""
    import scipy.ndimage

    h, w = grid_hw
    n = h * w
    background_masks = masks[background_candidate]
    votes = background_masks.mean(0, dtype=np.float32) if len(background_masks) else np.zeros(n, np.float32)
    foreground: list[np.ndarray] = []
    owners: list[int] = []
    for mask, point, is_background in zip(masks, points, background_candidate, strict=True):
        if is_background:
            continue
        labels, count = scipy.ndimage.label(mask.reshape(h, w))
        if count == 0:  # an all-zero feature's point: an empty mask (the reference fails here)
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64)
        own = int(labels.flat[point])
        base = sizes[own - 1]  # own == 0 (the point outside its mask): the last component, as the reference
        for label in np.argsort(-sizes, kind="stable"):
            if sizes[label] < cc_area * base:
                break
            foreground.append((labels == label + 1).ravel())
            owners.append(int(point))
    fg = np.array(foreground, dtype=bool).reshape(-1, n)
    background: np.ndarray | None = None
    if len(fg) and len(background_masks):
        counts = background_masks.sum(0)
        background = np.float32(counts) / np.float32(len(background_masks)) > np.float32(0.5)
        if np.float32(background.sum()) / np.float32(n) < np.float32(MIN_BACKGROUND):
            background = None
    return _Candidates(fg, np.array(owners, dtype=np.int64), background, votes)


def _mean_features(unit: torch.Tensor, masks: np.ndarray) -> np.ndarray:
    """``(M, C)`` float32 mean of the ``(N, C)`` unit features over each of ``(M, N)`` bool masks."""
    import torch

    weights = torch.from_numpy(masks).to(unit.device, torch.float32)
    sums = weights @ unit
    return (sums / weights.sum(1, keepdim=True)).cpu().numpy()


def _cascade(candidates: _Candidates, background_dots: np.ndarray, settings: ProMerge) -> np.ndarray:
    """Step 5: the indices of the foreground candidates kept, in the cascade's order (smallest first).

    Args:
        candidates: the image's candidates (with a background).
        background_dots: ``(M,)`` dot product of each candidate's mean unit feature with the background's.
    """
    background = candidates.background
    assert background is not None
    areas = candidates.foreground.sum(1)
    covered = np.zeros_like(background)
    kept = []
    for index in np.argsort(areas, kind="stable"):
        mask = candidates.foreground[index]
        new = mask & ~covered
        fresh = np.float32(new.sum())
        inside = np.float32((new & background).sum())
        # 0 / 0 is NaN in the reference, and NaN < tau is False: a mask with nothing new is refused
        share_ok = fresh > 0 and inside / fresh < np.float32(settings.iou_filter)
        if share_ok and background_dots[index] < np.float32(settings.fg_include):
            covered |= mask
            kept.append(int(index))
    return np.array(kept, dtype=np.int64)


def _merge(
    masks: np.ndarray, points: np.ndarray, unit: torch.Tensor, settings: ProMerge
) -> list[tuple[np.ndarray, int]]:
    """Step 6: ``(cluster mask (N,) bool, its first point)``, largest first, ties by first patch.

    Args:
        masks: ``(M, N)`` bool kept masks in the cascade's order.
        points: ``(M,)`` their points.
        unit: ``(N, C)`` unit features, where the means are computed.
    """
    order = np.argsort(-masks.sum(1), kind="stable")
    clusters: list[tuple[np.ndarray, int]] = []
    for index in order:
        mask = masks[index]
        area = np.float32(mask.sum())
        mask_mean: np.ndarray | None = None
        joined = []
        for c, (cluster, _) in enumerate(clusters):
            overlap = np.float32((cluster & mask).sum())
            if overlap == 0:
                continue
            share = overlap / area
            if share > np.float32(settings.intersection_merge):
                joined.append(c)
            elif share > np.float32(settings.merge_ioa):
                if mask_mean is None:
                    mask_mean = _mean_features(unit, mask[None])[0]
                cluster_mean = _mean_features(unit, cluster[None])[0]
                if not mask_mean @ cluster_mean < np.float32(settings.dino_merge):
                    joined.append(c)
        if not joined:
            clusters.append((mask.copy(), int(points[index])))
            continue
        union = mask.copy()
        for c in joined:
            union |= clusters[c][0]
        seed = clusters[joined[0]][1]
        clusters = [cluster for c, cluster in enumerate(clusters) if c not in joined]
        clusters.append((union, seed))
    first_patch = [int(np.argmax(cluster)) for cluster, _ in clusters]
    ranked = sorted(range(len(clusters)), key=lambda c: (-int(clusters[c][0].sum()), first_patch[c]))
    return [clusters[c] for c in ranked]


__all__ = ["ProMerge", "promerge_batch"]
