"""``objdisc eval``: CorLoc of any COCO-results file, so other tools' boxes sit in the same table.

Per image the highest-scoring box counts (the first in file order on equal scores; a box
without a score counts as score 0); an image of the dataset without any prediction is a miss.
Predictions for images not in the dataset are ignored and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from objdisc.boxes import xywh_to_xyxy
from objdisc.datasets import Dataset
from objdisc.errors import ObjdiscError
from objdisc.hashing import sha256_file
from objdisc.jsonio import read_json, write_json_atomic
from objdisc.metrics import CorLoc


class PredictionsError(ObjdiscError):
    """A predictions file that is not COCO results."""


def read_predictions(path: Path) -> dict[int, tuple[float, tuple[float, float, float, float]]]:
    """Best ``(score, xyxy box)`` per image id from a COCO results file.

    Accepts a bare results list (the COCO format) or an object with an ``annotations`` list.

    Raises:
        PredictionsError: naming the file and the first bad entry.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise PredictionsError(f"{path}: predictions file not found") from None
    except ValueError as exc:
        raise PredictionsError(f"{path}: not JSON ({exc})") from None
    entries = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise PredictionsError(f"{path}: expected a list of COCO results (or an object with 'annotations')")
    best: dict[int, tuple[float, tuple[float, float, float, float]]] = {}
    for n, entry in enumerate(entries):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or "image_id" not in entry or "bbox" not in entry:
            raise PredictionsError(f"{where}: needs 'image_id' and 'bbox'")
        bbox, score = entry["bbox"], entry.get("score", 0.0)
        if not (isinstance(bbox, Sequence) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            raise PredictionsError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if not _finite(score):
            raise PredictionsError(f"{where}: score must be a finite number, got {score!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise PredictionsError(f"{where}: negative width or height in {bbox!r}")
        try:
            image_id = int(entry["image_id"])
        except (TypeError, ValueError):
            raise PredictionsError(f"{where}: image_id must be an integer, got {entry['image_id']!r}") from None
        if image_id not in best or score > best[image_id][0]:
            best[image_id] = (float(score), tuple(float(v) for v in xywh_to_xyxy(bbox)))  # type: ignore[misc]
    return best


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def evaluate(dataset: Dataset, predictions: Path) -> dict[str, Any]:
    """CorLoc of ``predictions`` on ``dataset``.

    Returns:
        metrics.json-style dict: ``corloc``, ``n_images``, ``n_hits``, ``n_missing`` (images
        without a prediction), ``n_unknown`` (predictions for images not in the dataset).
    """
    if not dataset.has_gt:
        raise ObjdiscError(f"{dataset.name} has no ground truth to score against")
    best = read_predictions(predictions)
    metric = CorLoc()
    missing = 0
    ids = set()
    for record in dataset.records:
        ids.add(record.image_id)
        if record.image_id in best and record.gt_boxes is not None:
            metric.update(record.image_id, best[record.image_id][1], record.gt_boxes)
        else:
            missing += record.image_id not in best
            metric.skip(record.image_id)
    score = metric.compute()
    return {
        "dataset": dataset.name,
        "corloc": round(score.corloc, 4),
        "n_images": score.n_images,
        "n_hits": score.n_hits,
        "n_missing": missing,
        "n_unknown": len(set(best) - ids),
    }


def write_eval(out: Path, metrics: dict[str, Any], predictions: Path, label: str) -> None:
    """``metrics.json`` and ``run.json`` in ``out``, readable by ``objdisc table`` as a row ``label``."""
    from objdisc import __version__
    from objdisc.provenance import now_iso

    made_by = {
        "backbone": label,
        "predictions": {"path": str(predictions), "sha256": sha256_file(predictions)},
        "versions": {"objdisc": __version__},
        "evaluated_by": "objdisc eval",
    }
    write_json_atomic(Path(out) / "metrics.json", {"producer": made_by, **metrics})
    write_json_atomic(Path(out) / "run.json", {"producer": made_by, "status": "finished", "finished": now_iso()})


__all__ = ["PredictionsError", "evaluate", "read_predictions", "write_eval"]
