from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import coco_run, corloc

from objdisc.evaluation.corloc import CorLoc


def test_corloc_counts_hits_misses_and_skips():
    metric = CorLoc()
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]])
    assert metric.update(1, (0, 0, 10, 10), gt) == pytest.approx(1.0)
    assert metric.update(2, (20, 20, 30, 40), gt) == pytest.approx(0.5)  # exactly 0.5 is a hit
    assert metric.update(3, (0, 0, 10, 4.9), gt) < 0.5
    metric.skip(5)
    result = metric.compute()
    assert (result.n_images, result.n_hits, result.n_skipped, result.n_no_gt) == (4, 2, 1, 0)
    assert result.corloc == pytest.approx(50.0)


def test_images_without_ground_truth_are_left_out_of_the_denominator():
    metric = CorLoc()
    gt = np.array([[0, 0, 10, 10]])
    metric.update(1, (0, 0, 10, 10), gt)
    metric.update(2, (50, 50, 60, 60), gt)
    assert metric.update(3, (0, 0, 10, 10), np.zeros((0, 4))) is None
    metric.skip(4, has_gt=False)
    result = metric.compute()
    assert (result.n_images, result.n_hits, result.n_skipped, result.n_no_gt) == (2, 1, 0, 2)
    assert result.corloc == pytest.approx(50.0)
    metric.update(3, (0, 0, 10, 10), gt)  # scored again, now with an object: counted once, as a hit
    assert (metric.compute().n_images, metric.compute().n_no_gt) == (3, 1)


def test_no_counted_image_gives_no_corloc_rather_than_zero():
    metric = CorLoc()
    metric.update(1, (0, 0, 10, 10), np.zeros((0, 4)))
    assert metric.compute().corloc is None


def test_skip_never_inflates_and_reset_forgets():
    metric = CorLoc()
    metric.update(1, (0, 0, 10, 10), np.array([[0, 0, 10, 10]]))
    metric.skip(2)
    assert metric.compute().corloc == pytest.approx(50.0)
    metric.reset()
    assert metric.compute().n_images == 0 and metric.compute().corloc is None


def test_images_without_ground_truth_are_left_out_and_counted(finished, caplog, weights_file, coco, tmp_path):
    metrics = json.loads((finished["full"] / "metrics.json").read_text())
    per_image = json.loads((finished["full"] / "per_image.json").read_text())["images"]
    block = corloc(metrics)
    assert metrics["n_images"] == 5 and block["n_scored"] == 4 and block["no_ground_truth"] == 1
    assert metrics["no_ground_truth"] == 1 and metrics["no_ground_truth_images"] == ["000000000015.jpg"]
    hits = sum(item.get("corloc", {}).get("hit", False) for item in per_image)
    assert block["values"]["corloc"] == pytest.approx(100 * hits / 4, abs=1e-4) and block["n_hits"] == hits
    last = per_image[-1]
    assert last["no_ground_truth"] is True and len(last["objects"]) == 1 and "corloc" not in last
    # ... and the run says so loudly, before it starts and in its summary.
    images, annotations, _ = coco
    with caplog.at_level(logging.WARNING):
        result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "again")
    assert result.exit_code == 0
    assert "1 of 5 images have no ground-truth box (000000000015.jpg)" in caplog.text
    assert "left out of CorLoc" in caplog.text
    assert f"({hits}/4 hits; 1 without ground truth left out)" in result.output
