"""CorLoc: the share of images whose predicted box has IoU >= 0.5 with any ground-truth box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from objdisc.boxes import iou


@dataclass(frozen=True)
class CorLocResult:
    """A computed CorLoc.

    Attributes:
        corloc: percent of counted images that are hits (0 when none are counted).
        n_images: images counted, skipped ones included.
        n_hits: images whose box hits.
        n_skipped: images that could not be processed (counted as misses).
    """

    corloc: float
    n_images: int
    n_hits: int
    n_skipped: int


@dataclass
class CorLoc:
    """Accumulates CorLoc image by image (``update`` / ``skip``, then ``compute``).

    An image without a prediction (unreadable, failed) is a miss, so the score is never
    inflated by dropping hard cases. An image with no ground-truth box is a miss too.
    """

    threshold: float = 0.5
    _hits: dict[int, bool] = field(default_factory=dict)
    _skipped: set[int] = field(default_factory=set)

    def update(self, image_id: int, box: Sequence[float], gt_boxes: np.ndarray) -> float:
        """Score one prediction.

        Args:
            image_id: the image; scoring it twice replaces the first result.
            box: predicted ``(x1, y1, x2, y2)`` pixels.
            gt_boxes: ``(M, 4)`` ground-truth ``(x1, y1, x2, y2)`` pixels.

        Returns:
            The best IoU with any ground-truth box (0 when there is none).
        """
        ious = iou(box, gt_boxes)
        best = float(ious.max()) if len(ious) else 0.0
        self._hits[image_id] = best >= self.threshold
        self._skipped.discard(image_id)
        return best

    def skip(self, image_id: int) -> None:
        """Count an image that produced no box as a miss."""
        self._hits[image_id] = False
        self._skipped.add(image_id)

    def compute(self) -> CorLocResult:
        """The score over every image seen so far."""
        n = len(self._hits)
        hits = sum(self._hits.values())
        return CorLocResult(100.0 * hits / n if n else 0.0, n, hits, len(self._skipped))

    def reset(self) -> None:
        """Forget every image."""
        self._hits.clear()
        self._skipped.clear()
