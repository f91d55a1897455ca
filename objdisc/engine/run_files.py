"""The files of a finished run: written from the journal, read back by ``table``, ``eval`` and ``visualize``.

Written by :func:`write_outputs` (atomically, in dataset order, by rank 0):

- ``predictions.json``: COCO results, one entry per object (with ``segmentation`` where the
  method has masks);
- ``gt.json``: COCO ground truth of the evaluated images, one class-agnostic category;
- ``per_image.json``: per image its objects (box, score, seed) and each evaluator's details
  (CorLoc: ``{"iou", "hit"}``), or why it was skipped;
- ``metrics.json``: the run's counts and one block per evaluator under ``metrics``
  (:mod:`objdisc.evaluation.evaluator`).

Read back by :func:`read_metrics` and :func:`read_per_image`, which also read the files of
objdisc 0.1 (one box per image; CorLoc at the top level of ``metrics.json``) in today's shape,
so runs made before the change stay usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.errors import ObjdiscError
from objdisc.evaluation.coco_export import coco_ground_truth, coco_results, pseudo_labels
from objdisc.evaluation.corloc import image_set
from objdisc.evaluation.evaluator import Evaluator, score
from objdisc.objects import Objects
from objdisc.utils.jsonio import read_json, write_json_atomic

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset, ImageRecord


def entry_objects(entry: dict[str, Any]) -> Objects | None:
    """The objects of one journal entry (today's ``objects``, or 0.1's ``box`` and ``seed``)."""
    if entry.get("objects") is not None:
        return Objects.from_json(entry["objects"])
    if entry.get("box") is not None:  # objdisc 0.1: one box, no score
        return Objects.from_json({"boxes": [entry["box"]], "scores": [1.0], "seeds": [entry.get("seed", -1)]})
    return None


def write_outputs(
    out: Path,
    dataset: Dataset,
    records: Sequence[ImageRecord],
    entries: dict[int, dict[str, Any]],
    made_by: dict[str, Any],
    evaluators: Sequence[Evaluator],
) -> dict[str, Any]:
    """``predictions.json``, ``gt.json`` and ``per_image.json`` from the journal entries, in dataset order.

    Returns:
        The ``metrics.json`` content (without timings): counts and one block per evaluator.
    """
    results: dict[int, Objects] = {}
    sizes: dict[int, tuple[int, int]] = {}
    skipped, no_gt = [], []
    for record in records:
        entry = entries[record.image_id]
        if entry["hw"] is not None:
            sizes[record.image_id] = (entry["hw"][0], entry["hw"][1])
        objects = entry_objects(entry)
        if objects is not None:
            results[record.image_id] = objects
        if dataset.has_gt and record.no_ground_truth:
            no_gt.append(record.file_name)
    # The evaluators see each image at its decoded size, as gt.json says it (AP's masks need it).
    decoded = [replace(r, height=sizes[r.image_id][0], width=sizes[r.image_id][1]) if r.image_id in sizes else r
               for r in records]  # fmt: skip
    blocks, details = score(decoded, results, evaluators)
    mismatch = [
        {"file_name": r.file_name, "decoded": [h, w], "annotated": [r.height, r.width]}
        for r in records
        if r.width and r.height and r.image_id in sizes
        for h, w in [sizes[r.image_id]]
        if (h, w) != (r.height, r.width)
    ]
    per_image = []
    for record in records:
        item: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name}
        if dataset.has_gt and record.no_ground_truth:
            item["no_ground_truth"] = True
        objects = results.get(record.image_id)
        if objects is None:
            reason = entries[record.image_id]["error"]
            skipped.append({**item, "reason": reason})
            item["reason"] = reason
        else:
            seeds = objects.seeds.tolist() if objects.seeds is not None else [None] * len(objects)
            item["objects"] = [
                {"box": box, "score": float(s), "seed": seed}
                for box, s, seed in zip(objects.boxes.tolist(), objects.scores, seeds, strict=True)
            ]
            item.update(details.get(record.image_id, {}))
        per_image.append(item)
    write_json_atomic(out / "predictions.json", coco_results(results))
    write_json_atomic(out / "gt.json", coco_ground_truth(records, sizes, info={"producer": made_by}))
    write_json_atomic(out / "per_image.json", {"producer": made_by, "format": 2, "images": per_image})
    metrics = {
        "producer": made_by,
        "format": 2,
        "dataset": dataset.name,
        "n_images": len(records),
        "image_set": image_set([r.image_id for r in records]),
        "n_images_with_objects": sum(len(o) > 0 for o in results.values()),
        "n_objects": sum(len(o) for o in results.values()),
        "no_ground_truth": len(no_gt) if dataset.has_gt else None,
        "no_ground_truth_images": no_gt,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_excluded": len(dataset.excluded),
        "excluded": dataset.excluded,
        "dataset_warnings": dataset.warnings,
        "size_mismatch": {"n": len(mismatch), "images": mismatch[:20]},
        "metrics": blocks,
    }
    return metrics


def write_pseudo_labels(
    path: Path, records: Sequence[ImageRecord], entries: dict[int, dict[str, Any]], made_by: dict[str, Any]
) -> None:
    """The objects as a COCO instances file to train a detector on (one category ``fg``, RLE masks).

    Raises:
        OSError: the file cannot be written.
    """
    results, sizes = {}, {}
    for record in records:
        entry = entries[record.image_id]
        if entry["hw"] is not None:
            sizes[record.image_id] = (entry["hw"][0], entry["hw"][1])
        objects = entry_objects(entry)
        if objects is not None:
            results[record.image_id] = objects
    write_json_atomic(path, pseudo_labels(records, results, sizes, made_by))


def read_metrics(folder: Path) -> dict[str, Any]:
    """A run's (or ``eval --out`` folder's) ``metrics.json``, in today's shape (blocks under ``metrics``).

    Raises:
        FileNotFoundError: no metrics.json.
        ObjdiscError: not a JSON object.
    """
    data = read_json(Path(folder) / "metrics.json")
    if not isinstance(data, dict):
        raise ObjdiscError(f"{folder}/metrics.json: not an objdisc metrics file (not a JSON object)")
    if "metrics" not in data and "corloc" in data:  # objdisc 0.1: CorLoc at the top level
        block = {
            "values": {"corloc": data.get("corloc")},
            "labels": {"corloc": "CorLoc"},
            "higher_is_better": {"corloc": True},
            "headline": ["corloc"],
            "n_scored": data.get("n_scored"),
            "n_hits": data.get("n_hits"),
            "n_skipped": data.get("n_skipped", data.get("n_missing")),
            "no_ground_truth": data.get("no_ground_truth"),
        }
        data = {**data, "metrics": {"corloc": block} if data.get("corloc") is not None else {}}
    return data


def read_per_image(folder: Path) -> list[dict[str, Any]]:
    """A run's ``per_image.json`` items in today's shape (``objects`` list; evaluator details by name).

    Raises:
        FileNotFoundError: no per_image.json.
        ObjdiscError: the file is not a list of images.
    """
    data = read_json(Path(folder) / "per_image.json")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ObjdiscError(f"{folder}/per_image.json: not an objdisc per-image file (no 'images' list)")
    if data.get("format") == 2:
        return images
    out = []
    for item in images:  # objdisc 0.1: box, seed, iou, hit at the top level
        new = {k: v for k, v in item.items() if k not in ("box", "seed", "iou", "hit")}
        if "box" in item:
            new["objects"] = [{"box": item["box"], "score": 1.0, "seed": item.get("seed")}]
        if "iou" in item:
            new["corloc"] = {"iou": item["iou"], "hit": item.get("hit")}
        out.append(new)
    return out


__all__ = ["entry_objects", "read_metrics", "read_per_image", "write_outputs", "write_pseudo_labels"]
