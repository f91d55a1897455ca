"""COCO export: results with one entry per object, ground truth with crowd regions, and
pseudo-labels that pycocotools loads, never written over a file objdisc did not make."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from conftest import coco_run, refused, snapshot
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from objdisc.evaluation.coco_export import coco_ground_truth, coco_results, pseudo_labels
from objdisc.objects import Geometry, Objects


def two_objects() -> Objects:
    masks = np.zeros((2, 3, 4), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 2, 3] = True
    return Objects(
        np.array([[0, 0, 20, 20], [30, 20, 40, 28]]), np.array([0.75, 0.5]), np.array([0, 11]), masks,
        geometry=Geometry(10, (3, 4), (28, 40), (28, 40)),
    )  # fmt: skip


def test_results_hold_one_entry_per_object_with_its_score_and_mask():
    entries = coco_results({3: two_objects(), 4: Objects.empty()})
    assert [(e["image_id"], e["bbox"], e["score"]) for e in entries] == [
        (3, [0, 0, 20, 20], 0.75),
        (3, [30, 20, 10, 8], 0.5),
    ]
    rles = [{**e["segmentation"], "counts": e["segmentation"]["counts"].encode()} for e in entries]
    areas = [int(mask_utils.area(rle)) for rle in rles]
    assert areas == [400, 80]  # the patch masks at the image's size, cut to its unpadded 40 x 28 pixels


def test_ground_truth_keeps_crowd_regions_and_segmentations():
    from objdisc.datasets.base import ImageRecord

    instances = (
        {"bbox": [1.0, 2.0, 3.0, 4.0], "area": 12.0, "iscrowd": 0, "segmentation": [[1, 2, 4, 2, 4, 6, 1, 6]]},
        {"bbox": [0.0, 0.0, 9.0, 9.0], "area": 81.0, "iscrowd": 1},
    )
    record = ImageRecord(5, Path("a.jpg"), "a.jpg", np.array([[1, 2, 4, 6]]), 10, 10, None, instances)
    truth = coco_ground_truth([record], {5: (10, 10)})
    assert [(a["iscrowd"], a["category_id"], a["bbox"]) for a in truth["annotations"]] == [
        (0, 1, [1.0, 2.0, 3.0, 4.0]),
        (1, 1, [0.0, 0.0, 9.0, 9.0]),
    ]
    assert truth["annotations"][0]["segmentation"] == [[1, 2, 4, 2, 4, 6, 1, 6]]


def test_pseudo_labels_load_in_pycocotools_as_maskcut_writes_them():
    from objdisc.datasets.base import ImageRecord

    record = ImageRecord(3, Path("x/a.jpg"), "x/a.jpg")
    data = pseudo_labels([record], {3: two_objects()}, {3: (28, 40)}, {"backbone": "dino_vits16"})
    assert data["categories"] == [{"id": 1, "name": "fg", "supercategory": "fg"}]
    assert data["images"] == [{"id": 3, "file_name": "x/a.jpg", "width": 40, "height": 28}]
    assert [(a["id"], a["area"], a["bbox"], a["iscrowd"]) for a in data["annotations"]] == [
        (1, 400.0, [0.0, 0.0, 20.0, 20.0], 0),
        (2, 80.0, [30.0, 20.0, 10.0, 8.0], 0),
    ]


def test_run_writes_pseudo_labels_and_refuses_a_foreign_file(tmp_path: Path, weights_file, coco):
    images, annotations, _ = coco
    target = tmp_path / "labels.json"
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--pseudo-labels", target)
    assert result.exit_code == 0, result.output
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(target))
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert len(loaded.getAnnIds()) == metrics["n_objects"] and len(loaded.getImgIds()) == metrics["n_images"]
    first = loaded.loadAnns(loaded.getAnnIds())[0]
    assert loaded.annToMask(first).sum() == first["area"] > 0
    again = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--pseudo-labels", target)
    assert again.exit_code == 0, again.output  # its own file is rewritten with the run
    mine = tmp_path / "mine.json"
    mine.write_text('{"images": []}')
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "p", "--pseudo-labels", mine)
    refused(result, str(mine), "did not write it")
    assert mine.read_text() == '{"images": []}'


def test_pseudo_labels_onto_the_runs_own_files_are_refused(tmp_path: Path, weights_file, coco):
    images, annotations, _ = coco
    out = tmp_path / "o"
    assert coco_run(weights_file("dinov2_reg"), images, annotations, out).exit_code == 0
    before = snapshot(out)
    for inside in ("predictions.json", "journal/rank0.jsonl", "metrics.json"):
        result = coco_run(weights_file("dinov2_reg"), images, annotations, out, "--pseudo-labels", out / inside)
        refused(result, f"--pseudo-labels {out / inside}", "the run's own files")
    assert snapshot(out) == before
