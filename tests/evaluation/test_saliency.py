"""Saliency metrics against a direct computation (every threshold, every pixel, in loops), on
hand-made and seeded random masks; ground-truth reading; the evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objdisc.datasets.base import ImageRecord
from objdisc.evaluation.saliency import (
    SaliencyError,
    SaliencyEvaluator,
    counts,
    read_mask,
    scores,
)
from objdisc.evaluation.structure import s_measure
from objdisc.objects import Geometry, Objects


def direct(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    """maxFβ / IoU / accuracy written out as the definition reads (module docstring), no counts."""
    thresholds = [k / 255 for k in range(255)]
    f_all, ious, accs = [], [], []
    for p, g in zip(predictions, truths, strict=True):
        f_row = []
        for t in thresholds:
            pred = p > t
            tp = float(np.logical_and(pred, g).sum())
            precision = 1.0 if pred.sum() == 0 else tp / pred.sum()
            recall = 1.0 if g.sum() == 0 else tp / g.sum()
            denominator = 0.3 * precision + recall
            f_row.append(0.0 if denominator == 0 else 1.3 * precision * recall / denominator)
        f_all.append(f_row)
        fg = p > 0.5
        union = np.logical_or(fg, g).sum()
        ious.append(1.0 if union == 0 else np.logical_and(fg, g).sum() / union)
        accs.append(float((fg == g).mean()))
    return {"max_fbeta": max(np.mean(f_all, axis=0)), "iou": float(np.mean(ious)), "accuracy": float(np.mean(accs))}


def test_random_soft_maps_equal_the_direct_computation():
    rng = np.random.default_rng(0)
    truths = [rng.random((9, 13)) > 0.6 for _ in range(4)]
    preds = [np.clip(g * 0.7 + rng.normal(0.15, 0.25, g.shape), -0.2, 1.3) for g in truths]
    preds[1][0, :4] = [0.0, 1 / 255, 0.5, 254 / 255]  # values on thresholds: > is strict
    found = scores([counts(p, g) for p, g in zip(preds, truths, strict=True)])
    expected = direct(preds, truths)
    for name in expected:
        assert found[name] == pytest.approx(expected[name], abs=1e-12), name
    assert found["mae"] == pytest.approx(np.mean([np.mean((p > 0.5) != g) for p, g in zip(preds, truths, strict=True)]))


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        # nothing predicted, something there: precision 1, recall 0 -> F 0; IoU 0. S-measure: object
        # term 0.25 * 0 + 0.75 * 1; the centroid (2, 2) splits off a top-left block where both maps
        # are constant (SSIM 1, weight 1/16), the other blocks score 0: 0.5 * 0.75 + 0.5 / 16
        ("empty", "square", {"max_fbeta": 0.0, "iou": 0.0, "mae": 0.25, "s_measure": 0.40625, "fmax_found": 0.0}),
        # everything predicted: recall 1, precision = share of the square; S: 0.5 * 0.25 + 0.5 / 16
        ("full", "square", {"max_fbeta": 1.3 * 0.25 / (0.3 * 0.25 + 1.0), "iou": 0.25, "accuracy": 0.25,
                            "mae": 0.75, "s_measure": 0.15625,
                            # FOUND squares beta_square again: (1 + 0.09) p r / (0.09 p + r), p = 1/4, r = 1
                            "fmax_found": 1.09 * 0.25 / (0.09 * 0.25 + 1.0)}),
        # both empty: precision 1, recall 1 -> F 1; IoU 1 (they agree; metric.py divides 0 by 0)
        # (FOUND's F of two empty masks is 0 / eps = 0)
        ("empty", "empty", {"max_fbeta": 1.0, "iou": 1.0, "accuracy": 1.0, "mae": 0.0, "s_measure": 1.0,
                            "fmax_found": 0.0}),
        # something predicted, nothing there: precision 0, recall 1 -> F 0; S = 1 - mean(P)
        ("square", "empty", {"max_fbeta": 0.0, "iou": 0.0, "accuracy": 0.75, "mae": 0.25, "s_measure": 0.75,
                             "fmax_found": 0.0}),
        ("square", "square", {"max_fbeta": 1.0, "iou": 1.0, "accuracy": 1.0, "mae": 0.0, "s_measure": 1.0,
                              "fmax_found": 1.0}),
    ],
)
def test_hand_made_masks(prediction: str, truth: str, expected: dict[str, float]):
    masks = {"empty": np.zeros((8, 8)), "full": np.ones((8, 8)), "square": np.zeros((8, 8))}
    masks["square"][:4, :4] = 1.0
    found = scores([counts(masks[prediction], masks[truth] > 0)])
    assert found == pytest.approx({**direct([masks[prediction]], [masks[truth] > 0]), **expected}, abs=1e-6)


def test_a_prediction_of_another_size_is_refused_naming_the_file():
    with pytest.raises(SaliencyError, match=r"gt/a\.png: the prediction is 8x9 pixels, the ground truth 8x8"):
        counts(np.zeros((8, 9)), np.zeros((8, 8), dtype=bool), "gt/a.png")


def test_ground_truth_is_any_non_zero_grey_value(tmp_path: Path):
    grey = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    assert read_mask(tmp_path / "l.png").tolist() == [[False, True, True, True]]
    assert read_mask(tmp_path / "rgb.png").tolist() == [[False, True, True, True]]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SaliencyError, match=r"bad\.png: cannot read the mask"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(SaliencyError, match=r"gone\.png: ground-truth mask not found"):
        read_mask(tmp_path / "gone.png")


def test_the_evaluator_takes_journaled_counts_or_the_objects_masks(tmp_path: Path):
    truth = np.zeros((6, 8), dtype=np.uint8)
    truth[:3, :4] = 255
    Image.fromarray(truth).save(tmp_path / "a.png")
    record = ImageRecord(1, tmp_path / "a.jpg", "a.jpg", mask_path=tmp_path / "a.png")
    grid = np.zeros((1, 3, 4), dtype=bool)
    grid[0, :2, :2] = True  # patches of 2 px: the top-left 4 x 4 pixels
    objects = Objects(
        np.array([[0, 0, 4, 4]]), np.ones(1), np.zeros(1, int), grid, geometry=Geometry(2, (3, 4), (6, 8), (6, 8))
    )
    evaluator = SaliencyEvaluator()
    details = evaluator.process(record, objects)
    prediction = np.zeros((6, 8))
    prediction[:4, :4] = 1.0
    assert details == {
        "iou": round(12 / 16, 6),
        "accuracy": round(44 / 48, 6),
        "mae": round(4 / 48, 6),
        "s_measure": round(s_measure(prediction, truth > 0), 6),
    }
    block = evaluator.evaluate()
    assert block["values"]["iou"] == 75.0 and block["n_scored"] == 1
    journaled = Objects.from_json({**objects.to_json(), "saliency": counts(np.ones((6, 8)), truth > 0)})
    evaluator.reset()
    evaluator.process(record, journaled)  # the counts win over the masks
    assert evaluator.evaluate()["values"]["iou"] == 25.0
    evaluator.reset()
    evaluator.process(record, None)  # no result: an empty map
    assert evaluator.evaluate()["values"]["iou"] == 0.0
    assert SaliencyEvaluator.check(block) is None
    assert "not a percentage" in SaliencyEvaluator.check({**block, "values": {**block["values"], "iou": 170.0}})
    # a journal from before MAE and S-measure: the other metrics, and None for those two
    old = {k: v for k, v in counts(np.ones((6, 8)), truth > 0).items() if k not in ("mae", "s_measure")}
    evaluator.reset()
    evaluator.process(record, Objects.from_json({**objects.to_json(), "saliency": old}))
    values = evaluator.evaluate()["values"]
    assert values["iou"] == 25.0 and values["mae"] is None and values["s_measure"] is None
    assert SaliencyEvaluator.check(evaluator.evaluate()) is None
