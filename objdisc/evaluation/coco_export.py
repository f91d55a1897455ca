"""COCO-format content: class-agnostic predictions and ground truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from objdisc.evaluation.boxes import xyxy_to_xywh

if TYPE_CHECKING:
    from objdisc.datasets.base import ImageRecord
    from objdisc.objects import Objects

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_results(results: Mapping[int, Objects]) -> list[dict[str, Any]]:
    """COCO results: one class-agnostic entry (category 1) per object, in image then object order.

    Each entry: ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` pixels, ``score`` and,
    when the objects carry masks, ``segmentation`` (compressed RLE at the original image size).
    """
    out = []
    for image_id, objects in results.items():
        rles = objects.rles() if objects.has_masks else None
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
    """COCO ground truth of the evaluated images, one class-agnostic category.

    Args:
        records: the images, in order; those with ``gt_boxes`` get annotations.
        sizes: decoded ``(H, W)`` per image id; images never decoded fall back to the
            annotated size (0 when unknown).
        info: written as the file's ``info``.
    """
    images, annotations = [], []
    for record in records:
        height, width = sizes.get(record.image_id, (record.height or 0, record.width or 0))
        images.append({"id": record.image_id, "file_name": record.file_name, "width": width, "height": height})
        for box in record.gt_boxes if record.gt_boxes is not None else []:
            x, y, w, h = (int(v) for v in xyxy_to_xywh(box))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": CATEGORY["id"],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {"info": info or {}, "images": images, "annotations": annotations, "categories": [CATEGORY]}
