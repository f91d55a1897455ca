"""What every dataset yields: image records with optional ground truth."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.errors import DatasetError
from objdisc.images import Member

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image to process.

    Attributes:
        image_id: integer id used in the COCO files.
        path: the image file.
        file_name: name written to ``gt.json`` (relative to the dataset's image folder).
        gt_boxes: ``(M, 4)`` int64 ``(x1, y1, x2, y2)`` pixels; ``None`` for datasets without
            ground truth.
        width: annotated width in pixels, or ``None`` when unknown before decoding.
        height: annotated height in pixels, or ``None``.
        error: why this image cannot be evaluated (e.g. a malformed annotation); the run
            lists it as skipped and counts it as a miss instead of crashing.
        instances: the image's objects as COCO annotations, for AP: ``bbox`` ``[x, y, w, h]``
            pixels, ``area``, ``iscrowd`` (COCO's crowd regions; VOC's difficult objects) and,
            where the dataset has masks, ``segmentation`` (polygons or RLE, as in the file);
            ``None`` for datasets without ground truth.
        mask_path: the ground-truth saliency mask (a PNG of the image's size), for the
            saliency datasets; ``None`` elsewhere.
        group: the folder a class-folder tree keeps the image in (ImageNet's ``n01440764``), or
            ``None``.
        member: where in ``path`` (a tar shard) the image's bytes are, or ``None``: ``path`` is
            the image file.
    """

    image_id: int
    path: Path
    file_name: str
    gt_boxes: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    instances: tuple[dict[str, Any], ...] | None = None
    mask_path: Path | None = None
    group: str | None = None
    member: Member | None = None

    @property
    def no_ground_truth(self) -> bool:
        """Annotated, but with no ground-truth box: left out of CorLoc (nothing to localise).

        A record whose annotation could not be read (``error``) is not one of these: it is a miss.
        """
        return self.gt_boxes is not None and len(self.gt_boxes) == 0 and self.error is None


@dataclass
class Dataset:
    """An ordered list of records.

    Attributes:
        name: dataset kind and split, e.g. ``voc07/trainval``.
        image_root: folder the records' ``file_name`` is relative to.
        records: images in processing order.
        has_gt: whether CorLoc can be computed.
        excluded: images left out by an option (e.g. ``--no-hard``), with the reason; they
            are not counted in CorLoc, as in LOST.
        warnings: odd but usable annotations (ground truth outside the image, an image listed
            twice), each ``{"file_name", "message"}``; reported in metrics.json.
        has_masks: the ground truth has object masks (COCO's segmentations): mask AP applies.
        has_saliency: every record has a ground-truth saliency mask (``mask_path``): the
            saliency metrics apply.
    """

    name: str
    image_root: Path
    records: list[ImageRecord]
    has_gt: bool
    excluded: list[dict[str, object]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    has_masks: bool = False
    has_saliency: bool = False


def box_warnings(file_name: str, boxes: np.ndarray, width: int | None, height: int | None) -> list[dict[str, str]]:
    """Warnings for ground-truth boxes that are empty or reach outside the annotated image.

    The boxes are kept as annotated (as LOST does): CorLoc stays comparable with published numbers.
    """
    out = []
    for x1, y1, x2, y2 in boxes.tolist():
        if x2 <= x1 or y2 <= y1:
            out.append({"file_name": file_name, "message": f"empty ground-truth box {[x1, y1, x2, y2]}"})
        elif width and height and (x1 < 0 or y1 < 0 or x2 > width or y2 > height):
            out.append(
                {
                    "file_name": file_name,
                    "message": f"ground-truth box {[x1, y1, x2, y2]} reaches outside the {width}x{height} image",
                }
            )
    return out


def no_boxes() -> np.ndarray:
    """An empty ``(0, 4)`` int64 box array."""
    return np.zeros((0, 4), dtype=np.int64)


def require(path: Path, what: str) -> Path:
    """Return ``path`` if it exists, else raise a :class:`DatasetError` saying what belongs there."""
    if not path.exists():
        raise DatasetError(f"{path}: not found; expected {what} there")
    return path


def resolve_data_root(data_root: str | Path | None) -> Path:
    """``--data-root`` or ``$OBJDISC_DATA_ROOT``, expanded; an error when neither is set."""
    value = data_root if data_root is not None else os.environ.get("OBJDISC_DATA_ROOT")
    if not value:
        raise DatasetError(
            "no data root: pass --data-root DIR or set OBJDISC_DATA_ROOT (e.g. export OBJDISC_DATA_ROOT=~/data; "
            "`objdisc data download voc07 --data-root ~/data` puts the datasets there)"
        )
    return Path(value).expanduser()
