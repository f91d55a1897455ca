"""``objdisc eval``: CorLoc of any COCO-results file, so other tools' boxes sit in the same table.

Per image the highest-scoring box counts (the first in file order on equal scores; a box
without a score counts as score 0); an image of the dataset without any prediction is a miss.
Predictions for images not in the dataset are ignored and counted.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from objdisc.datasets import Dataset, ImageRecord
from objdisc.engine.out_folder import check_ours, is_run_folder, lock_out
from objdisc.errors import ObjdiscError, OptionError
from objdisc.evaluation.boxes import xywh_to_xyxy
from objdisc.evaluation.corloc import CorLoc, image_set
from objdisc.utils.hashing import sha256_file
from objdisc.utils.jsonio import read_json, write_json_atomic

EVALUATED_BY = "objdisc eval"


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


def run_images(run: Path) -> tuple[str, list[int]]:
    """The dataset name and image ids an ``objdisc run`` folder scored (its ``per_image.json``).

    Raises:
        ObjdiscError: the folder is not a finished objdisc run.
    """
    run = Path(run)
    try:
        images = read_json(run / "per_image.json")["images"]
        dataset = str(read_json(run / "metrics.json")["dataset"])
        return dataset, [int(item["image_id"]) for item in images]
    except FileNotFoundError as exc:
        raise ObjdiscError(
            f"--images-of {run}: not a finished objdisc run ({Path(exc.filename).name} missing)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ObjdiscError(f"--images-of {run}: unreadable run files ({type(exc).__name__}: {exc})") from None


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


def limited_run_note(predictions: Path, dataset: Dataset) -> str | None:
    """A hint when ``predictions`` is an objdisc run's file made on fewer images than ``dataset``."""
    folder = Path(predictions).parent
    try:
        run_dataset, ids = run_images(folder)
    except ObjdiscError:
        return None
    if run_dataset != dataset.name or len(ids) >= len(dataset.records):
        return None
    return (
        f"note: {folder} scored {len(ids)} of the {len(dataset.records)} images of {dataset.name}; the others "
        f"count as misses here. Add --images-of {folder} to score the same images as the run"
    )


def evaluate(dataset: Dataset, predictions: Path, image_ids: Collection[int] | None = None) -> dict[str, Any]:
    """CorLoc of ``predictions`` on ``dataset`` (or on its images ``image_ids`` only).

    Images without a ground-truth box are left out of CorLoc and counted (``no_ground_truth``).

    Returns:
        metrics.json-style dict: ``corloc`` (``None`` when no image has ground truth),
        ``n_images`` (images scored against), ``n_scored`` (the denominator), ``n_hits``,
        ``n_missing`` (counted images without a prediction), ``n_unknown`` (predictions for
        images not scored against), ``no_ground_truth`` and ``image_set``.
    """
    if not dataset.has_gt:
        raise ObjdiscError(f"{dataset.name} has no ground truth to score against")
    records = dataset.records if image_ids is None else select_records(dataset, image_ids, "the image list")
    best = read_predictions(predictions)
    metric = CorLoc()
    missing = 0
    for record in records:
        if record.image_id in best and record.gt_boxes is not None:
            metric.update(record.image_id, best[record.image_id][1], record.gt_boxes)
        else:
            missing += record.image_id not in best and not record.no_ground_truth
            metric.skip(record.image_id, has_gt=not record.no_ground_truth)
    score = metric.compute()
    ids = {r.image_id for r in records}
    return {
        "dataset": dataset.name,
        "corloc": round(score.corloc, 4) if score.corloc is not None else None,
        "n_images": len(records),
        "n_scored": score.n_images,
        "n_hits": score.n_hits,
        "n_missing": missing,
        "n_unknown": len(set(best) - ids),
        "no_ground_truth": score.n_no_gt,
        "image_set": image_set(sorted(ids)),
    }


def write_eval(
    out: Path, metrics: dict[str, Any], predictions: Path, label: str, images_of: Path | None = None
) -> None:
    """``metrics.json`` and ``run.json`` in ``out``, readable by ``objdisc table`` as a row ``label``.

    ``out`` is locked while written; a folder holding an ``objdisc run`` or files objdisc did
    not write is refused (an earlier ``objdisc eval`` folder is replaced).

    Raises:
        OptionError: ``out`` cannot be used.
    """
    from objdisc import __version__
    from objdisc.utils.provenance import now_iso

    out = Path(out)
    with lock_out(out, "objdisc eval"):
        check_ours(out)
        if is_run_folder(out) and not is_eval_folder(out):
            raise OptionError(
                f"--out {out}: holds an objdisc run, whose run.json and metrics.json eval would replace; "
                "give eval a folder of its own"
            )
        made_by = {
            "backbone": label,
            "predictions": {"path": str(predictions), "sha256": sha256_file(predictions)},
            "images_of": str(images_of) if images_of is not None else None,
            "versions": {"objdisc": __version__},
            "evaluated_by": EVALUATED_BY,
        }
        write_json_atomic(out / "metrics.json", {"producer": made_by, **metrics})
        write_json_atomic(out / "run.json", {"producer": made_by, "status": "finished", "finished": now_iso()})


def is_eval_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by ``objdisc eval --out`` (and holds no run's journal)."""
    if any((folder / "journal").glob("rank*.jsonl")):
        return False
    try:
        info = read_json(folder / "run.json")
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("producer") or {}).get("evaluated_by") == EVALUATED_BY


__all__ = [
    "PredictionsError",
    "evaluate",
    "is_eval_folder",
    "limited_run_note",
    "read_predictions",
    "run_images",
    "select_records",
    "write_eval",
]
