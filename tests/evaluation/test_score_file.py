"""``objdisc eval``: any COCO results file scored by the run's own evaluators, on exactly the
run's images when asked, written where it never replaces a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import coco_instances, corloc, corloc_value, invoke, make_voc, refused, snapshot

from objdisc.datasets import load_dataset
from objdisc.evaluation.score_file import read_predictions


def write_voc_gt(tmp_path: Path) -> dict:
    """The synthetic VOC set, with its GT boxes by image id (xyxy, LOST's convention)."""
    make_voc(tmp_path)
    return {r.image_id: r.gt_boxes for r in load_dataset("voc07", tmp_path).records}


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _half_iou_box(box: np.ndarray) -> list[float]:
    """A box of twice the GT's width, same height, GT on its left: IoU = 0.5 exactly."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, 2 * (x2 - x1), y2 - y1]


def test_eval_scores_a_hand_written_predictions_file(tmp_path: Path):
    gt = write_voc_gt(tmp_path)
    ids = sorted(gt)
    assert len(ids) == 4
    preds = [
        # image 0: a low-score miss and a high-score exact hit -> hit (the best-scoring box counts)
        {"image_id": ids[0], "bbox": [0, 0, 1, 1], "score": 0.1},
        {"image_id": ids[0], "bbox": _xywh(gt[ids[0]][0]), "score": 0.9},
        # image 1: a high-score miss beats a low-score hit -> miss
        {"image_id": ids[1], "bbox": [0, 0, 1, 1], "score": 0.8},
        {"image_id": ids[1], "bbox": _xywh(gt[ids[1]][0]), "score": 0.2},
        # image 2: a box covering the GT with IoU exactly 0.5 -> hit (threshold is >=)
        {"image_id": ids[2], "bbox": _half_iou_box(gt[ids[2]][0]), "score": 1},
        # image 3: no prediction -> miss; and one prediction for an unknown image
        {"image_id": 999999, "bbox": [0, 0, 5, 5], "score": 1},
    ]
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    args = ["-p", tmp_path / "preds.json", "-d", "voc07", "--data-root", tmp_path]
    result = invoke("eval", *args, "--out", tmp_path / "ev", "--name", "other-tool")
    assert result.exit_code == 0, result.output
    assert "CorLoc     50.00%  (2/4 hits)" in result.output
    assert "4 images: 1 without a prediction, 1 predictions for images not scored" in result.output
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert corloc_value(metrics) == 50.0 and metrics["producer"]["backbone"] == "other-tool"
    assert corloc(metrics)["n_skipped"] == 1 and metrics["n_missing"] == 1 and metrics["n_unknown"] == 1


def test_equal_scores_keep_the_first_box_in_file_order(tmp_path: Path):
    gt = write_voc_gt(tmp_path)
    first = sorted(gt)[0]
    for order, hit in (([[0, 0, 1, 1], _xywh(gt[first][0])], False), ([_xywh(gt[first][0]), [0, 0, 1, 1]], True)):
        preds = [{"image_id": first, "bbox": box, "score": 0.5} for box in order]
        (tmp_path / "p.json").write_text(json.dumps(preds))
        objects = read_predictions(tmp_path / "p.json")[first]
        assert objects.best() == 0 and len(objects) == 2
        result = invoke("eval", "-p", tmp_path / "p.json", "-d", "voc07", "--data-root", tmp_path)
        assert f"({int(hit)}/4 hits)" in result.output


def test_masks_in_a_results_file_are_read_as_rles(tmp_path: Path):
    from objdisc.objects import encode_rles

    mask = np.zeros((1, 6, 8), dtype=bool)
    mask[0, 1:4, 2:5] = True
    rle = encode_rles(mask)[0]
    (tmp_path / "p.json").write_text(
        json.dumps([{"image_id": 3, "bbox": [2, 1, 3, 3], "score": 0.7, "segmentation": rle}])
    )
    objects = read_predictions(tmp_path / "p.json")[3]
    assert objects.boxes.tolist() == [[2.0, 1.0, 5.0, 4.0]] and objects.scores.tolist() == [0.7]
    np.testing.assert_array_equal(objects.pixel_masks(), mask)
    (tmp_path / "q.json").write_text(json.dumps([{"image_id": 3, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1]]}]))
    with pytest.raises(ValueError, match="entry 0: segmentation must be a compressed RLE"):
        read_predictions(tmp_path / "q.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"a": 1}', "expected a list of COCO results"),
        ('[{"image_id": 1}]', "entry 0: needs 'image_id' and 'bbox'"),
        ('[{"image_id": 1, "bbox": [0, 0, 1]}]', "entry 0: bbox must be 4 finite numbers"),
        ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]', "entry 0: score must be a finite number"),
    ],
)
def test_eval_names_the_file_and_entry_of_bad_predictions(tmp_path: Path, content: str, message: str):
    write_voc_gt(tmp_path)
    (tmp_path / "p.json").write_text(content)
    result = invoke("eval", "-p", str(tmp_path / "p.json"), "-d", "voc07", "--data-root", str(tmp_path))
    assert result.exit_code != 0 and message in result.output and "p.json" in result.output


# eval on exactly the run's images.


def test_eval_scores_exactly_the_images_of_a_limit_run(finished, coco):
    images, annotations, _ = coco
    run = finished["limit2"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 2
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]

    plain = invoke("eval", "-p", str(run / "predictions.json"), *data)
    assert plain.exit_code == 0
    assert "scored 2 of the 5 images" in plain.stderr and f"Add --images-of {run}" in plain.stderr
    assert "/4 hits; 1 without ground truth left out)" in plain.stdout
    assert "5 images: 2 without a prediction" in plain.stdout

    ev = run.parent / "ev"
    same = invoke("eval", "-p", str(run / "predictions.json"), *data, "--images-of", str(run), "--out", str(ev))
    assert same.exit_code == 0, same.output
    block = corloc(metrics)
    assert f"CorLoc     {block['values']['corloc']:.2f}%  ({block['n_hits']}/2 hits)" in same.stdout
    assert "2 images: 0 without a prediction" in same.stdout
    scored = json.loads((ev / "metrics.json").read_text())
    assert scored["metrics"] == metrics["metrics"] and scored["image_set"] == metrics["image_set"]
    shutil.rmtree(ev)


def test_eval_images_of_refuses_what_is_not_a_run_of_that_dataset(finished, coco, tmp_path):
    images, annotations, _ = coco
    data_args = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    predictions = str(finished["full"] / "predictions.json")
    refused(
        invoke("eval", "-p", predictions, *data_args, "--images-of", str(tmp_path)),
        str(tmp_path),
        "not a finished objdisc run",
    )
    other = tmp_path / "other.json"
    other.write_text(json.dumps(coco_instances([(11, "000000000011.jpg", (75, 100))], {11: [((1, 1, 5, 5), 0)]})))
    args = ["-d", "coco", "--images", images, "--annotations", other, "--images-of", finished["full"]]
    refused(invoke("eval", "-p", predictions, *args), "--images-of", "a run of coco/instances, not of coco/other")


# eval --out never writes over a run.


def test_eval_out_refuses_a_run_folder_and_leaves_it_whole(finished, coco, tmp_path):
    images, annotations, _ = coco
    run = tmp_path / "run"
    shutil.copytree(finished["full"], run)
    before = snapshot(run)
    args = ["-d", "coco", "--images", str(images), "--annotations", str(annotations)]
    refused(
        invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(run)),
        str(run),
        "holds an objdisc run",
        "folder of its own",
    )
    after = snapshot(run)
    after.pop(".objdisc.lock", None)
    before.pop(".objdisc.lock", None)
    assert after == before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused(invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(mine)), str(mine), "did not write")
    assert (mine / "notes.txt").read_text() == "mine" and not (mine / "metrics.json").exists()

    # An eval folder is eval's own: a second eval replaces it.
    ev = tmp_path / "ev"
    for name in ("a", "b"):
        assert (
            invoke("eval", "-p", str(run / "predictions.json"), *args, "--out", str(ev), "--name", name).exit_code == 0
        )
    assert json.loads((ev / "metrics.json").read_text())["producer"]["backbone"] == "b"
    refused(invoke("visualize", str(ev), "--out", str(tmp_path / "vis-ev")), str(ev), "not a finished objdisc run")


def test_a_ground_truth_file_is_not_scored_as_predictions(finished, coco, tmp_path):
    images, annotations, data = coco
    args = ["-d", "coco", "--images", images, "--annotations", annotations]
    refused(invoke("eval", "-p", finished["full"] / "gt.json", *args), "gt.json", "ground-truth (instances) file")
    refused(invoke("eval", "-p", annotations, *args), str(annotations), "not results")
    (tmp_path / "anns.json").write_text(json.dumps(data["annotations"]))
    refused(invoke("eval", "-p", tmp_path / "anns.json", *args), "ground-truth annotations (id, iscrowd, no score)")
