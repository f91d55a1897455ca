"""Evaluators in detectron2's shape: ``reset``, ``process(record, objects)``, ``evaluate() -> dict``.

``objdisc run`` (from its journal) and ``objdisc eval`` (from any COCO results file) score
through the same :func:`score` loop, so a number means the same thing wherever it was made.
``evaluate()`` returns one *metric block*, written under ``metrics.json`` ``metrics[<name>]``::

    {"values": {"corloc": 45.8},             # the numbers a table shows
     "labels": {"corloc": "CorLoc"},          # their column names
     "higher_is_better": {"corloc": true},
     "headline": ["corloc"],                  # shown by default
     ...}                                     # the evaluator's own counts (n_hits, n_scored, ...)

``objdisc table`` and ``objdisc sweep`` read metric names, labels and directions from these
blocks, never from a hard-coded name, and ask the evaluator registered under the block's name
to :meth:`Evaluator.check` that its numbers agree with its counts. A new metric is one file
(an evaluator) plus one entry in :data:`EVALUATORS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset, ImageRecord
    from objdisc.objects import Objects


class Evaluator:
    """Accumulates a metric image by image (a new metric derives from this class).

    Class attributes a metric sets:
        name: registry name and ``metrics.json`` key (``corloc``).
        requirement: what the dataset must have, for the message when it lacks it.
        live: cheap enough to run on each image as it finishes, for the progress bar (CorLoc);
            the others run once, from the journal, at the end.
    """

    name: ClassVar[str]
    requirement: ClassVar[str] = "ground truth"
    live: ClassVar[bool] = False

    def applies(self, dataset: Dataset) -> bool:
        """Whether the dataset has what this metric needs (e.g. ground-truth boxes)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every image."""
        raise NotImplementedError

    def process(self, record: ImageRecord, objects: Objects | None) -> dict[str, Any] | None:
        """Score one image (``objects`` is ``None`` when it produced no result: a miss).

        Returns:
            JSON-able per-image details for ``per_image.json`` (e.g. IoU and hit), or ``None``.
        """
        raise NotImplementedError

    def progress(self) -> str:
        """A few words for a progress bar (``hits 3/4``)."""
        return ""

    def evaluate(self) -> dict[str, Any]:
        """The metric block (module docstring)."""
        raise NotImplementedError

    @classmethod
    def summary_line(cls, block: Mapping[str, Any]) -> str:
        """One line for ``objdisc run``'s summary (by default the block's headline values)."""
        values = block.get("values") or {}
        labels = block.get("labels") or {}
        shown = block.get("headline") or list(values)
        parts = [f"{labels.get(k, k)} {values[k]:.2f}" if values.get(k) is not None else f"{labels.get(k, k)} --"
                 for k in shown]  # fmt: skip
        return f"{cls.name:<10} " + " · ".join(parts)

    @staticmethod
    def check(block: Mapping[str, Any]) -> str | None:
        """Why a block (read back from a file) cannot be trusted, or ``None``."""
        return None


def score(
    records: Sequence[ImageRecord], results: Mapping[int, Objects | None], evaluators: Sequence[Evaluator]
) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Run every evaluator over the records, in order.

    Args:
        records: the images scored, in dataset order.
        results: objects per image id; a missing id or ``None`` is an image without result.
        evaluators: what to compute (each is reset first).

    Returns:
        ``({evaluator name: metric block}, {image id: {evaluator name: per-image details}})``.
    """
    for evaluator in evaluators:
        evaluator.reset()
    details: dict[int, dict[str, Any]] = {}
    for record in records:
        objects = results.get(record.image_id)
        for evaluator in evaluators:
            item = evaluator.process(record, objects)
            if item is not None:
                details.setdefault(record.image_id, {})[evaluator.name] = item
    return {e.name: e.evaluate() for e in evaluators}, details


def block_values(block: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metric block (``None`` values left out)."""
    values = block.get("values") or {}
    return {k: float(v) for k, v in values.items() if v is not None}


__all__ = ["Evaluator", "block_values", "score"]
