"""PASCAL VOC 2007 / 2012 (LOST's ground-truth convention).

Layout under the data root: ``VOCdevkit/VOC2007|VOC2012/{JPEGImages, Annotations,
ImageSets/Main/<split>.txt}``. Every object is ground truth for CorLoc, difficult and truncated
included (for AP the difficult ones are ignored, as crowd regions are in COCO); ``xmin - 1`` and
``ymin - 1`` turn the 1-based inclusive XML boxes into pixel coordinates with exclusive ends.
With ``no_hard`` difficult and truncated objects are dropped and images left with none are
excluded.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from objdisc.datasets.base import Dataset, DatasetError, ImageRecord, box_warnings, no_boxes, require

YEARS = {"voc07": "2007", "voc12": "2012"}


def voc_image_id(stem: str) -> int:
    """VOC image id: ``"2008_000123"`` -> ``2008000123``, ``"000005"`` -> ``5``."""
    return int(stem.replace("_", ""))


def parse_voc_xml(path: Path, no_hard: bool = False) -> tuple[np.ndarray, int | None, int | None, list[bool]]:
    """Ground-truth boxes and size from one VOC annotation file.

    Returns:
        ``(boxes (M, 4) int64 xyxy pixels, width, height, difficult flag per box)``.

    Raises:
        DatasetError: naming the file when it is missing or malformed.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{path}: cannot read VOC annotation ({exc})") from exc
    boxes, difficult = [], []
    for obj in root.iter("object"):
        if no_hard and (obj.findtext("difficult", "0").strip() == "1" or obj.findtext("truncated", "0").strip() == "1"):
            continue
        bndbox = obj.find("bndbox")
        try:
            coords = [int(float(bndbox.findtext(tag))) for tag in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr, arg-type]
        except (AttributeError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: object without a valid bndbox ({exc})") from exc
        coords[0] -= 1
        coords[1] -= 1
        boxes.append(coords)
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    width = _int_or_none(root.findtext("size/width"))
    height = _int_or_none(root.findtext("size/height"))
    return (np.asarray(boxes, dtype=np.int64).reshape(-1, 4) if boxes else no_boxes()), width, height, difficult


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def read_split(split_file: Path) -> list[str]:
    """The image ids (file stems) of a VOC ``ImageSets/Main/<split>.txt``, one per line.

    A UTF-8 byte-order mark (a file saved by some editors) is read as such; blank lines are
    skipped; CRLF line ends are fine.

    Raises:
        DatasetError: naming the file and line of a line that is not an image id (e.g. a class
            image set's ``000005 -1``), an unreadable file, or a file listing nothing.
    """
    try:
        text = split_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{split_file}: cannot read the image list ({exc})") from exc
    stems = []
    for number, line in enumerate(text.splitlines(), start=1):
        stem = line.strip()
        if not stem:
            continue
        if not _IMAGE_ID.fullmatch(stem):
            raise DatasetError(
                f"{split_file}: line {number} is not a VOC image id ({stem[:40]!r}); the file must list one id per "
                "line, such as 000005 or 2008_000002 (a class list like aeroplane_trainval.txt is not an image set)"
            )
        stems.append(stem)
    if not stems:
        raise DatasetError(f"{split_file}: the split file lists no images")
    return stems


_IMAGE_ID = re.compile(r"\d+(_\d+)?")


def load_voc(data_root: Path, kind: str, split: str = "trainval", no_hard: bool = False) -> Dataset:
    """VOC07 or VOC12 records in split-file order.

    Args:
        data_root: folder holding ``VOCdevkit``.
        kind: ``voc07`` or ``voc12``.
        split: image set name under ``ImageSets/Main``.
        no_hard: drop difficult / truncated objects, exclude images left with none.
    """
    year = YEARS[kind]
    base = require(data_root / "VOCdevkit" / f"VOC{year}", f"the VOC{year} devkit folder (VOCdevkit/VOC{year})")
    images = require(base / "JPEGImages", f"the VOC{year} JPEG images")
    annotations = require(base / "Annotations", f"the VOC{year} XML annotations")
    split_file = require(base / "ImageSets" / "Main" / f"{split}.txt", f"the VOC{year} '{split}' image list")
    stems = read_split(split_file)
    records: list[ImageRecord] = []
    excluded: list[dict[str, object]] = []
    warnings: list[dict[str, str]] = []
    seen: set[str] = set()
    for stem in stems:
        image_id = voc_image_id(stem)
        path = images / f"{stem}.jpg"
        if stem in seen:
            warnings.append({"file_name": path.name, "message": f"listed more than once in {split_file}; used once"})
            continue
        seen.add(stem)
        try:
            boxes, width, height, difficult = parse_voc_xml(annotations / f"{stem}.xml", no_hard)
        except DatasetError as exc:
            records.append(ImageRecord(image_id, path, path.name, no_boxes(), error=str(exc)))
            continue
        if no_hard and len(boxes) == 0:
            excluded.append({"image_id": image_id, "file_name": path.name, "reason": "no object left by --no-hard"})
            continue
        warnings += box_warnings(path.name, boxes, width, height)
        instances = tuple(
            {"bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "area": float((x2 - x1) * (y2 - y1)),
             "iscrowd": int(hard)}  # VOC's difficult objects are ignored by AP, as VOC's own evaluation does
            for (x1, y1, x2, y2), hard in zip(boxes.tolist(), difficult, strict=True)
        )  # fmt: skip
        records.append(ImageRecord(image_id, path, path.name, boxes, width, height, None, instances))
    return Dataset(f"{kind}/{split}", images, records, has_gt=True, excluded=excluded, warnings=warnings)
