"""CorLoc: the share of images with an object whose predicted box has IoU >= 0.5 with one of them.

An image without any ground-truth box has no object to localise: it is left out of the
denominator and counted apart (``n_no_gt``), as LOST leaves out VOC images with no object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from objdisc.evaluation.boxes import iou


@dataclass(frozen=True)
class CorLocResult:
    """A computed CorLoc.

    Attributes:
        corloc: percent of counted images that are hits; ``None`` when no image is counted.
        n_images: images counted (the denominator), skipped ones included.
        n_hits: images whose box hits.
        n_skipped: counted images that could not be processed (counted as misses).
        n_no_gt: images left out of the denominator because they have no ground-truth box.
    """

    corloc: float | None
    n_images: int
    n_hits: int
    n_skipped: int
    n_no_gt: int = 0


@dataclass
class CorLoc:
    """Accumulates CorLoc image by image (``update`` / ``skip``, then ``compute``).

    An image without a prediction (unreadable, failed) is a miss, so the score is never
    inflated by dropping hard cases. An image with no ground-truth box is not counted.
    """

    threshold: float = 0.5
    _hits: dict[int, bool] = field(default_factory=dict)
    _skipped: set[int] = field(default_factory=set)
    _no_gt: set[int] = field(default_factory=set)

    def _forget(self, image_id: int) -> None:
        self._hits.pop(image_id, None)
        self._skipped.discard(image_id)
        self._no_gt.discard(image_id)

    def update(self, image_id: int, box: Sequence[float], gt_boxes: np.ndarray) -> float | None:
        """Score one prediction.

        Args:
            image_id: the image; scoring it twice replaces the first result.
            box: predicted ``(x1, y1, x2, y2)`` pixels.
            gt_boxes: ``(M, 4)`` ground-truth ``(x1, y1, x2, y2)`` pixels.

        Returns:
            The best IoU with any ground-truth box; ``None`` when there is none (the image is
            then left out of CorLoc).
        """
        self._forget(image_id)
        if len(gt_boxes) == 0:
            self._no_gt.add(image_id)
            return None
        best = float(iou(box, gt_boxes).max())
        self._hits[image_id] = best >= self.threshold
        return best

    def skip(self, image_id: int, has_gt: bool = True) -> None:
        """An image that produced no box: a miss, or left out when it has no ground truth."""
        self._forget(image_id)
        if has_gt:
            self._hits[image_id] = False
            self._skipped.add(image_id)
        else:
            self._no_gt.add(image_id)

    def compute(self) -> CorLocResult:
        """The score over every image seen so far."""
        n = len(self._hits)
        hits = sum(self._hits.values())
        return CorLocResult(100.0 * hits / n if n else None, n, hits, len(self._skipped), len(self._no_gt))

    def reset(self) -> None:
        """Forget every image."""
        self._hits.clear()
        self._skipped.clear()
        self._no_gt.clear()


def image_set(image_ids: Sequence[int]) -> dict[str, int | str]:
    """Which images a score is over: ``{"n", "sha256"}`` of the sorted unique ids.

    Two scores of one dataset are comparable only when their image sets are equal
    (``objdisc table`` checks it); the digest does not depend on the order.
    """
    ids = sorted(set(int(i) for i in image_ids))
    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    return {"n": len(ids), "sha256": digest}
