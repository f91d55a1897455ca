from __future__ import annotations

import numpy as np
import pytest

from objdisc.geometry import iou, xywh_to_xyxy, xyxy_to_xywh


@pytest.mark.parametrize(
    ("box", "others", "expected"),
    [
        ((0, 0, 10, 10), [[0, 0, 10, 10]], [1.0]),
        ((0, 0, 10, 10), [[5, 0, 15, 10]], [50 / 150]),
        ((0, 0, 10, 10), [[10, 10, 20, 20]], [0.0]),  # touching corners: no overlap
        ((0, 0, 10, 10), [[2, 2, 4, 4], [0, 0, 20, 10]], [4 / 100, 0.5]),
        ((0, 0, 0, 0), [[0, 0, 0, 0]], [0.0]),  # empty union
        ((0, 0, 10, 10), np.zeros((0, 4)), []),
    ],
)
def test_iou(box, others, expected):
    np.testing.assert_allclose(iou(box, np.asarray(others)), expected)


def test_xywh_round_trip():
    assert xyxy_to_xywh((3, 4, 10, 20)) == [3, 4, 7, 16]
    assert xywh_to_xyxy([3, 4, 7, 16]) == [3, 4, 10, 20]
