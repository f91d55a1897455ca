"""MaskCut (CutLER, Wang et al., CVPR 2023): several objects per image by repeated normalised cuts.

As CutLER's ``maskcut_forward`` (``maskcut/maskcut.py``), per image, at most ``masks`` times:

1. cosine similarity of the patch features (float32, TF32 off); weight 1 where above ``tau``,
   ``eps`` elsewhere (the diagonal included);
2. ``x``: the eigenvector of the second smallest eigenvalue ``lambda`` of ``(D - W) x = lambda D x``,
   found as TokenCut finds it (:func:`objdisc.methods.eigen.second_eigenpair`: Lanczos on the
   normalised graph with its known top eigenvector deflated, a fixed start, the dense solve as
   fallback; degenerate graphs, where every pair of patches weighs the same, give no cut: the
   whole image);
3. bipartition ``B = x > mean(x)``; ``s = argmax |x|`` (within a relative 1e-6 of the maximum
   counts as a tie, the lowest index wins, as objdisc's TokenCut); the partition is reversed when
   3 or 4 grid corners are in ``B``, or else when ``s`` is not; the seed is the largest entry of
   ``x`` on the foreground side (``argmax`` of ``x``, or of ``-x`` when reversed);
4. the seed's 4-connected component of the foreground is the mask; from the second mask on, a
   mask whose IoU with the previous one is above 0.5, or which covers at most 1 % of the grid, is
   dropped (and becomes the "previous mask" of the next round, as in the reference);
5. the patches of the mask are "painted": their features are zeroed before the next round.

Sign of ``x``. The eigenvector's sign is arbitrary (the reference takes whatever LAPACK returns).
Step 3 does not depend on it except when the two rules disagree: the side holding 3 or 4
corners also holds ``s``. The reference then answers one way or the other with LAPACK's sign;
objdisc gives the corner rule precedence (the side with 3 or more corners is background),
whatever the sign. ``benchmarks/fidelity.py`` counts these images apart.

Input size. With ``fixed_size`` (480, as maskcut.py) every image is resized to a square of that
side with PIL's Lanczos filter, then (``resize_pil``) to the nearest multiple of the patch size;
the model sees the latter. Masks are brought back to the square by nearest-neighbour upsampling
of the grid (``torch.nn.functional.interpolate``), each with the earlier masks' pixels removed,
refined there with the dense CRF (:mod:`objdisc.refinement.crf`, holes filled, the mask dropped
when its IoU with the unrefined one is below 0.5), then resized to the original image (PIL's
bicubic filter on the 0/255 mask) and thresholded at half its maximum: maskcut.py's chain. With
``fixed_size = 0`` the image is used at native size and the grid masks map to pixels as every
other method's (:mod:`objdisc.objects`).

Score. MaskCut gives none; objdisc scores each mask ``1 - lambda`` (``lambda``, the normalised
cut's value in ``[0, 1]``, is small for a clean cut). AP ranks the detections of all images by
this score, so AP depends on it; CorLoc takes the highest-scoring mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from objdisc.errors import OptionError
from objdisc.methods.base import Method
from objdisc.methods.eigen import SOLVERS
from objdisc.methods.options import at_least, below_one, cosine, finite, option, positive
from objdisc.refinement.pixel_chain import finalize_masks, mask_iou

if TYPE_CHECKING:
    import torch

    from objdisc.objects import Objects, ObjectsBatch

_TIE = 1e-6  # relative: |x| entries this close to the max are tied for s
MIN_AREA = 0.01  # of the grid: masks this small are dropped (the reference's ratio <= 0.01)
MAX_IOU = 0.5  # with the previous mask: above it, the new mask is dropped


@dataclass(frozen=True)
class MaskCut(Method):
    """MaskCut: up to ``masks`` objects per image by repeated normalised cuts (CutLER)."""

    masks: int = option(3, "MaskCut: masks per image at most (CutLER's N).", checks=[at_least(1)], short="n")
    tau: float = option(
        0.15,
        "MaskCut: cosine similarity above which two patches are linked (CutLER's paper and README: 0.15).",
        checks=[finite, cosine],
    )
    eps: float = option(1e-5, "MaskCut: weight of every other pair of patches.", checks=[finite, positive, below_one])
    fixed_size: int = option(
        480,
        "MaskCut: resize every image to this square side in pixels first, as maskcut.py (0: native size).",
        checks=[at_least(0)],
        short="fs",
    )
    crf: bool = option(True, "MaskCut: refine each mask with the dense CRF (needs pip install 'objdisc[crf]').")
    eigen: str = option(
        "auto",
        "MaskCut: eigen-solver: host (ARPACK, an image at a time), device (batched Lanczos where the model runs), "
        "auto (device on a GPU, else host); the same eigenvectors to ~1e-10.",
        choices=SOLVERS,
        decides=False,
    )

    name: ClassVar[str] = "maskcut"
    title: ClassVar[str] = "MaskCut (CutLER, Wang et al., CVPR 2023): several masks per image by repeated cuts"
    map_label: ClassVar[str] = "|eigenvector|, first cut (MaskCut)"
    needs_image: ClassVar[bool] = True

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        return maskcut_batch(feats, grid_hw, patch_size, image_hws, self.masks, self.tau, self.eps, self.eigen)

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

    def display_map(self, score_map: np.ndarray) -> np.ndarray:
        """|x| of the first cut."""
        return np.abs(score_map)

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects:
        """Pixel masks at the original size, maskcut.py's chain (module docstring), boxes from them."""
        return finalize_masks(objects, load, image_hw, self.fixed_size, self.crf)


def maskcut_batch(
    feats: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hws: torch.Tensor,
    n_masks: int = 3,
    tau: float = 0.15,
    eps: float = 1e-5,
    eigen: str = "host",
) -> ObjectsBatch:
    """MaskCut's cuts for a batch sharing one patch grid (module docstring, steps 1-5).

    The graphs are built on the features' device; each round's eigenvectors are found on the host
    one image at a time, or with ``eigen="device"`` for the whole batch on the device
    (:mod:`objdisc.methods.eigen`); either way each round syncs once with the device.

    Args:
        feats: ``(B, N, C)`` patch features, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` unpadded model-input sizes ``(H, W)`` in pixels.
        n_masks: at most this many masks per image.
        tau: similarity threshold for an edge of weight 1.
        eps: weight of every other edge.
        eigen: the eigen-solver, one of :data:`objdisc.methods.eigen.SOLVERS`.

    Returns:
        :class:`~objdisc.objects.ObjectsBatch` on the host with ``K = n_masks`` slots (``valid``
        marks the masks kept), boxes of the grid masks clipped to the model input, scores
        ``1 - lambda``, the seeds, and the first cut's eigenvector as ``score_map``.
    """
    import torch

    from objdisc.geometry import component_box
    from objdisc.methods.components import check_batch
    from objdisc.objects import ObjectsBatch

    check_batch(feats, grid_hw, image_hws)
    b, (h, w) = feats.shape[0], grid_hw
    boxes = np.zeros((b, n_masks, 4), dtype=np.int64)
    scores = np.zeros((b, n_masks), dtype=np.float32)
    valid = np.zeros((b, n_masks), dtype=bool)
    seeds = np.full((b, n_masks), -1, dtype=np.int64)
    masks = np.zeros((b, n_masks, h, w), dtype=bool)
    first = np.zeros((b, h, w), dtype=np.float32)
    hws = image_hws.cpu().tolist()
    for i, rounds in enumerate(cuts(feats, grid_hw, n_masks, tau, eps, eigen)):
        for k, (mask, seed, lam, vec) in enumerate(rounds):
            if k == 0:
                first[i] = vec.reshape(h, w)
            if mask is None:
                continue
            masks[i, k], seeds[i, k], scores[i, k], valid[i, k] = mask, seed, 1.0 - lam, True
            boxes[i, k] = component_box(mask, patch_size, (int(hws[i][0]), int(hws[i][1])))
    return ObjectsBatch(
        boxes=torch.from_numpy(boxes),
        scores=torch.from_numpy(scores),
        valid=torch.from_numpy(valid),
        seeds=torch.from_numpy(seeds),
        masks=torch.from_numpy(masks),
        score_map=torch.from_numpy(first),
    )


Round = tuple[np.ndarray | None, int, float, np.ndarray]


def cuts(
    feats: torch.Tensor, grid_hw: tuple[int, int], n_masks: int, tau: float, eps: float, eigen: str = "host"
) -> list[list[Round]]:
    """The ``n_masks`` rounds of each image of ``(B, N, C)`` features: per image, per round
    ``(mask (h, w): the seed's component of the foreground, or None when dropped; seed, lambda,
    eigenvector (N,))``. Round ``k`` of every image is solved together
    (:func:`objdisc.methods.eigen.second_eigenpairs`); an image's rounds depend on each other."""
    import torch
    import torch.nn.functional as F

    from objdisc.geometry import seed_component
    from objdisc.methods.eigen import second_eigenpairs
    from objdisc.utils.device import no_tf32

    b, (h, w) = feats.shape[0], grid_hw
    current = feats.float()
    painted = torch.zeros(b, h * w, dtype=torch.bool, device=feats.device)
    previous: list[np.ndarray | None] = [None] * b
    out: list[list[Round]] = [[] for _ in range(b)]
    host = eigen == "host" or (eigen == "auto" and feats.device.type == "cpu")
    for k in range(n_masks):
        if k > 0:
            painted |= torch.from_numpy(np.stack(previous).reshape(b, h * w)).to(feats.device)
            current = torch.where(painted[:, :, None], torch.zeros((), device=feats.device), current)
        groups = [[i] for i in range(b)] if host else [list(range(b))]  # host: one graph in memory at a time
        for group in groups:
            with torch.autocast(device_type=feats.device.type, enabled=False), no_tf32():
                unit = F.normalize(current[group], dim=-1)
                similarity = torch.bmm(unit, unit.transpose(1, 2)) if len(group) > 1 else (unit[0] @ unit[0].T)[None]
            weights = torch.where(similarity > tau, 1.0, eps).to(torch.float64)
            for i, (vec, lam) in zip(group, second_eigenpairs(weights, eigen), strict=True):
                foreground, seed = orient(vec, (h, w))
                component = seed_component(foreground.reshape(h, w), seed)
                kept: np.ndarray | None = component
                last = previous[i]
                if k > 0 and (
                    component.sum() <= MIN_AREA * h * w or (last is not None and mask_iou(last, component) > MAX_IOU)
                ):
                    kept, component = None, np.zeros((h, w), dtype=bool)
                previous[i] = component
                out[i].append((kept, seed, lam, vec))
    return out


def orient(vec: np.ndarray, grid_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Step 3: ``(foreground (N,) bool, seed)`` from the eigenvector (module docstring).

    With ``B = x > mean(x)`` and ``c`` its grid corners: 3 or 4 corners make ``B`` the background,
    0 or 1 make it the foreground (its complement holds 3 or more), and with 2 the side holding
    ``s = argmax |x|`` is the foreground. The result does not depend on the sign of ``x``.
    """
    h, w = grid_hw
    bipartition = vec > np.sum(vec) / len(vec)
    corners = int(bipartition[0]) + int(bipartition[w - 1]) + int(bipartition[(h - 1) * w]) + int(bipartition[-1])
    if corners != 2:
        reverse = corners >= 3
    else:
        magnitude = np.abs(vec)
        s = int(np.argmax(magnitude >= magnitude.max() * (1 - _TIE)))
        reverse = not bipartition[s]
    foreground = ~bipartition if reverse else bipartition
    side = -vec if reverse else vec
    top = side.max()
    seed = int(np.argmax(side >= top - abs(top) * _TIE))
    if not foreground[seed]:  # a degenerate graph: no cut, every patch ties; the whole image
        foreground = np.ones_like(foreground)
    return foreground, seed


__all__ = ["MaskCut", "cuts", "maskcut_batch", "orient"]
