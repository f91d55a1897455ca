"""CorLoc: the share of images with an object whose predicted box has IoU >= 0.5 with one of them.

The predicted box of an image is its highest-scoring object's (the first on equal scores: the
one object of LOST, TokenCut and DINO-seg). An image without any ground-truth box has no object
to localise: it is left out of the denominator and counted apart (``no_ground_truth``), as LOST
leaves out VOC images with no object. An image without a result (unreadable, failed, no
prediction in a results file, no object found) is a miss, so the score is never inflated by
dropping hard cases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from objdisc.evaluation.evaluator import Evaluator
from objdisc.geometry import iou

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset, ImageRecord
    from objdisc.objects import Objects


@dataclass(frozen=True)
class CorLocResult:
    """A computed CorLoc.

    Attributes:
        corloc: percent of counted images that are hits; ``None`` when no image is counted.
        n_images: images counted (the denominator), those without a result included.
        n_hits: images whose box hits.
        n_skipped: counted images without a result (counted as misses).
        n_no_gt: images left out of the denominator because they have no ground-truth box.
    """

    corloc: float | None
    n_images: int
    n_hits: int
    n_skipped: int
    n_no_gt: int = 0


@dataclass
class CorLoc:
    """Accumulates CorLoc from boxes, image by image (``update`` / ``skip``, then ``compute``)."""

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


class CorLocEvaluator(Evaluator):
    """CorLoc as an evaluator (:mod:`objdisc.evaluation.evaluator`): ``metrics.json`` ``metrics.corloc``.

    Block: ``values.corloc`` (percent, 4 decimals; ``None`` when no image has ground truth),
    ``n_scored`` (the denominator), ``n_hits``, ``n_skipped`` (counted images without a
    result), ``no_ground_truth`` (images left out), ``threshold``.
    """

    name: ClassVar[str] = "corloc"
    requirement: ClassVar[str] = "ground-truth boxes"
    live: ClassVar[bool] = True  # per image as it finishes: the progress bar's hits

    def __init__(self, threshold: float = 0.5) -> None:
        self.metric = CorLoc(threshold)

    def applies(self, dataset: Dataset) -> bool:
        return dataset.has_gt

    def reset(self) -> None:
        self.metric.reset()

    def process(self, record: ImageRecord, objects: Objects | None) -> dict[str, Any] | None:
        best = objects.best() if objects is not None else None
        if best is None or record.gt_boxes is None:
            self.metric.skip(record.image_id, has_gt=not record.no_ground_truth)
            return None
        found = self.metric.update(record.image_id, objects.boxes[best].tolist(), record.gt_boxes)  # type: ignore[union-attr]
        return None if found is None else {"iou": round(found, 6), "hit": found >= self.metric.threshold}

    def progress(self) -> str:
        score = self.metric.compute()
        return f"hits {score.n_hits}/{score.n_images}"

    def evaluate(self) -> dict[str, Any]:
        score = self.metric.compute()
        return {
            "values": {"corloc": round(score.corloc, 4) if score.corloc is not None else None},
            "labels": {"corloc": "CorLoc"},
            "higher_is_better": {"corloc": True},
            "headline": ["corloc"],
            "n_scored": score.n_images,
            "n_hits": score.n_hits,
            "n_skipped": score.n_skipped,
            "no_ground_truth": score.n_no_gt,
            "threshold": self.metric.threshold,
        }

    @staticmethod
    def summary_line(block: Mapping[str, Any]) -> str:
        """One line of ``objdisc run``'s summary."""
        value = (block.get("values") or {}).get("corloc")
        left_out = block.get("no_ground_truth") or 0
        if value is None:
            return f"CorLoc     none: no image has a ground-truth box ({left_out} images)"
        note = f"; {left_out} without ground truth left out" if left_out else ""
        return f"CorLoc     {value:.2f}%  ({block['n_hits']}/{block['n_scored']} hits{note})"

    @staticmethod
    def check(block: Mapping[str, Any]) -> str | None:
        """CorLoc must be ``100 * n_hits / n_scored`` (to the 4 decimals written), counts whole numbers."""
        value = (block.get("values") or {}).get("corloc")
        hits, scored = block.get("n_hits"), block.get("n_scored")
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"CorLoc {value!r} is not a number"
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (hits, scored)):
            return f"CorLoc {value} comes without whole n_hits / n_scored counts ({hits!r} / {scored!r})"
        if hits > scored or scored == 0:  # type: ignore[operator]
            return f"n_hits {hits} / n_scored {scored} is no score"
        if abs(value - round(100.0 * hits / scored, 4)) > 1e-6:  # type: ignore[operator]
            return f"CorLoc {value} disagrees with its own counts ({hits}/{scored} = {100.0 * hits / scored:.4f}%)"  # type: ignore[operator]
        return None


def image_set(image_ids: Sequence[int]) -> dict[str, int | str]:
    """Which images a score is over: ``{"n", "sha256"}`` of the sorted unique ids.

    Two scores of one dataset are comparable only when their image sets are equal
    (``objdisc table`` checks it); the digest does not depend on the order.
    """
    ids = sorted(set(int(i) for i in image_ids))
    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    return {"n": len(ids), "sha256": digest}


__all__ = ["CorLoc", "CorLocEvaluator", "CorLocResult", "image_set"]
