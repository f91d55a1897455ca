"""What a method found in an image: ``K`` objects, each a box, a score, a seed and a mask.

One type for every method and every consumer (journals, exports, evaluators, pictures), in the
spirit of supervision's ``Detections`` and segment-anything's ``MaskData``:

- :class:`Objects`: one image's ``K`` objects on the host (numpy). LOST, TokenCut and DINO-seg
  give ``K = 1``; MaskCut gives up to its number of masks.
- :class:`ObjectsBatch`: a batch of ``B`` images on the device (tensors), ``K`` slots each with
  a ``valid`` flag, read back with one :meth:`ObjectsBatch.to_host` (the only host sync).

Conventions:

- boxes are ``(x1, y1, x2, y2)``, x2/y2 exclusive, in pixels of the original image (a box of a
  whole ``W x H`` image is ``(0, 0, W, H)``); int64 from objdisc's methods, float64 when read
  from another tool's results file;
- masks are ``(K, h, w)`` bool on the patch grid the model saw, row-major like the seeds;
- pixel masks (:meth:`Objects.pixel_masks`) are ``(K, H, W)`` bool at the original size, made
  one way only: patch ``(r, c)`` covers the model-input pixels ``[r p, (r + 1) p) x [c p, (c + 1) p)``,
  cut to the unpadded model input ``(H', W')``; when the model saw a resized image (``--max-side``),
  original pixel ``(y, x)`` takes the value of model pixel ``(floor((y + 0.5) H' / H),
  floor((x + 0.5) W' / W))``; when the model saw the image resized to a patch multiple without
  padding (``--patch-resize``, as TokenCut's saliency code), the grid is brought to the original
  size as ``torch.nn.functional.interpolate(mode="nearest")`` does (TokenCut's ``ncut``): row
  ``floor(y h / H)`` in float32, the same for columns (``Geometry.sampling == "nearest"``). A
  method that refines masks at pixel level (MaskCut's CRF) gives them as COCO RLEs
  (``segmentation``), which then take precedence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch only where a batch is read back
    import torch


@dataclass(frozen=True)
class Geometry:
    """Where an image's patch grid sits in its pixels.

    Attributes:
        patch_size: patch side in pixels.
        grid_hw: ``(h, w)`` patch grid of the padded model input.
        model_hw: ``(H', W')`` pixels the model saw, unpadded (after any ``--max-side`` resize).
        image_hw: ``(H, W)`` pixels of the original image.
        sampling: how a resized model input maps back (module docstring): ``"centre"`` (pixel
            centres, ``--max-side``) or ``"nearest"`` (the grid straight to the image as torch's
            nearest interpolation, ``--patch-resize``).
    """

    patch_size: int
    grid_hw: tuple[int, int]
    model_hw: tuple[int, int]
    image_hw: tuple[int, int]
    sampling: str = "centre"


@dataclass(frozen=True)
class Objects:
    """``K`` objects found in one image (``K`` may be 0).

    Attributes:
        boxes: ``(K, 4)`` ``x1, y1, x2, y2`` original pixels, x2/y2 exclusive.
        scores: ``(K,)`` float64; 1.0 for the one-object methods (they give no score).
        seeds: ``(K,)`` int64 row-major seed patch of each object on the grid, -1 where the
            method has none (DINO-seg), or ``None`` when unknown (read from a file).
        masks: ``(K, h, w)`` bool masks on the patch grid, or ``None``.
        segmentation: ``K`` COCO RLEs (``{"size": [H, W], "counts": str}``) of the pixel masks,
            or ``None``; set when the masks were refined at pixel level or read from a file.
        score_map: ``(h, w)`` float32, the method's per-patch map (LOST: degree; TokenCut: the
            eigenvector; DINO-seg: the CLS attention), or ``None``.
        geometry: the grid's place in the pixels; needed to turn ``masks`` into pixel masks.
        saliency: the image's saliency counts (:func:`objdisc.evaluation.saliency.counts`),
            made by the run where the full-resolution map was in memory; ``None`` elsewhere.
    """

    boxes: np.ndarray
    scores: np.ndarray
    seeds: np.ndarray | None = None
    masks: np.ndarray | None = None
    segmentation: list[dict[str, Any]] | None = None
    score_map: np.ndarray | None = None
    geometry: Geometry | None = field(default=None, compare=False)
    saliency: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        k = len(self.boxes)
        if self.boxes.shape != (k, 4):
            raise ValueError(f"boxes must be (K, 4), got {self.boxes.shape}")
        if self.scores.shape != (k,):
            raise ValueError(f"{len(self.scores)} scores for {k} boxes")
        for name in ("seeds", "masks", "segmentation"):
            value = getattr(self, name)
            if value is not None and len(value) != k:
                raise ValueError(f"{len(value)} {name} for {k} boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_masks(self) -> bool:
        """Whether pixel masks can be had (grid masks with their geometry, or RLEs)."""
        return self.segmentation is not None or (self.masks is not None and self.geometry is not None)

    def best(self) -> int | None:
        """Index of the highest-scoring object (the first on equal scores); ``None`` when ``K = 0``."""
        return int(np.argmax(self.scores)) if len(self) else None

    def pixel_masks(self) -> np.ndarray:
        """``(K, H, W)`` bool masks at the original image size (see the module docstring).

        Raises:
            ValueError: the objects carry no masks.
        """
        if self.segmentation is not None:
            from pycocotools import mask as mask_utils

            if not self.segmentation:
                return np.zeros((0, 0, 0), dtype=bool)
            decoded = mask_utils.decode([_rle_bytes(r) for r in self.segmentation])  # (H, W, K)
            return np.ascontiguousarray(decoded.transpose(2, 0, 1).astype(bool))
        if self.masks is None or self.geometry is None:
            raise ValueError("these objects carry no masks")
        return grid_to_pixels(self.masks, self.geometry)

    def rles(self) -> list[dict[str, Any]]:
        """The pixel masks as compressed COCO RLEs (``counts`` a str), one per object."""
        if self.segmentation is not None:
            return self.segmentation
        return encode_rles(self.pixel_masks())

    def to_json(self, with_masks: bool = True) -> dict[str, Any]:
        """The journal / results form: boxes, scores, seeds and, when there are masks, RLEs."""
        out: dict[str, Any] = {
            "boxes": self.boxes.tolist(),
            "scores": [float(s) for s in self.scores],
        }
        if self.seeds is not None:
            out["seeds"] = [int(s) for s in self.seeds]
        if with_masks and self.has_masks:
            out["segmentation"] = self.rles()
        if self.saliency is not None:
            out["saliency"] = self.saliency
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Objects:
        """Inverse of :meth:`to_json` (no grid masks, no score map: those are not stored)."""
        boxes = np.asarray(data["boxes"], dtype=np.int64).reshape(-1, 4)
        seeds = np.asarray(data["seeds"], dtype=np.int64) if "seeds" in data else None
        scores = np.asarray(data["scores"], dtype=np.float64)
        return cls(boxes, scores, seeds, segmentation=data.get("segmentation"), saliency=data.get("saliency"))

    @classmethod
    def empty(cls) -> Objects:
        """No object."""
        return cls(np.zeros((0, 4), dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64))

    def at_image_size(self, image_hw: tuple[int, int]) -> Objects:
        """The same objects with boxes mapped from the model input to an original image of size
        ``image_hw`` (``--max-side``); the grid masks stay, the geometry says how they map."""
        from objdisc.geometry import map_box

        if self.geometry is None:
            raise ValueError("objects without geometry cannot be mapped to another image size")
        model_hw = self.geometry.model_hw
        if tuple(image_hw) == tuple(model_hw):
            return self
        boxes = np.asarray([map_box(b, model_hw, image_hw) for b in self.boxes.tolist()], dtype=np.int64)
        geometry = replace(self.geometry, image_hw=tuple(image_hw))
        return Objects(
            boxes.reshape(-1, 4), self.scores, self.seeds, self.masks, self.segmentation, self.score_map, geometry,
            self.saliency,
        )  # fmt: skip

    def take(self, keep: Sequence[int] | np.ndarray) -> Objects:
        """The objects at the indices ``keep``, in that order."""
        index = np.asarray(keep, dtype=np.int64)
        return Objects(
            self.boxes[index],
            self.scores[index],
            None if self.seeds is None else self.seeds[index],
            None if self.masks is None else self.masks[index],
            None if self.segmentation is None else [self.segmentation[i] for i in index],
            self.score_map,
            self.geometry,
            self.saliency,
        )


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def encode_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """``(K, H, W)`` bool masks -> ``K`` compressed COCO RLEs with ``counts`` as str (JSON-able)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in encoded]


def grid_to_pixels(masks: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(K, h, w)`` patch-grid masks -> ``(K, H, W)`` bool masks at the original size.

    Each patch covers ``patch_size`` model pixels per side; the padded part is cut off; a
    resized model input is mapped back by sampling pixel centres, or as torch's nearest
    interpolation (``geometry.sampling``; see the module docstring).
    """
    p = geometry.patch_size
    mh, mw = geometry.model_hw
    height, width = geometry.image_hw
    if geometry.sampling == "nearest":
        rows, cols = nearest_index(geometry.grid_hw[0], height), nearest_index(geometry.grid_hw[1], width)
    elif (mh, mw) == (height, width):
        rows, cols = np.arange(height) // p, np.arange(width) // p
    else:
        rows = np.floor((np.arange(height) + 0.5) * mh / height).astype(np.int64) // p
        cols = np.floor((np.arange(width) + 0.5) * mw / width).astype(np.int64) // p
    return masks[:, rows[:, None], cols[None, :]].astype(bool)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out,)`` int64: the source index of each output index under
    ``torch.nn.functional.interpolate(size=n_out, mode="nearest")`` (its float32 arithmetic included)."""
    import torch
    import torch.nn.functional as F

    source = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(source, size=n_out, mode="nearest")[0, 0].long().numpy()


@dataclass(frozen=True)
class ObjectsBatch:
    """Device-side results for ``B`` images on one ``(h, w)`` grid, ``K`` object slots each.

    Attributes:
        boxes: ``(B, K, 4)`` int64 ``x1, y1, x2, y2`` pixels of the unpadded model input.
        scores: ``(B, K)`` float32.
        valid: ``(B, K)`` bool, which slots hold an object.
        seeds: ``(B, K)`` int64 row-major seed patches (-1: none).
        masks: ``(B, K, h, w)`` bool object masks (exact where ``converged``), or ``None``.
        score_map: ``(B, h, w)`` float32 per-patch map, or ``None``.
        converged: ``(B, K)`` bool, or ``None`` (all exact). False where a seed component was
            still growing after the device's fixed number of dilation steps: the host finishes
            it from ``foreground`` (:mod:`objdisc.methods.components`).
        foreground: ``(B, K, h, w)`` bool masks the components were taken from, or ``None``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor
    seeds: torch.Tensor
    masks: torch.Tensor | None = None
    score_map: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    foreground: torch.Tensor | None = None

    def to_host(self, patch_size: int, image_hws: Sequence[tuple[int, int]]) -> list[Objects]:
        """Copy to the host (one sync), finish unconverged components, one :class:`Objects` per image.

        Args:
            patch_size: patch side in pixels.
            image_hws: the ``B`` unpadded ``(H, W)`` model-input sizes, to clip recomputed boxes.

        Returns:
            Boxes in model-input pixels, geometry with ``image_hw = model_hw`` (the engine maps
            them to the original pixels when the model saw a resized image).
        """
        from objdisc.geometry import component_box, seed_component

        boxes = self.boxes.cpu().numpy()
        # float32 scores as the shortest decimals that read back as the same float32 (0.9, not
        # 0.8999999761581421): what the method computed, and what JSON shows.
        raw = self.scores.float().cpu().numpy()
        scores = np.array([float(str(v)) for v in raw.ravel()], dtype=np.float64).reshape(raw.shape)
        valid = self.valid.cpu().numpy()
        seeds = self.seeds.cpu().numpy()
        masks = self.masks.cpu().numpy() if self.masks is not None else None
        score_map = self.score_map.float().cpu().numpy() if self.score_map is not None else None
        converged = self.converged.cpu().numpy() if self.converged is not None else None
        foreground = None
        if converged is not None and not converged.all():
            assert self.foreground is not None and masks is not None
            foreground = self.foreground.cpu().numpy()
            boxes, masks = boxes.copy(), masks.copy()
        out = []
        for i, hw in enumerate(image_hws):
            if foreground is not None:
                for j in np.flatnonzero(~converged[i] & valid[i]):  # type: ignore[index]
                    masks[i, j] = seed_component(foreground[i, j], int(seeds[i, j]))  # type: ignore[index]
                    boxes[i, j] = component_box(masks[i, j], patch_size, hw)  # type: ignore[index]
            keep = np.flatnonzero(valid[i])
            grid = masks.shape[-2:] if masks is not None else score_map.shape[-2:]  # type: ignore[union-attr]
            geometry = Geometry(patch_size, (int(grid[0]), int(grid[1])), tuple(hw), tuple(hw))  # type: ignore[arg-type]
            out.append(
                Objects(
                    boxes[i, keep].astype(np.int64),
                    scores[i, keep],
                    seeds[i, keep].astype(np.int64),
                    masks[i, keep] if masks is not None else None,
                    None,
                    score_map[i] if score_map is not None else None,
                    geometry,
                )
            )
        return out


__all__ = ["Geometry", "Objects", "ObjectsBatch", "encode_rles", "grid_to_pixels", "nearest_index"]
