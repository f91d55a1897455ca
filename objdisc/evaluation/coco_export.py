"""COCO-format content: class-agnostic predictions and ground truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.geometry import xyxy_to_xywh

if TYPE_CHECKING:
    from objdisc.datasets.base import ImageRecord
    from objdisc.objects import Objects

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_results(results: Mapping[int, Objects]) -> list[dict[str, Any]]:
    """COCO results: one class-agnostic entry (category 1) per object, in image then object order
    (:func:`image_results` of each image)."""
    return [entry for image_id, objects in results.items() for entry in image_results(image_id, objects)]


def image_results(image_id: int, objects: Objects, with_masks: bool = True) -> list[dict[str, Any]]:
    """One image's objects as COCO results.

    Each entry: ``image_id``, ``category_id`` 1, ``bbox`` ``[x, y, w, h]`` integer pixels,
    ``score`` and, with ``with_masks`` when the objects carry masks, ``segmentation``
    (compressed RLE at the original image size).
    """
    rles = objects.rles() if with_masks and objects.has_masks else None
    out = []
    for k, box in enumerate(objects.boxes.tolist()):
        entry: dict[str, Any] = {
            "image_id": image_id,
            "category_id": CATEGORY["id"],
            "bbox": xyxy_to_xywh(box),
            "score": float(objects.scores[k]),
        }
        if rles is not None:
            entry["segmentation"] = rles[k]
        out.append(entry)
    return out


def coco_ground_truth(
    records: Iterable[ImageRecord], sizes: dict[int, tuple[int, int]], info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """COCO ground truth of the evaluated images, one class-agnostic category: the ground truth the
    AP evaluators score against (crowd regions with ``iscrowd``, segmentations where the dataset
    has them), so that COCOeval on this file and ``predictions.json`` gives ``metrics.json``'s AP.

    Args:
        records: the images, in order; their ``instances`` (else their ``gt_boxes``) become
            annotations.
        sizes: decoded ``(H, W)`` per image id; images never decoded fall back to the
            annotated size (0 when unknown).
        info: written as the file's ``info``.
    """
    images, annotations = [], []
    for record in records:
        images.append(image_entry(record, sizes.get(record.image_id)))
        annotations += record_annotations(record, len(annotations) + 1)
    return {"info": info or {}, "images": images, "annotations": annotations, "categories": [CATEGORY]}


def image_entry(record: ImageRecord, size: tuple[int, int] | None) -> dict[str, Any]:
    """One image of a COCO file: ``id``, ``file_name``, ``width``, ``height`` (the decoded ``(H, W)``
    ``size``, else the annotated one, 0 when unknown)."""
    height, width = size if size is not None else (record.height or 0, record.width or 0)
    return {"id": record.image_id, "file_name": record.file_name, "width": width, "height": height}


def record_annotations(record: ImageRecord, start_id: int) -> list[dict[str, Any]]:
    """A record's ground truth as class-agnostic COCO annotations, ids from ``start_id``: its
    ``instances`` where it has them, else its ``gt_boxes``."""
    if record.instances is not None:
        return ground_truth_annotations(record, start_id)
    out = []
    for box in record.gt_boxes if record.gt_boxes is not None else []:
        x, y, w, h = (int(v) for v in xyxy_to_xywh(box))
        out.append(
            {
                "id": start_id + len(out),
                "image_id": record.image_id,
                "category_id": CATEGORY["id"],
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return out


PSEUDO_LABELS = "objdisc pseudo-labels"
FOREGROUND = {"id": 1, "name": "fg", "supercategory": "fg"}


def pseudo_labels(
    records: Iterable[ImageRecord],
    results: Mapping[int, Objects],
    sizes: Mapping[int, tuple[int, int]],
    producer: dict[str, Any],
) -> dict[str, Any]:
    """A COCO instances file of the objects found, for training a detector on them (as maskcut.py
    writes CutLER's): one category ``fg``; per object its RLE ``segmentation``, ``bbox``
    ``[x, y, w, h]``, ``area`` (the mask's pixels, else the box's), ``iscrowd`` 0; every image
    processed, with or without objects. pycocotools' ``COCO`` and detectron2 load it.

    Args:
        records: the images, in order.
        results: objects per image id (images without a result are left out).
        sizes: decoded ``(H, W)`` per image id.
        producer: what made the objects (the run's ``producer`` block), kept in ``info``.
    """
    images, annotations = [], []
    for record in records:
        if record.image_id not in results or record.image_id not in sizes:
            continue
        images.append(image_entry(record, sizes[record.image_id]))
        annotations += pseudo_label_annotations(
            record.image_id, results[record.image_id], sizes[record.image_id], len(annotations) + 1
        )
    return {**pseudo_labels_head(producer), "images": images, "annotations": annotations, "categories": [FOREGROUND]}


def pseudo_labels_head(producer: dict[str, Any]) -> dict[str, Any]:
    """The keys a pseudo-label file starts with (``info`` first: :func:`is_pseudo_label_file` reads it)."""
    return {"info": {"description": PSEUDO_LABELS, "producer": producer}, "licenses": []}


def pseudo_label_annotations(
    image_id: int, objects: Objects, size: tuple[int, int], start_id: int
) -> list[dict[str, Any]]:
    """One image's objects as pseudo-label annotations (:func:`pseudo_labels`), ids from ``start_id``."""
    from pycocotools import mask as mask_utils

    height, width = size
    rles = objects.rles() if objects.has_masks else [None] * len(objects)
    out = []
    for box, score, rle in zip(objects.boxes.tolist(), objects.scores.tolist(), rles, strict=True):
        xywh = [float(v) for v in xyxy_to_xywh(box)]
        ann: dict[str, Any] = {
            "id": start_id + len(out),
            "image_id": image_id,
            "category_id": FOREGROUND["id"],
            "iscrowd": 0,
            "bbox": xywh,
            "area": float(xywh[2] * xywh[3]),
            "score": float(score),
            "width": width,
            "height": height,
        }
        if rle is not None:
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}))
        out.append(ann)
    return out


def is_pseudo_label_file(path: Path) -> bool:
    """Whether ``path`` holds pseudo-labels objdisc wrote (:func:`pseudo_labels`): read from the file's
    head only (its ``info`` comes first), however large the file."""
    import json

    try:
        with open(path, "rb") as f:
            head = f.read(len(_PSEUDO_HEAD) + 8)
    except OSError:
        return False
    if head.startswith(_PSEUDO_HEAD):
        return True
    if Path(path).stat().st_size > 64 << 20:  # no objdisc head: not read whole
        return False
    try:  # a small file written otherwise (by hand, another JSON writer): read it whole
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and (data.get("info") or {}).get("description") == PSEUDO_LABELS


_PSEUDO_HEAD = ('{"info": {"description": "' + PSEUDO_LABELS + '"').encode()


def ground_truth_annotations(record: ImageRecord, start_id: int) -> list[dict[str, Any]]:
    """A record's instances as class-agnostic COCO annotations, ids from ``start_id``."""
    out = []
    for n, instance in enumerate(record.instances or ()):
        ann = {
            "id": start_id + n,
            "image_id": record.image_id,
            "category_id": CATEGORY["id"],
            "bbox": list(instance["bbox"]),
            "area": instance["area"],
            "iscrowd": instance["iscrowd"],
        }
        if "segmentation" in instance:
            ann["segmentation"] = instance["segmentation"]
        out.append(ann)
    return out
