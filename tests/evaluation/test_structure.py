"""FOUND's S-measure and MAE on hand-made maps with known answers, and the cases FOUND leaves NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from objdisc.evaluation.structure import mae, s_measure


def test_mae_scores_the_map_binarised_at_one_half():
    truth = np.array([[True, True, False, False]])
    assert mae(np.array([[0.9, 0.5, 0.4, 0.51]]), truth) == 0.5  # 0.5 is background; 0.51 is not
    assert mae(truth.astype(float), truth) == 0.0


def test_s_measure_of_perfect_and_inverted_maps():
    truth = np.zeros((10, 12), dtype=bool)
    truth[2:7, 3:9] = True
    assert s_measure(truth.astype(float), truth) == pytest.approx(1.0)
    inverted = s_measure((~truth).astype(float), truth)
    assert 0.0 <= inverted < 0.2
    # a soft map between the two scores between them, and more the closer it is
    rng = np.random.default_rng(0)
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1)
    noisier = np.clip(truth + rng.normal(0, 0.5, truth.shape), 0, 1)
    assert inverted < s_measure(noisier, truth) < s_measure(noisy, truth) < 1.0


def test_the_region_term_by_hand():
    """A 4 x 4 ground truth's two left columns: centroid column round(0.5) = 0 (half to even), row
    round(1.5) = 2: the left blocks are empty (FOUND: NaN; here: weight 0). The prediction is the
    ground truth: object term 1, each right block SSIM 1 (numerator = denominator or both 0)."""
    truth = np.zeros((4, 4), dtype=bool)
    truth[:, :2] = True
    assert s_measure(truth.astype(float), truth) == pytest.approx(1.0)
    one = np.zeros((5, 5), dtype=bool)
    one[2, 2] = True  # one pixel: FOUND's unbiased std is NaN; here 0
    value = s_measure(one.astype(float), one)
    assert math.isfinite(value) and value == pytest.approx(1.0)
