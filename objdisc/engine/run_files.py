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

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.errors import ObjdiscError
from objdisc.evaluation.coco_export import (
    CATEGORY,
    FOREGROUND,
    image_entry,
    image_results,
    pseudo_label_annotations,
    pseudo_labels_head,
    record_annotations,
)
from objdisc.evaluation.corloc import image_set
from objdisc.evaluation.evaluator import Evaluator
from objdisc.objects import Objects
from objdisc.utils.jsonio import AtomicWriter, JsonList, read_json

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
    entries: Mapping[int, dict[str, Any]],
    made_by: dict[str, Any],
    evaluators: Sequence[Evaluator],
) -> dict[str, Any]:
    """``predictions.json``, ``gt.json`` and ``per_image.json`` from the journal entries, in dataset order.

    One pass over the records: each entry is read (from disk, :class:`~objdisc.engine.journal.JournalEntries`),
    scored by the evaluators and written to the three files as it comes, so memory does not grow
    with the objects' size; each file is written to a temp file and renamed when complete.

    Returns:
        The ``metrics.json`` content (without timings): counts and one block per evaluator.
    """
    for evaluator in evaluators:
        evaluator.reset()
    skipped, no_gt, mismatch = [], [], []
    n_mismatch = n_with_objects = n_objects = n_annotations = 0
    with (
        AtomicWriter(out / "predictions.json") as predictions_file,
        AtomicWriter(out / "gt.json") as gt_file,
        AtomicWriter(out / "per_image.json") as per_image_file,
        tempfile.TemporaryFile("w+", dir=out, prefix=".gt-annotations.") as gt_spool,
    ):
        predictions = JsonList(predictions_file)
        gt_file.write('{"info": ' + json.dumps({"producer": made_by}) + ', "images": ')
        gt_images, gt_annotations = JsonList(gt_file), JsonList(gt_spool)
        per_image_file.write('{"producer": ' + json.dumps(made_by) + ', "format": 2, "images": ')
        per_image = JsonList(per_image_file)
        for record in records:
            entry = entries[record.image_id]
            size = (entry["hw"][0], entry["hw"][1]) if entry["hw"] is not None else None
            objects = entry_objects(entry)
            # The evaluators see each image at its decoded size, as gt.json says it (AP's masks need it).
            decoded = replace(record, height=size[0], width=size[1]) if size is not None else record
            details = {}
            for evaluator in evaluators:
                detail = evaluator.process(decoded, objects)
                if detail is not None:
                    details[evaluator.name] = detail
            if objects is not None:
                n_with_objects += len(objects) > 0
                n_objects += len(objects)
                for result in image_results(record.image_id, objects):
                    predictions.add(result)
            gt_images.add(image_entry(record, size))
            for annotation in record_annotations(record, n_annotations + 1):
                gt_annotations.add(annotation)
                n_annotations += 1
            item: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name}
            if dataset.has_gt and record.no_ground_truth:
                item["no_ground_truth"] = True
                no_gt.append(record.file_name)
            if objects is None:
                skipped.append({**item, "reason": entry["error"]})
                item["reason"] = entry["error"]
            else:
                seeds = objects.seeds.tolist() if objects.seeds is not None else [None] * len(objects)
                item["objects"] = [
                    {"box": box, "score": float(s), "seed": seed}
                    for box, s, seed in zip(objects.boxes.tolist(), objects.scores, seeds, strict=True)
                ]
                item.update(details)
            per_image.add(item)
            if size is not None and record.width and record.height and size != (record.height, record.width):
                n_mismatch += 1
                if len(mismatch) < 20:
                    annotated = [record.height, record.width]
                    mismatch.append({"file_name": record.file_name, "decoded": list(size), "annotated": annotated})
        predictions.close()
        gt_images.close()
        gt_annotations.close()
        gt_file.write(', "annotations": ')
        gt_file.copy_from(gt_spool)
        gt_file.write(', "categories": ' + json.dumps([CATEGORY]) + "}")
        per_image.close()
        per_image_file.write("}")
    blocks = {e.name: e.evaluate() for e in evaluators}
    return {
        "producer": made_by,
        "format": 2,
        "dataset": dataset.name,
        "n_images": len(records),
        "image_set": image_set([r.image_id for r in records]),
        "n_images_with_objects": n_with_objects,
        "n_objects": n_objects,
        "no_ground_truth": len(no_gt) if dataset.has_gt else None,
        "no_ground_truth_images": no_gt,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_excluded": len(dataset.excluded),
        "excluded": dataset.excluded,
        "dataset_warnings": dataset.warnings,
        "size_mismatch": {"n": n_mismatch, "images": mismatch},
        "metrics": blocks,
    }


def write_pseudo_labels(
    path: Path, records: Sequence[ImageRecord], entries: Mapping[int, dict[str, Any]], made_by: dict[str, Any]
) -> None:
    """The objects as a COCO instances file to train a detector on (one category ``fg``, RLE masks;
    :func:`~objdisc.evaluation.coco_export.pseudo_labels`), streamed from the journal entries.

    Raises:
        OSError: the file cannot be written.
    """
    n_annotations = 0
    with (
        AtomicWriter(path) as pseudo,
        tempfile.TemporaryFile("w+", dir=Path(path).parent, prefix=".pseudo-annotations.") as spool,
    ):
        head = json.dumps(pseudo_labels_head(made_by))
        pseudo.write(head[:-1] + ', "images": ')  # the head's keys, then the lists
        images, annotations = JsonList(pseudo), JsonList(spool)
        for record in records:
            entry = entries[record.image_id]
            objects = entry_objects(entry)
            if objects is None or entry["hw"] is None:
                continue
            size = (entry["hw"][0], entry["hw"][1])
            images.add(image_entry(record, size))
            for annotation in pseudo_label_annotations(record.image_id, objects, size, n_annotations + 1):
                annotations.add(annotation)
                n_annotations += 1
        images.close()
        annotations.close()
        pseudo.write(', "annotations": ')
        pseudo.copy_from(spool)
        pseudo.write(', "categories": ' + json.dumps([FOREGROUND]) + "}")


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
