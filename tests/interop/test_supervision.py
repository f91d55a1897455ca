"""Objects to supervision.Detections and back: boxes, masks and scores kept exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from conftest import folder_run

from objdisc.errors import OptionError
from objdisc.interop.supervision import from_detections, objects_of_run, to_detections
from objdisc.objects import Geometry, Objects, encode_rles


def objects_with_masks() -> Objects:
    rng = np.random.default_rng(0)
    masks = rng.random((3, 20, 30)) > 0.6
    boxes = np.array([[0, 1, 10, 12], [5, 5, 30, 20], [2, 3, 4, 5]], dtype=np.int64)
    return Objects(boxes, np.array([0.9, 1 / 3, 0.5]), np.array([4, -1, 17]), segmentation=encode_rles(masks))


def test_a_round_trip_keeps_boxes_masks_scores_and_seeds_exactly():
    objects = objects_with_masks()
    detections = to_detections(objects)
    assert isinstance(detections, sv.Detections) and len(detections) == 3
    assert detections.mask.shape == (3, 20, 30) and detections.class_id.tolist() == [0, 0, 0]
    back = from_detections(detections)
    assert np.array_equal(back.boxes, objects.boxes) and back.boxes.dtype == np.int64
    assert np.array_equal(back.scores, objects.scores)
    assert np.array_equal(back.pixel_masks(), objects.pixel_masks())
    assert back.seeds.tolist() == [4, -1, 17]


def test_grid_masks_become_pixel_masks_and_empty_objects_work():
    masks = np.zeros((1, 2, 3), dtype=bool)
    masks[0, 1, 2] = True
    geometry = Geometry(patch_size=4, grid_hw=(2, 3), model_hw=(8, 12), image_hw=(8, 12))
    objects = Objects(np.array([[8, 4, 12, 8]]), np.ones(1), np.array([5]), masks, geometry=geometry)
    detections = to_detections(objects)
    assert detections.mask[0].sum() == 16 and detections.mask[0, 4:, 8:].all()
    assert len(to_detections(Objects.empty())) == 0 and len(from_detections(sv.Detections.empty())) == 0


def test_fractional_boxes_are_refused_unless_rounded():
    detections = sv.Detections(xyxy=np.array([[0.4, 1.6, 10.0, 12.5]]), confidence=np.array([0.5]))
    with pytest.raises(OptionError, match="not whole pixels"):
        from_detections(detections)
    assert from_detections(detections, round_boxes=True).boxes.tolist() == [[0, 2, 10, 12]]
    no_confidence = from_detections(sv.Detections(xyxy=np.array([[0.0, 0.0, 2.0, 2.0]])))
    assert no_confidence.scores.tolist() == [1.0] and no_confidence.segmentation is None


def test_a_runs_objects_hand_over(tmp_path: Path, weights_file, two_images):
    out = tmp_path / "o"
    assert folder_run(weights_file("dinov2_reg"), two_images, out).exit_code == 0
    per_image = json.loads((out / "per_image.json").read_text())["images"]
    first = per_image[0]
    objects = objects_of_run(out, first["file_name"])
    assert objects.boxes.tolist() == [o["box"] for o in first["objects"]]
    detections = to_detections(objects)
    assert detections.xyxy.tolist() == [[float(v) for v in o["box"]] for o in first["objects"]]
