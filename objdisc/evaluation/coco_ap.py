"""Class-agnostic detection metrics through pycocotools' COCOeval: box AP / AR and mask AP / AR.

Every ground-truth object counts as one class, as CutLER's class-agnostic files do: the dataset's
instances (:attr:`objdisc.datasets.base.ImageRecord.instances`) with their category replaced by
1, crowd regions kept with ``iscrowd`` (COCOeval ignores detections matched to them; VOC's
difficult objects are marked so too). The detections are the objects of every image with
their scores, read through ``COCO.loadRes`` as any COCO results file is; the numbers are
COCOeval's own (``evaluate``, ``accumulate``, ``summarize``, 100 detections per image at most),
in percent. ``objdisc run`` writes the same ground truth to ``gt.json`` and the same detections
to ``predictions.json``, so COCOeval on those files gives the numbers of ``metrics.json``.

AP ranks all detections by score: for the one-object methods (score 1) the ranking among images
is COCOeval's stable order, for MaskCut its ``1 - lambda`` (:mod:`objdisc.methods.maskcut`).
A run without any detection scores 0 everywhere; COCOeval's -1 (no ground truth at all) is
written as ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from objdisc.evaluation.coco_export import CATEGORY, ground_truth_annotations, image_results
from objdisc.evaluation.evaluator import Evaluator

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset, ImageRecord
    from objdisc.objects import Objects

logger = logging.getLogger(__name__)

# COCOeval's stats, in its order, and the ones shown by default.
_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_SHOWN = ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")
CATEGORY_ID = CATEGORY["id"]


def detections(image_id: int, objects: Objects, with_masks: bool) -> list[dict[str, Any]]:
    """One image's objects as the COCO results ``predictions.json`` holds
    (:func:`~objdisc.evaluation.coco_export.image_results`), the box in float pixels."""
    out = image_results(image_id, objects, with_masks)
    for det in out:
        det["bbox"] = [float(v) for v in det["bbox"]]
    return out


def coco_eval(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    results: list[dict[str, Any]],
    iou_type: str,
) -> dict[str, float | None]:
    """COCOeval's 12 numbers (percent; ``None`` where it says -1) for one IoU type.

    Args:
        images: ``{"id", "width", "height"}`` of every image scored.
        annotations: class-agnostic ground truth (:func:`ground_truth_annotations`).
        results: COCO results (:func:`detections`), read with ``COCO.loadRes``.
        iou_type: ``bbox`` or ``segm``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in _STATS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": copy.deepcopy(annotations),
            "categories": [{"id": CATEGORY_ID, "name": "object"}],
        }
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        evaluation = COCOeval(gt, dt, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {
        name: (None if value < 0 else round(100.0 * float(value), 4))
        for name, value in zip(_STATS, evaluation.stats, strict=True)
    }


class _APEvaluator(Evaluator):
    """Shared by box and mask AP: collects ground truth and detections, runs COCOeval once.

    The detections (with their masks, the bulk) are spooled to a temporary file as the images are
    processed, not held: memory grows only with COCOeval's own needs at :meth:`evaluate`, which
    logs an estimate of them before it starts.
    """

    name: ClassVar[str]
    iou_type: ClassVar[str]
    prefix: ClassVar[str]
    headline: ClassVar[tuple[str, ...]]
    requirement: ClassVar[str]

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._spool = tempfile.TemporaryFile("w+")  # read back and closed by evaluate()
        self.n_results = 0
        self.n_bare = 0  # detections without a mask

    def process(self, record: ImageRecord, objects: Objects | None) -> dict[str, Any] | None:
        height, width = record.height, record.width
        if (not height or not width) and objects is not None and objects.geometry is not None:
            height, width = objects.geometry.image_hw
        self.images.append({"id": record.image_id, "width": width or 0, "height": height or 0})
        self.annotations += ground_truth_annotations(record, len(self.annotations) + 1)
        if objects is not None:
            for det in detections(record.image_id, objects, self.iou_type == "segm"):
                self._spool.write(json.dumps(det) + "\n")
                self.n_results += 1
                self.n_bare += "segmentation" not in det
        return None

    def progress(self) -> str:
        return ""

    def results(self) -> list[dict[str, Any]]:
        """The spooled detections, read back (COCOeval needs them all at once)."""
        self._spool.seek(0)
        return [json.loads(line) for line in self._spool]

    def evaluate(self) -> dict[str, Any]:
        size = self._spool.tell()
        logger.info(
            "COCOeval (%s) on %d images, %d ground-truth objects, %d detections: about %.0f MB",
            self.iou_type, len(self.images), len(self.annotations), self.n_results, 8 * size / 2**20 + 1,
        )  # fmt: skip
        results = self.results()
        self._spool.close()
        stats = coco_eval(self.images, self.annotations, results, self.iou_type)
        kind = "box" if self.iou_type == "bbox" else "mask"
        return {
            "values": {f"{self.prefix}{name}": stats[name] for name in _SHOWN},
            "labels": {f"{self.prefix}{name}": f"{name} ({kind})" for name in _SHOWN},
            "higher_is_better": {f"{self.prefix}{name}": True for name in _SHOWN},
            "headline": [f"{self.prefix}{name}" for name in self.headline],
            "all_stats": {f"{self.prefix}{name}": stats[name] for name in _STATS},
            "n_images": len(self.images),
            "n_detections": self.n_results,
            "n_ground_truth": sum(not a["iscrowd"] for a in self.annotations),
            "n_crowd": sum(bool(a["iscrowd"]) for a in self.annotations),
            "iou_type": self.iou_type,
            "max_detections": 100,
        }

    @classmethod
    def summary_line(cls, block: Mapping[str, Any]) -> str:
        values = block.get("values") or {}
        shown = " · ".join(
            f"{name[len(cls.prefix):]} {'--' if values.get(name) is None else format(values[name], '.2f')}"
            for name in (f"{cls.prefix}AP", f"{cls.prefix}AP50", f"{cls.prefix}AR100")
        )
        kind = "box AP" if cls.iou_type == "bbox" else "mask AP"
        return f"{kind:<11}{shown}  ({block.get('n_detections')} detections, {block.get('n_ground_truth')} objects)"

    @staticmethod
    def check(block: Mapping[str, Any]) -> str | None:
        """Every value a percentage; counts whole numbers."""
        for name, value in (block.get("values") or {}).items():
            if value is not None and not 0.0 <= float(value) <= 100.0:
                return f"{name} {value} is not a percentage"
        for key in ("n_images", "n_detections", "n_ground_truth"):
            value = block.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"{key} {value!r} is not a count"
        return None


class BoxAPEvaluator(_APEvaluator):
    """Class-agnostic box AP / AR (COCOeval ``bbox``): ``metrics.json`` ``metrics.ap``."""

    name: ClassVar[str] = "ap"
    iou_type: ClassVar[str] = "bbox"
    prefix: ClassVar[str] = "box_"
    headline: ClassVar[tuple[str, ...]] = ("AP50", "AR100")
    requirement: ClassVar[str] = "ground-truth boxes"

    def applies(self, dataset: Dataset) -> bool:
        return dataset.has_gt


class MaskAPEvaluator(_APEvaluator):
    """Class-agnostic mask AP / AR (COCOeval ``segm``): ``metrics.json`` ``metrics.mask_ap``."""

    name: ClassVar[str] = "mask_ap"
    iou_type: ClassVar[str] = "segm"
    prefix: ClassVar[str] = "mask_"
    headline: ClassVar[tuple[str, ...]] = ("AP50",)
    requirement: ClassVar[str] = "ground-truth masks (COCO's segmentations)"

    def applies(self, dataset: Dataset) -> bool:
        return dataset.has_gt and dataset.has_masks

    def evaluate(self) -> dict[str, Any]:
        bare, total = self.n_bare, self.n_results
        if not bare:
            return super().evaluate()
        block = super().evaluate()  # counts and labels; no numbers from boxes standing in for masks
        block["values"] = {name: None for name in block["values"]}
        block["all_stats"] = {name: None for name in block["all_stats"]}
        block["reason"] = f"{bare} of the {total} detections carry no mask"
        return block


__all__ = ["BoxAPEvaluator", "MaskAPEvaluator", "coco_eval", "detections"]
