"""Scoring: evaluators (CorLoc, AP / AR, saliency), scoring any results file, COCO export.

:data:`EVALUATORS` maps metric names to evaluator classes (:mod:`objdisc.evaluation.evaluator`),
each keyed by its class's ``name``; ``objdisc run`` and ``objdisc eval`` compute every one that
applies to the dataset. A new metric is one evaluator file plus one entry in the tuple below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from objdisc.errors import OptionError
from objdisc.evaluation.coco_ap import BoxAPEvaluator, MaskAPEvaluator
from objdisc.evaluation.corloc import CorLocEvaluator
from objdisc.evaluation.evaluator import Evaluator
from objdisc.evaluation.saliency import SaliencyEvaluator

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.name: cls for cls in (CorLocEvaluator, BoxAPEvaluator, MaskAPEvaluator, SaliencyEvaluator)
}


def default_evaluators(dataset: Dataset, names: Sequence[str] | None = None) -> list[Evaluator]:
    """Fresh evaluators for ``dataset``: the ones named (``--metrics``), or every registered one
    that applies.

    Raises:
        OptionError: an unknown name, or a named metric the dataset cannot give (mask AP on VOC).
    """
    if names is None:
        made = [cls() for cls in EVALUATORS.values()]
        return [e for e in made if e.applies(dataset)]
    if not names:
        raise OptionError(f"--metrics: empty; name one or more of {', '.join(EVALUATORS)}, or leave it out for all")
    out = []
    for name in dict.fromkeys(names):
        if name not in EVALUATORS:
            raise OptionError(f"--metrics {name}: unknown; known: {', '.join(EVALUATORS)}")
        evaluator = EVALUATORS[name]()
        if not evaluator.applies(dataset):
            raise OptionError(f"--metrics {name}: {dataset.name} has no {evaluator.requirement}")
        out.append(evaluator)
    return out


__all__ = ["EVALUATORS", "Evaluator", "default_evaluators"]
