"""Scoring a results file: every metric of any COCO-results file (or folder of saliency maps),
so other tools' objects sit in the same table (``objdisc eval``: :mod:`objdisc.commands.eval`).

A results file is read into one :class:`~objdisc.objects.Objects` per image (its entries in
file order; a box without a score has score 0; ``segmentation`` RLEs kept when every entry of
the image has one) and scored by the evaluators ``objdisc run`` uses
(:mod:`objdisc.evaluation.evaluator`): CorLoc takes the highest-scoring box (the first in file
order on equal scores); an image of the dataset without any prediction is a miss. Predictions
for images not in the dataset are ignored and counted.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.datasets import Dataset, ImageRecord
from objdisc.errors import ObjdiscError
from objdisc.evaluation import default_evaluators
from objdisc.evaluation.corloc import image_set
from objdisc.evaluation.evaluator import score
from objdisc.geometry import xywh_to_xyxy
from objdisc.objects import Objects
from objdisc.utils.jsonio import read_json


class PredictionsError(ObjdiscError):
    """A predictions file that is not COCO results."""


def read_predictions(path: Path) -> dict[int, Objects]:
    """The objects of every image id in a COCO results file, in file order.

    Accepts a bare results list (the COCO format) or an object with an ``annotations`` list.
    Boxes are float64 ``x1, y1, x2, y2``; an entry without a score has score 0; the
    ``segmentation`` RLEs are kept for an image when each of its entries has one.

    Raises:
        PredictionsError: naming the file and the first bad entry.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise PredictionsError(f"{path}: predictions file not found") from None
    except ValueError as exc:
        raise PredictionsError(f"{path}: not JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        raise PredictionsError(
            f"{path}: a COCO ground-truth (instances) file, not results: scoring ground truth against itself says "
            "nothing; give the predictions file (a list of {image_id, bbox, score}, e.g. a run's predictions.json)"
        )
    entries = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise PredictionsError(f"{path}: expected a list of COCO results (or an object with 'annotations')")
    if entries and all(isinstance(e, dict) and "iscrowd" in e and "id" in e and "score" not in e for e in entries):
        raise PredictionsError(
            f"{path}: its entries are ground-truth annotations (id, iscrowd, no score), not results; give the "
            "predictions file"
        )
    boxes: dict[int, list[list[float]]] = {}
    scores: dict[int, list[float]] = {}
    rles: dict[int, list[Any]] = {}
    for n, entry in enumerate(entries):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or "image_id" not in entry or "bbox" not in entry:
            raise PredictionsError(f"{where}: needs 'image_id' and 'bbox'")
        bbox, value = entry["bbox"], entry.get("score", 0.0)
        if not (isinstance(bbox, Sequence) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            raise PredictionsError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if not _finite(value):
            raise PredictionsError(f"{where}: score must be a finite number, got {value!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise PredictionsError(f"{where}: negative width or height in {bbox!r}")
        try:
            image_id = int(entry["image_id"])
        except (TypeError, ValueError):
            raise PredictionsError(f"{where}: image_id must be an integer, got {entry['image_id']!r}") from None
        boxes.setdefault(image_id, []).append([float(v) for v in xywh_to_xyxy(bbox)])
        scores.setdefault(image_id, []).append(float(value))
        rles.setdefault(image_id, []).append(_rle(entry.get("segmentation"), where))
    out = {}
    for image_id, items in boxes.items():
        segmentation = rles[image_id] if all(r is not None for r in rles[image_id]) else None
        out[image_id] = Objects(
            np.asarray(items, dtype=np.float64).reshape(-1, 4),
            np.asarray(scores[image_id], dtype=np.float64),
            segmentation=segmentation,
        )
    return out


def _rle(value: Any, where: str) -> dict[str, Any] | None:
    """A compressed COCO RLE as written by COCO tools, or ``None``; other mask forms are refused."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("counts"), str) and len(value.get("size") or []) == 2:
        return {"size": [int(v) for v in value["size"]], "counts": value["counts"]}
    raise PredictionsError(f"{where}: segmentation must be a compressed RLE {{'size': [H, W], 'counts': str}}")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def select_records(dataset: Dataset, image_ids: Collection[int], where: str) -> list[ImageRecord]:
    """The dataset's records whose id is in ``image_ids``, in dataset order.

    Raises:
        ObjdiscError: some ids are not in the dataset (``where`` names their origin).
    """
    wanted = set(image_ids)
    records = [r for r in dataset.records if r.image_id in wanted]
    if len(records) != len(wanted):
        unknown = sorted(wanted - {r.image_id for r in records})
        raise ObjdiscError(
            f"{where}: {len(unknown)} of its {len(wanted)} images are not in {dataset.name} (first id {unknown[0]}); "
            "score it against the dataset it was run on"
        )
    return records


def evaluate(
    dataset: Dataset,
    predictions: Path,
    image_ids: Collection[int] | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric that applies to ``dataset`` for ``predictions`` (or on its images ``image_ids`` only).

    Returns:
        metrics.json-style dict: ``dataset``, ``n_images`` (images scored against),
        ``n_missing`` (images with ground truth and no prediction), ``n_unknown`` (predictions
        for images not scored against), ``no_ground_truth``, ``image_set`` and ``metrics`` (one
        block per evaluator, as ``objdisc run`` writes them).

    Raises:
        ObjdiscError: the dataset has no ground truth, or the file is not COCO results.
    """
    if not dataset.has_gt and not dataset.has_saliency:
        raise ObjdiscError(f"{dataset.name} has no ground truth to score against")
    records = dataset.records if image_ids is None else select_records(dataset, image_ids, "the image list")
    if Path(predictions).is_dir():
        results = read_mask_folder(Path(predictions), dataset, records)
    else:
        results = read_predictions(predictions)
    evaluators = default_evaluators(dataset, metrics)
    if not any(objects.has_masks for objects in results.values()):  # boxes only: no mask AP to give
        if metrics is not None and "mask_ap" in metrics:
            raise ObjdiscError(
                f"{predictions}: --metrics mask_ap needs masks, and no prediction has a segmentation (an RLE); "
                "score its boxes with --metrics ap"
            )
        evaluators = [e for e in evaluators if e.name != "mask_ap"]
    blocks, _ = score(records, results, evaluators)
    ids = {r.image_id for r in records}
    return {
        "dataset": dataset.name,
        "n_images": len(records),
        "n_missing": sum(r.image_id not in results and not r.no_ground_truth for r in records),
        "n_unknown": len(set(results) - ids),
        "no_ground_truth": sum(r.no_ground_truth for r in records),
        "image_set": image_set(sorted(ids)),
        "boxes_outside": boxes_outside(records, results),
        "metrics": blocks,
    }


OUTSIDE_TOLERANCE = 1.0  # pixels a box may reach past its image (rounding) before it is counted


def boxes_outside(records: Sequence[ImageRecord], results: dict[int, Objects]) -> dict[str, Any]:
    """How many predicted boxes reach past their image by more than :data:`OUTSIDE_TOLERANCE` pixels,
    of how many whose image size is annotated, and the first such (a file of ``[x1, y1, x2, y2]``
    boxes read as COCO's ``[x, y, w, h]`` makes many).

    Returns:
        ``{"n": outside, "n_checked": boxes checked, "first": {"image_id", "bbox_xyxy", "image_wh"} or None}``.
    """
    outside, checked, first = 0, 0, None
    for record in records:
        objects = results.get(record.image_id)
        if objects is None or not record.width or not record.height:
            continue
        for box in objects.boxes.tolist():
            checked += 1
            x1, y1, x2, y2 = box
            if min(x1, y1) < -OUTSIDE_TOLERANCE or x2 > record.width + OUTSIDE_TOLERANCE or (
                y2 > record.height + OUTSIDE_TOLERANCE
            ):
                outside += 1
                if first is None:
                    first = {"image_id": record.image_id, "bbox_xyxy": box, "image_wh": [record.width, record.height]}
    return {"n": outside, "n_checked": checked, "first": first}


def read_mask_folder(folder: Path, dataset: Dataset, records: Sequence[ImageRecord]) -> dict[int, Objects]:
    """Another tool's saliency maps, one 8-bit PNG per image named by the image's stem (values / 255),
    each scored against the image's ground-truth mask (:func:`objdisc.evaluation.saliency.counts`).

    Raises:
        ObjdiscError: the dataset has no saliency masks; a map is missing, unreadable or of
            another size than its ground truth (naming the file).
    """
    from dataclasses import replace

    from objdisc.evaluation.saliency import counts, read_mask, read_prediction

    if not dataset.has_saliency:
        raise ObjdiscError(
            f"--predictions {folder}: a folder of masks is scored on a saliency dataset (ecssd, duts-te, dut-omron, "
            f"duts-tr, saliency); {dataset.name} takes a COCO results file"
        )
    out = {}
    for record in records:
        assert record.mask_path is not None
        path = folder / f"{Path(record.file_name).stem}.png"
        found = counts(read_prediction(path), read_mask(record.mask_path), f"{path} against {record.mask_path}")
        out[record.image_id] = replace(Objects.empty(), saliency=found)
    return out


__all__ = [
    "OUTSIDE_TOLERANCE",
    "PredictionsError",
    "boxes_outside",
    "evaluate",
    "read_mask_folder",
    "read_predictions",
    "select_records",
]
