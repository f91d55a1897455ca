"""Unsupervised saliency metrics as TokenCut's ``unsupervised_saliency_detection/metric.py`` computes them.

Per image, a prediction map ``P`` (``(H, W)`` float: a 0/1 mask, or the bilateral solver's
soft output) against the ground-truth mask ``G`` (the PNG read as 8-bit grey, foreground where
it is not 0: metric.py's ``> 0.5`` and ``.to(bool)`` on the 0-255 values):

- **maxFβ**: at each of 255 thresholds ``t = k / 255`` (``k = 0 .. 254``), precision and
  recall of ``P > t`` (precision 1 when nothing is predicted, recall 1 when ``G`` is empty),
  ``F = (1 + β²) p r / (β² p + r)`` with ``β² = 0.3`` (0 where that is 0 / 0); F averaged over
  the images at each threshold, then the maximum over thresholds;
- **IoU** of ``P > 0.5`` and ``G``, averaged over images (metric.py divides 0 by 0 when both are
  empty, a NaN that makes its average NaN; objdisc counts that image as IoU 1: they agree);
- **accuracy**: the share of pixels where ``P > 0.5`` equals ``G``, averaged over images;
- **maxFβ as FOUND computes it** (``fmax_found``; SelfMask's ``f_measure.py``): per image the
  largest F over the same thresholds, with ``p = tp / (|P > t| + 1e-7)``, ``r = tp / (|G| + 1e-7)``
  and ``β²`` squared again (``1 + 0.3²``: the file squares its ``beta_square``), then averaged
  over images (the mean of maxima, where TokenCut takes the maximum of means);
- **MAE** and **S-measure** as FOUND computes them (:mod:`objdisc.evaluation.structure`: the
  mean absolute error of ``P > 0.5``, lower is better; the structure measure of ``P``), averaged
  over images. Journals written before objdisc measured them lack them: over such images the two
  are ``None`` (rerun the images, or a fresh ``--out``).

Everything an image contributes is integer counts (:func:`counts`: per threshold the pixels
predicted and the true positives; the intersection, union and agreement at 0.5), computed where
the full-resolution map is in memory and journaled with the image, so a resumed run scores what
an uninterrupted one does and no soft map has to be kept. The numbers are in percent (TokenCut's
README writes .712 for 71.2). metric.py computes in float32; objdisc in float64 from the
counts (the difference is measured in the README's Fidelity section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from objdisc.errors import ObjdiscError
from objdisc.evaluation.evaluator import Evaluator

if TYPE_CHECKING:
    from objdisc.datasets.base import Dataset, ImageRecord
    from objdisc.objects import Objects

BETA_SQ = 0.3
FOUND_EPS = 1e-7  # f_measure.py's eps
N_THRESHOLDS = 255
THRESHOLDS = np.arange(0.0, 1.0, 1.0 / N_THRESHOLDS)  # metric.py's np.arange(0.0, 1.0, 1.0 / prob_bins)
COUNT_KEYS = ("predicted", "true_positive", "gt", "inter", "union", "equal", "pixels", "mae", "s_measure")


class SaliencyError(ObjdiscError):
    """A ground-truth or predicted mask that cannot be used (unreadable, another size)."""


def read_mask(path: Path) -> np.ndarray:
    """A ground-truth mask as metric.py reads it: 8-bit grey (PIL ``convert("L")``), foreground where not 0.

    Returns:
        ``(H, W)`` bool.

    Raises:
        SaliencyError: the file is missing or does not decode, naming it.
    """
    return _read_grey(path, "ground-truth mask not found", "cannot read the mask ({}); replace the file") > 0


def read_prediction(path: Path) -> np.ndarray:
    """Another tool's saliency map: an 8-bit grey PNG, read as ``value / 255``.

    Returns:
        ``(H, W)`` float64 in ``[0, 1]``.

    Raises:
        SaliencyError: the file is missing or does not decode, naming it.
    """
    missing = "no predicted mask for this image; give one per image (its stem, .png)"
    return _read_grey(path, missing, "cannot read the predicted mask ({})").astype(np.float64) / 255.0


def _read_grey(path: Path, missing: str, unreadable: str) -> np.ndarray:
    """``(H, W)`` uint8: the image as 8-bit grey (PIL ``convert("L")``); a missing or undecodable
    file raises :class:`SaliencyError` with ``path``, then ``missing`` or ``unreadable`` (whose
    ``{}`` takes the decoder's words)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise SaliencyError(f"{path}: {missing}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SaliencyError(f"{path}: {unreadable.format(exc)}") from None


def counts(prediction: np.ndarray, truth: np.ndarray, where: str = "") -> dict[str, Any]:
    """What one image contributes to the metrics (module docstring).

    Args:
        prediction: ``(H, W)`` float map (0/1, or soft).
        truth: ``(H, W)`` bool ground truth.
        where: the file(s) to name in an error.

    Returns:
        ``predicted`` and ``true_positive``: ``N_THRESHOLDS`` pixel counts of ``P > t_k`` and of
        ``(P > t_k) & G``; ``gt``: ``|G|``; ``inter``, ``union``, ``equal``: of ``P > 0.5`` with
        ``G``; ``pixels``: ``H W``; ``mae`` and ``s_measure``: FOUND's (fractions, 9 decimals).

    Raises:
        SaliencyError: the two are not the same size.
    """
    if prediction.shape != truth.shape:
        raise SaliencyError(
            f"{where}: the prediction is {prediction.shape[0]}x{prediction.shape[1]} pixels, the ground truth "
            f"{truth.shape[0]}x{truth.shape[1]}; a prediction must have its image's size"
        )
    from objdisc.evaluation.structure import mae, s_measure

    structure = {"mae": round(mae(prediction, truth), 9), "s_measure": round(s_measure(prediction, truth), 9)}
    p = np.asarray(prediction, dtype=np.float64).ravel()
    g = np.asarray(truth, dtype=bool).ravel()
    # above[i] = how many thresholds pixel i exceeds; P > t_k  <=>  k < above[i]
    above = np.searchsorted(THRESHOLDS, p, side="left")
    predicted = _at_least(above, N_THRESHOLDS)
    true_positive = _at_least(above[g], N_THRESHOLDS)
    fg = p > 0.5
    return {
        "predicted": predicted.tolist(),
        "true_positive": true_positive.tolist(),
        "gt": int(g.sum()),
        "inter": int(np.count_nonzero(fg & g)),
        "union": int(np.count_nonzero(fg | g)),
        "equal": int(np.count_nonzero(fg == g)),
        "pixels": int(p.size),
        **structure,
    }


def _at_least(above: np.ndarray, n: int) -> np.ndarray:
    """``out[k]`` = how many entries of ``above`` exceed ``k``, for ``k < n``."""
    histogram = np.bincount(above, minlength=n + 1)
    return histogram[::-1].cumsum()[::-1][1:]


def image_scores(c: Mapping[str, Any]) -> tuple[np.ndarray, float, float]:
    """``(F at each threshold (N_THRESHOLDS,), IoU, accuracy)`` of one image's counts, fractions."""
    predicted = np.asarray(c["predicted"], dtype=np.float64)
    true_positive = np.asarray(c["true_positive"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted == 0, 1.0, true_positive / predicted)
        recall = np.full_like(precision, 1.0) if c["gt"] == 0 else true_positive / c["gt"]
        f = (1 + BETA_SQ) * precision * recall / (BETA_SQ * precision + recall)
    f = np.nan_to_num(f, nan=0.0)
    iou = c["inter"] / c["union"] if c["union"] else 1.0
    return f, float(iou), c["equal"] / c["pixels"]


def found_fmax(c: Mapping[str, Any]) -> float:
    """One image's F-max as FOUND's ``f_measure.py`` computes it (module docstring), a fraction."""
    predicted = np.asarray(c["predicted"], dtype=np.float64)
    true_positive = np.asarray(c["true_positive"], dtype=np.float64)
    precision = true_positive / (predicted + FOUND_EPS)
    recall = true_positive / (c["gt"] + FOUND_EPS)
    beta = BETA_SQ**2
    return float(np.max((1 + beta) * precision * recall / (beta * precision + recall + FOUND_EPS)))


def scores(all_counts: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """maxFβ, IoU, accuracy, MAE and S-measure (fractions) over the images' counts (``None`` each
    when there are none; MAE and S-measure ``None`` when an image's counts lack them)."""
    if not all_counts:
        return dict.fromkeys(("max_fbeta", "iou", "accuracy", "fmax_found", "mae", "s_measure"))
    per_image = [image_scores(c) for c in all_counts]
    f = np.mean([s[0] for s in per_image], axis=0)
    structure = all("mae" in c and "s_measure" in c for c in all_counts)
    return {
        "max_fbeta": float(f.max()),
        "iou": float(np.mean([s[1] for s in per_image])),
        "accuracy": float(np.mean([s[2] for s in per_image])),
        "fmax_found": float(np.mean([found_fmax(c) for c in all_counts])),
        "mae": float(np.mean([c["mae"] for c in all_counts])) if structure else None,
        "s_measure": float(np.mean([c["s_measure"] for c in all_counts])) if structure else None,
    }


def union_map(objects: Objects, image_hw: tuple[int, int]) -> np.ndarray:
    """The binary saliency map of an image's objects: the union of their pixel masks.

    One object (LOST, TokenCut, DINO-seg): its mask; MaskCut: the union of its masks; none: empty.

    Returns:
        ``(H, W)`` float64, 1.0 inside.
    """
    out = np.zeros(image_hw, dtype=np.float64)
    if len(objects) and objects.has_masks:
        masks = objects.pixel_masks()
        if masks.shape[1:] == tuple(image_hw):
            out[masks.any(axis=0)] = 1.0
        else:
            raise SaliencyError(f"masks of {masks.shape[1:]} pixels for an image of {tuple(image_hw)}")
    return out


class SaliencyEvaluator(Evaluator):
    """maxFβ, IoU and accuracy (:mod:`objdisc.evaluation.saliency`): ``metrics.json`` ``metrics.saliency``.

    Each image's counts come with its objects (``Objects.saliency``, made by the run where the
    map was in memory: with ``--refine bilateral`` from the soft map); an image without them is
    scored from its objects' masks against its ground-truth mask; an image without a result
    predicts nothing (an empty map). An image whose ground truth cannot be used (unreadable, of
    another size than its map) is left out and listed (``unscorable``).
    """

    name: ClassVar[str] = "saliency"
    requirement: ClassVar[str] = "ground-truth saliency masks"

    def __init__(self) -> None:
        self.reset()

    def applies(self, dataset: Dataset) -> bool:
        return dataset.has_saliency

    def reset(self) -> None:
        self.counts: list[Mapping[str, Any]] = []
        self.unscorable: list[dict[str, str]] = []

    def process(self, record: ImageRecord, objects: Objects | None) -> dict[str, Any] | None:
        if record.mask_path is None:
            return None
        if objects is not None and objects.saliency is not None:
            c = objects.saliency
        else:
            try:
                truth = read_mask(record.mask_path)
                prediction = np.zeros(truth.shape) if objects is None else union_map(objects, truth.shape)
                c = counts(prediction, truth, str(record.mask_path))
            except SaliencyError as exc:  # its ground truth cannot be used: left out, and listed
                self.unscorable.append({"file_name": record.file_name, "reason": str(exc)})
                return None
        self.counts.append(c)
        _, iou, accuracy = image_scores(c)
        extra = {k: round(c[k], 6) for k in ("mae", "s_measure") if k in c}
        return {"iou": round(iou, 6), "accuracy": round(accuracy, 6), **extra}

    def progress(self) -> str:
        return ""

    def evaluate(self) -> dict[str, Any]:
        found = scores(self.counts)
        values = {k: (None if v is None else round(100.0 * v, 4)) for k, v in found.items()}
        return {
            "values": values,
            "labels": {
                "max_fbeta": "maxFβ",
                "iou": "IoU",
                "accuracy": "Acc",
                "fmax_found": "maxFβ (FOUND)",
                "mae": "MAE",
                "s_measure": "S-measure",
            },
            "higher_is_better": {
                "max_fbeta": True,
                "iou": True,
                "accuracy": True,
                "fmax_found": True,
                "mae": False,
                "s_measure": True,
            },
            "headline": ["max_fbeta", "iou", "accuracy"],
            "n_scored": len(self.counts),
            "n_unscorable": len(self.unscorable),
            "unscorable": self.unscorable,
            "beta_sq": BETA_SQ,
            "thresholds": N_THRESHOLDS,
        }

    @staticmethod
    def summary_line(block: Mapping[str, Any]) -> str:
        v = block.get("values") or {}
        if v.get("max_fbeta") is None:
            return "saliency   none: no image was scored"
        left_out = block.get("n_unscorable") or 0
        note = f"; {left_out} left out: ground truth unusable, see metrics.json" if left_out else ""
        structure = ""
        if v.get("mae") is not None and v.get("s_measure") is not None:
            structure = f" · MAE {v['mae']:.2f} · S-measure {v['s_measure']:.2f}"
        return (
            f"saliency   maxFβ {v['max_fbeta']:.2f} · IoU {v['iou']:.2f} · Acc {v['accuracy']:.2f}{structure}  "
            f"({block['n_scored']} images{note})"
        )

    @staticmethod
    def check(block: Mapping[str, Any]) -> str | None:
        """Each value a number in ``[0, 100]`` (or ``None`` with nothing scored)."""
        values = block.get("values") or {}
        for name in ("max_fbeta", "iou", "accuracy", "fmax_found", "mae", "s_measure"):
            value = values.get(name)
            if value is None and (not block.get("n_scored") or name in ("mae", "s_measure")):
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 100.0:
                return f"{name} {value!r} is not a percentage"
        return None


__all__ = [
    "BETA_SQ",
    "N_THRESHOLDS",
    "SaliencyError",
    "SaliencyEvaluator",
    "counts",
    "image_scores",
    "read_mask",
    "read_prediction",
    "scores",
    "union_map",
]
