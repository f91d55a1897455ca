"""COCO-format datasets: any instances json + image folder, and LOST's COCO20k.

Ground truth as in LOST: ``iscrowd`` annotations dropped, ``[x, y, w, h]`` turned into
``(x1, y1, x2, y2)`` and rounded to int with Python's ``round``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.datasets.base import Dataset, DatasetError, ImageRecord, box_warnings, no_boxes, require
from objdisc.utils.jsonio import read_json

COCO20K_LIST = "coco_20k_filenames.txt"
COCO20K_SEL = "instances_train2014_sel20k.json"


def read_coco_json(path: Path) -> dict[str, Any]:
    """Read a COCO instances file; errors name the file."""
    require(path, "a COCO instances json")
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable COCO json ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    return data


class _BadEntry(ValueError):
    """One annotation or image entry that is not COCO, with where and why."""


@contextlib.contextmanager
def _malformed(path: Path) -> Iterator[None]:
    """Turn a missing or mistyped field of a COCO file into a DatasetError naming it."""
    try:
        yield
    except _BadEntry as exc:
        raise DatasetError(f"{path}: {exc}; fix the entry or give the original COCO file") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed COCO entry ({type(exc).__name__}: {exc})") from exc


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gt_boxes_by_image(
    data: dict[str, Any], image_ids: set[int] | None = None
) -> tuple[dict[int, np.ndarray], dict[int, list[dict[str, Any]]]]:
    """In one pass: non-crowd ground-truth boxes ``(M, 4)`` int64 xyxy per image id (CorLoc, LOST's
    convention), and every annotation per image id as an AP instance (crowd regions included)."""
    lists: dict[int, list[list[int]]] = {}
    instances: dict[int, list[dict[str, Any]]] = {}
    for n, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise _BadEntry(f"annotation {n} is not an object but {ann!r:.40}")
        where = f"annotation id {ann.get('id', f'#{n}')!r}"
        raw_id = ann.get("image_id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, int):
            raise _BadEntry(f"{where}: image_id must be an integer, got {raw_id!r}")
        image_id = raw_id
        if image_ids is not None and image_id not in image_ids:
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list | tuple) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise _BadEntry(f"{where} (image {image_id}): bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        crowd = int(ann.get("iscrowd", 0) == 1)
        instance: dict[str, Any] = {"bbox": [float(v) for v in bbox], "iscrowd": crowd}
        instance["area"] = float(ann["area"]) if _number(ann.get("area")) else float(bbox[2] * bbox[3])
        if ann.get("segmentation"):
            instance["segmentation"] = ann["segmentation"]
        instances.setdefault(image_id, []).append(instance)
        if crowd:
            continue
        x, y, w, h = bbox
        lists.setdefault(image_id, []).append([round(v) for v in (x, y, x + w, y + h)])
    return {k: np.asarray(v, dtype=np.int64) for k, v in lists.items()}, instances


def _record(
    entry: dict[str, Any], image_root: Path, boxes: dict[int, np.ndarray], instances: dict[int, list[dict[str, Any]]]
) -> ImageRecord:
    image_id = int(entry["id"])
    name = str(entry["file_name"])
    box = boxes.get(image_id, no_boxes())
    objects = tuple(instances.get(image_id, ()))
    return ImageRecord(image_id, image_root / name, name, box, entry.get("width"), entry.get("height"), None, objects)


def _has_masks(instances: dict[int, list[dict[str, Any]]]) -> bool:
    """Whether every non-crowd instance carries a segmentation (mask AP needs them all)."""
    found = [i for items in instances.values() for i in items if not i["iscrowd"]]
    return bool(found) and all("segmentation" in i for i in found)


def load_coco(images: Path, annotations: Path) -> Dataset:
    """Every image of a COCO instances file, in file order, read from ``images``."""
    require(images, "the image folder of the COCO annotations")
    data = read_coco_json(annotations)
    with _malformed(annotations):
        boxes, instances = gt_boxes_by_image(data)
        records, seen, warnings = [], set(), []
        for entry in data["images"]:
            if int(entry["id"]) in seen:  # a duplicated image entry is evaluated once
                message = f"image id {entry['id']} appears more than once in {annotations}; used once"
                warnings.append({"file_name": str(entry["file_name"]), "message": message})
                continue
            seen.add(int(entry["id"]))
            records.append(_record(entry, images, boxes, instances))
    require_ground_truth(annotations, data, records)
    return Dataset(
        f"coco/{annotations.stem}",
        images,
        records,
        has_gt=True,
        warnings=warnings + _warnings(records),
        has_masks=_has_masks(instances),
    )


def require_ground_truth(path: Path, data: dict[str, Any], records: list[ImageRecord]) -> None:
    """Refuse annotations that give none of the images a ground-truth box (CorLoc would be meaningless).

    Raises:
        DatasetError: saying why: no ``annotations`` list, ids matching none of the images, or
            only crowd boxes.
    """
    if any(r.gt_boxes is not None and len(r.gt_boxes) for r in records):
        return
    anns = data.get("annotations")
    if not isinstance(anns, list):
        why = "it has no 'annotations' list (an image-info file, such as image_info_test2014.json?)"
    elif not anns:
        why = "its 'annotations' list is empty"
    else:
        ids = {r.image_id for r in records}
        matching = [a for a in anns if isinstance(a, dict) and a.get("image_id") in ids]
        if not matching:
            why = f"none of its {len(anns):,} annotations has the image_id of one of its {len(records):,} images"
        else:
            why = f"its {len(matching):,} annotations of these images are all crowd regions (iscrowd=1)"
    raise DatasetError(
        f"{path}: no image has a ground-truth box: {why}; give the instances file of these images, "
        "or use --dataset folder for boxes without CorLoc"
    )


def _warnings(records: list[ImageRecord]) -> list[dict[str, str]]:
    return [
        w for r in records if r.gt_boxes is not None for w in box_warnings(r.file_name, r.gt_boxes, r.width, r.height)
    ]


COCO_VAL2017_ANNOTATIONS = "instances_val2017.json"


def load_coco_val2017(data_root: Path) -> Dataset:
    """COCO val2017 (5,000 images, 80 categories, segmentations): ``COCO/images/val2017`` and
    ``COCO/annotations/instances_val2017.json`` under the data root, in the file's order."""
    coco = require(data_root / "COCO", "the COCO folder (COCO/images/val2017, COCO/annotations)")
    images = require(coco / "images" / "val2017", "the COCO val2017 images (objdisc data download coco_val2017)")
    annotations = require(
        coco / "annotations" / COCO_VAL2017_ANNOTATIONS, "the COCO 2017 instances annotations (instances_val2017.json)"
    )
    dataset = load_coco(images, annotations)
    dataset.name = "coco_val2017/val2017"
    return dataset


def coco20k_image_id(line: str) -> int:
    """``train2014/COCO_train2014_000000000009.jpg`` -> ``9``."""
    return int(Path(line).stem.rsplit("_", 1)[-1])


def read_coco20k_list(list_path: Path) -> list[tuple[int, str]]:
    """``(image id, file name)`` per line of LOST's list (``train2014/COCO_train2014_%012d.jpg``), in order."""
    lines = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    try:
        return [(coco20k_image_id(line), Path(line).name) for line in lines]
    except ValueError as exc:
        raise DatasetError(f"{list_path}: a line is not train2014/COCO_train2014_<id>.jpg ({exc})") from exc


def load_coco20k(data_root: Path) -> Dataset:
    """LOST's COCO20k: the listed train2014 images in list order.

    Uses ``COCO/annotations/instances_train2014_sel20k.json`` when present (LOST's selected
    file), else the full ``instances_train2014.json``.
    """
    coco = require(data_root / "COCO", "the COCO folder (COCO/images/train2014, COCO/annotations)")
    images = require(coco / "images" / "train2014", "the COCO train2014 images")
    list_file = require(coco / COCO20K_LIST, "LOST's COCO20k list (19,817 lines train2014/COCO_train2014_*.jpg)")
    selected = coco / "annotations" / COCO20K_SEL
    annotations = selected if selected.exists() else coco / "annotations" / "instances_train2014.json"
    require(annotations, "the COCO 2014 instances annotations (instances_train2014.json)")
    listed = read_coco20k_list(list_file)
    if not listed:
        raise DatasetError(f"{list_file}: the list names no images")
    data = read_coco_json(annotations)
    with _malformed(annotations):
        by_id = {int(entry["id"]): entry for entry in data["images"]}
        boxes, instances = gt_boxes_by_image(data, {image_id for image_id, _ in listed})
    records, seen = [], set()
    for image_id, name in listed:
        if image_id in seen:
            continue
        seen.add(image_id)
        if image_id in by_id:
            records.append(_record(by_id[image_id], images, boxes, instances))
        else:
            error = f"{annotations}: no image entry for id {image_id}"
            records.append(ImageRecord(image_id, images / name, name, no_boxes(), error=error))
    require_ground_truth(annotations, data, records)
    return Dataset(
        "coco20k/train2014", images, records, has_gt=True, warnings=_warnings(records), has_masks=_has_masks(instances)
    )
