"""Scoring: box conventions, evaluators (CorLoc, AP / AR, saliency), scoring any results file, COCO export.

:data:`EVALUATORS` maps metric names to evaluator classes (:mod:`objdisc.evaluation.evaluator`);
``objdisc run`` and ``objdisc eval`` compute every one that applies to the dataset.
"""

from __future__ import annotations

from objdisc.evaluation.coco_ap import BoxAPEvaluator, MaskAPEvaluator
from objdisc.evaluation.corloc import CorLocEvaluator
from objdisc.evaluation.saliency import SaliencyEvaluator

EVALUATORS: dict[str, type] = {
    "corloc": CorLocEvaluator,
    "ap": BoxAPEvaluator,
    "mask_ap": MaskAPEvaluator,
    "saliency": SaliencyEvaluator,
}

__all__ = ["EVALUATORS"]
