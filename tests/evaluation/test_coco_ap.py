"""Class-agnostic AP / AR through COCOeval: known answers on hand-made boxes, crowd regions
ignored, and pycocotools on the run's own exported files giving metrics.json's numbers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import coco_run, invoke, make_coco, refused
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from objdisc.datasets import load_dataset
from objdisc.evaluation.coco_ap import BoxAPEvaluator, MaskAPEvaluator, coco_eval
from objdisc.objects import Objects


def gt(*boxes: tuple, crowd: tuple = ()) -> tuple[list, list]:
    images = [{"id": 1, "width": 100, "height": 100}]
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
        for i, b in enumerate(boxes)
    ]
    annotations += [
        {"id": 100 + i, "image_id": 1, "category_id": 1, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 1}
        for i, b in enumerate(crowd)
    ]
    return images, annotations


def det(box: tuple, score: float) -> dict:
    return {"image_id": 1, "category_id": 1, "bbox": list(box), "score": score}


def test_known_answers():
    images, annotations = gt((10, 10, 30, 30), (60, 60, 20, 20))
    perfect = coco_eval(images, annotations, [det((10, 10, 30, 30), 0.9), det((60, 60, 20, 20), 0.8)], "bbox")
    assert perfect["AP"] == perfect["AP50"] == perfect["AR100"] == 100.0 and perfect["AR1"] == 50.0
    half = coco_eval(images, annotations, [det((10, 10, 30, 30), 0.9), det((0, 70, 5, 5), 0.95)], "bbox")
    assert half["AR100"] == 50.0 and 0 < half["AP50"] < 50.0  # the false positive ranks first
    assert coco_eval(images, annotations, [], "bbox")["AP"] == 0.0


def test_a_detection_on_a_crowd_region_is_neither_hit_nor_miss():
    images, annotations = gt((10, 10, 30, 30), crowd=((50, 50, 50, 50),))
    alone = coco_eval(images, annotations, [det((10, 10, 30, 30), 0.9)], "bbox")
    with_crowd = coco_eval(images, annotations, [det((10, 10, 30, 30), 0.9), det((55, 55, 40, 40), 0.95)], "bbox")
    for name in ("AP", "AP50", "AP75", "AR10", "AR100"):  # (AR@1 counts the crowd match as the one detection)
        assert alone[name] == with_crowd[name], name
    assert alone["AP50"] == 100.0


def coco_with_masks(folder: Path) -> tuple[Path, Path, dict]:
    """The synthetic COCO set with a rectangle polygon as each object's segmentation."""
    images, annotations, data = make_coco(folder, [21, 22, 23])
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    annotations.write_text(json.dumps(data))
    return images, annotations, data


def official(gt_file: Path, predictions: Path, iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(gt_file))
        found = truth.loadRes(str(predictions))
        evaluation = COCOeval(truth, found, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [round(100 * float(v), 4) for v in evaluation.stats[[0, 1, 2, 6, 7, 8]]]


@pytest.mark.parametrize("method", ["lost", "maskcut", "promerge"])
def test_cocoeval_on_the_exported_files_gives_metrics_json(tmp_path: Path, weights_file, method: str):
    images, annotations, _ = coco_with_masks(tmp_path)
    extra = ["--method", method, *(["--fixed-size", "112"] if method != "lost" else [])]
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", *extra)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"corloc", "ap", "mask_ap"}
    names = ["AP", "AP50", "AP75", "AR1", "AR10", "AR100"]
    for block, iou_type, prefix in (("ap", "bbox", "box_"), ("mask_ap", "segm", "mask_")):
        values = metrics["metrics"][block]["values"]
        expected = official(tmp_path / "o" / "gt.json", tmp_path / "o" / "predictions.json", iou_type)
        assert [values[prefix + n] for n in names] == expected, block
    crowd = [a for a in json.loads((tmp_path / "o" / "gt.json").read_text())["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1  # the crowd region is kept, for COCOeval to ignore
    # objdisc eval of the same predictions gives the same blocks
    scored = invoke("eval", "-p", tmp_path / "o/predictions.json", "-d", "coco", "--images", images,
                    "--annotations", annotations, "--out", tmp_path / "ev")  # fmt: skip
    assert scored.exit_code == 0, scored.output
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert again["ap"]["values"] == metrics["metrics"]["ap"]["values"]
    assert again["mask_ap"]["values"] == metrics["metrics"]["mask_ap"]["values"]


def test_mask_ap_needs_masks_on_both_sides(tmp_path: Path, weights_file):
    images, annotations, _ = make_coco(tmp_path, [31, 32])  # boxes only: no mask AP
    dataset = load_dataset("coco", images=images, annotations=annotations)
    assert not dataset.has_masks and not MaskAPEvaluator().applies(dataset) and BoxAPEvaluator().applies(dataset)
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--metrics", "mask_ap")
    refused(result, "--metrics mask_ap", "has no ground-truth masks")
    masked_images, masked, _ = coco_with_masks(tmp_path / "m")
    (tmp_path / "boxes.json").write_text(json.dumps([{"image_id": 21, "bbox": [1, 1, 20, 20], "score": 1.0}]))
    result = invoke("eval", "-p", tmp_path / "boxes.json", "-d", "coco", "--images", masked_images,
                    "--annotations", masked, "--out", tmp_path / "ev")  # fmt: skip
    assert result.exit_code == 0, result.output  # boxes only: scored by box metrics, no mask AP block
    assert set(json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]) == {"corloc", "ap"}
    result = invoke("eval", "-p", tmp_path / "boxes.json", "-d", "coco", "--images", masked_images,
                    "--annotations", masked, "--metrics", "mask_ap", "--out", tmp_path / "ev2")  # fmt: skip
    refused(result, str(tmp_path / "boxes.json"), "no prediction has a segmentation", "--metrics ap")
    from objdisc.objects import Geometry

    evaluator = MaskAPEvaluator()  # some detections with a mask, some without: no number from boxes
    records = load_dataset("coco", images=masked_images, annotations=masked).records[:2]
    for record, masks in zip(records, (True, False), strict=True):
        hw = (record.height, record.width)
        where = Geometry(max(hw), (1, 1), hw, hw)  # one patch covering the image
        grid = np.ones((1, 1, 1), dtype=bool) if masks else None
        evaluator.process(record, Objects(np.array([[0, 0, 8, 8]]), np.ones(1), np.zeros(1, int), grid, geometry=where))
    block = evaluator.evaluate()
    assert all(v is None for v in block["values"].values()) and "carry no mask" in block["reason"]


def test_an_empty_metric_list_is_refused(tmp_path: Path, weights_file):
    images, annotations, _ = make_coco(tmp_path, [31, 32])
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--metrics", "")
    refused(result, "--metrics: empty", "corloc, ap, mask_ap")
    assert not (tmp_path / "o" / "journal").exists()


def test_objects_become_results_with_their_scores_and_masks():
    from objdisc.evaluation.coco_ap import detections
    from objdisc.objects import Geometry

    masks = np.zeros((2, 2, 3), dtype=bool)
    masks[0, 0, 0] = masks[1, 1, 2] = True
    objects = Objects(
        np.array([[0, 0, 10, 10], [20, 10, 30, 20]]), np.array([0.5, 0.25]), np.array([0, 5]), masks,
        geometry=Geometry(10, (2, 3), (20, 30), (20, 30)),
    )  # fmt: skip
    out = detections(7, objects, with_masks=True)
    assert [d["bbox"] for d in out] == [[0.0, 0.0, 10.0, 10.0], [20.0, 10.0, 10.0, 10.0]]
    assert [d["score"] for d in out] == [0.5, 0.25] and all(d["image_id"] == 7 for d in out)
    from pycocotools import mask as mask_utils

    decoded = [mask_utils.decode({**d["segmentation"], "counts": d["segmentation"]["counts"].encode()}) for d in out]
    assert [int(m.sum()) for m in decoded] == [100, 100]
