"""``objdisc norms``: the registers paper's artifact diagnostics on any dataset.

Per image, one forward pass records every block's token norms (see :mod:`objdisc.models.token_probe`).
Over the dataset: the distribution of output patch-token norms (histogram, log-count axis),
the high-norm threshold (given, or found in the gap of a bimodal distribution), the share of
patch tokens above it, per-layer mean / max norms of patch, register and CLS tokens, where the
high-norm tokens sit (per image grid positions) and how redundant their input patches are
(mean cosine similarity of the patch embedding to its 4 neighbours, high-norm vs other tokens).

``objdisc norms`` (:mod:`objdisc.commands.norms`) writes the summary and its pictures
(:mod:`objdisc.reports.norm_figures`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class ImageNorms:
    """What the summary needs of one image (numpy, float32).

    Attributes:
        file_name: the image, as the dataset names it.
        patch: ``(L, h, w)`` patch-token norms after each block.
        registers: ``(L, R)`` register-token norms.
        cls: ``(L,)`` CLS-token norms (empty without CLS).
        neighbour_cos: ``(h, w)`` patch-embedding cosine to the 4-neighbours.
        extra: ``(L, E)`` norms of a test-time register (``E`` = 0 without).
    """

    file_name: str
    patch: np.ndarray
    registers: np.ndarray
    cls: np.ndarray
    neighbour_cos: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def find_threshold(norms: np.ndarray, bins: int = 128, min_ratio: float = 2.0) -> tuple[float | None, dict[str, Any]]:
    """High-norm threshold from the valley of a bimodal norm distribution.

    The norms are histogrammed on a log scale. From the main mode upward, a secondary peak is
    accepted when some bin between the two holds at most a tenth of that peak's count (a real
    dip, not noise), the peak bin holds at least ``max(3, 1e-4 * total)`` tokens, and the peak
    lies at least ``min_ratio`` times the main mode's norm (the artifacts of the registers paper
    are an order of magnitude above the other tokens; a sparse histogram of a narrow unimodal
    distribution has dips close to its mode); the largest such peak wins. The threshold is the
    middle of the lowest bins of that valley.

    Args:
        norms: ``(M,)`` positive norms.
        bins: histogram bins over the log-norm range.
        min_ratio: how far above the main mode a second mode must lie.

    Returns:
        ``(threshold, details)``; threshold ``None`` when the distribution is not bimodal.
    """
    values = np.asarray(norms, np.float64)
    values = values[values > 0]
    if len(values) < 2 or values.max() <= values.min():
        return None, {"bimodal": False, "reason": "fewer than two distinct norms"}
    logs = np.log(values)
    counts, edges = np.histogram(logs, bins)
    mode = int(np.argmax(counts))
    floor = max(3.0, 1e-4 * len(values))  # a mode, not a stray token in a thin tail
    centres = (edges[:-1] + edges[1:]) / 2
    for peak in sorted(range(mode + 2, bins), key=lambda j: -counts[j]):
        if counts[peak] < floor:
            break
        if centres[peak] - centres[mode] < math.log(min_ratio):
            continue
        between = counts[mode + 1 : peak]
        low = between.min()
        if low <= 0.1 * counts[peak]:
            lowest = np.flatnonzero(between == low) + mode + 1
            centre = (edges[lowest[0]] + edges[lowest[-1] + 1]) / 2
            return float(math.exp(centre)), {
                "bimodal": True,
                "main_mode": float(math.exp((edges[mode] + edges[mode + 1]) / 2)),
                "high_mode": float(math.exp((edges[peak] + edges[peak + 1]) / 2)),
            }
    return None, {"bimodal": False, "reason": "no second mode above the main one"}


@dataclass
class NormSummary:
    """Accumulates :class:`ImageNorms` and computes the dataset summary."""

    images: list[ImageNorms] = field(default_factory=list)

    def update(self, item: ImageNorms) -> None:
        """Add one image."""
        self.images.append(item)

    def patch_norms(self, layer: int = -1) -> np.ndarray:
        """Every patch-token norm after block ``layer``, over all images, ``(M,)``."""
        return np.concatenate([im.patch[layer].ravel() for im in self.images])

    def register_norms(self, layer: int = -1) -> np.ndarray:
        """Every register-token norm after block ``layer``, over all images (empty without registers)."""
        return np.concatenate([im.registers[layer].ravel() for im in self.images])

    def compute(self, threshold: float | None = None, max_positions: int = 32) -> dict[str, Any]:
        """The JSON summary (see the module docstring); ``threshold=None`` finds one."""
        if not self.images:
            raise ValueError("no images to summarise")
        output = self.patch_norms()
        found, details = find_threshold(output)
        used = threshold if threshold is not None else found
        source = "given" if threshold is not None else ("bimodal gap" if found is not None else "none: not bimodal")
        high_cos, other_cos, per_image = [], [], []
        for im in self.images:
            last = im.patch[-1]
            high = last > used if used is not None else np.zeros(last.shape, bool)
            high_cos.append(im.neighbour_cos[high])
            other_cos.append(im.neighbour_cos[~high])
            rows, cols = np.nonzero(high)
            order = np.argsort(-last[rows, cols], kind="stable")[:max_positions]
            per_image.append(
                {
                    "file_name": im.file_name,
                    "grid_hw": list(last.shape),
                    "n_patches": int(last.size),
                    "n_high": int(high.sum()),
                    "max_norm": float(last.max()),
                    "high_positions": [[int(rows[i]), int(cols[i])] for i in order],
                }
            )
        high_all, other_all = np.concatenate(high_cos), np.concatenate(other_cos)
        n_layers = self.images[0].patch.shape[0]
        layers = []
        for layer in range(n_layers):
            patch = self.patch_norms(layer)
            regs = self.register_norms(layer)
            cls = np.array([im.cls[layer] for im in self.images if im.cls.size])
            layers.append(
                {
                    "block": layer,
                    "patch_mean": float(patch.mean()),
                    "patch_max": float(patch.max()),
                    "register_mean": float(regs.mean()) if regs.size else None,
                    "register_max": float(regs.max()) if regs.size else None,
                    "cls_mean": float(cls.mean()) if cls.size else None,
                }
            )
        registers = self.register_norms()
        return {
            "n_images": len(self.images),
            "n_patch_tokens": int(output.size),
            "threshold": used,
            "threshold_source": source,
            "distribution": details,
            "n_high": int((output > used).sum()) if used is not None else 0,
            "share_high": float((output > used).mean()) if used is not None else 0.0,
            "output_norm": _stats(output),
            "register_output_norm": _stats(registers) if registers.size else None,
            "neighbour_cosine": {
                "high_norm_mean": float(high_all.mean()) if high_all.size else None,
                "other_mean": float(other_all.mean()) if other_all.size else None,
            },
            "layers": layers,
            "images": per_image,
        }


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def collect(backbone: Any, records: Iterable[Any], device: Any, max_side: int | None = None) -> Iterable[ImageNorms]:
    """Token norms of each record (one image per forward pass; unreadable images are logged and skipped)."""
    import torch

    from objdisc.images import ImageError, load_image, make_batch
    from objdisc.models.token_probe import TokenProbe

    spec = backbone.spec
    with TokenProbe(backbone.model, spec.num_registers, spec.class_token) as probe:
        for record in records:
            try:
                image, _ = load_image(
                    record.path, max_side=max_side, patch_size=backbone.patch_size, member=record.member
                )
            except ImageError as exc:
                logger.warning("skipped %s", exc)
                continue
            x = make_batch([torch.from_numpy(image)], backbone.patch_size, spec.mean, spec.std, device)
            (norms,) = probe(x)
            yield ImageNorms(
                record.file_name,
                norms.patch.cpu().numpy(),
                norms.registers.cpu().numpy(),
                norms.cls.cpu().numpy(),
                norms.neighbour_cos.cpu().numpy(),
                norms.extra.cpu().numpy(),
            )


def norm_summary(
    backbone: Any,
    records: Sequence[Any],
    device: Any = "cpu",
    threshold: float | None = None,
    max_side: int | None = None,
    producer: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], NormSummary]:
    """What ``objdisc norms`` computes: every image's token norms collected and summarised.

    With test-time registers (:mod:`objdisc.models.test_time_registers`) the images are also run without them, and the
    summary's ``test_time_registers`` says where the high norms went: the share of high-norm
    patch tokens before and after (one threshold for both: given, or found on the model without
    them, whose distribution is the bimodal one), and the extra token's norm. The rest of the
    summary and the pictures are of the model with test-time registers.

    ``progress``: a bar per image (``None``: only on a terminal).

    Returns:
        ``(summary, accumulated norms)``: the summary as ``norms.json`` holds it, and the norms
        the pictures are drawn from (:func:`objdisc.reports.norm_figures.write_norm_files`).
    """
    ttr = getattr(backbone.model, "objdisc_ttr", None)
    before: dict[str, Any] | None = None
    if ttr is not None:
        ttr.enabled = False
        try:
            plain = _accumulate(backbone, records, device, max_side, progress, "norms without test-time registers")
        finally:
            ttr.enabled = True
        before = plain.compute(threshold)
        if before["threshold"] is not None:
            threshold = before["threshold"]
    acc = _accumulate(backbone, records, device, max_side, progress, "norms")
    summary = {"producer": producer or {}, **acc.compute(threshold)}
    if before is not None:
        summary["threshold_source"] = f"{before['threshold_source']} (without test-time registers)"
        extra = np.concatenate([im.extra[-1].ravel() for im in acc.images])
        summary["test_time_registers"] = {
            "neurons": backbone.test_time_registers.describe(),
            "threshold": summary["threshold"],
            "n_high_before": before["n_high"],
            "share_high_before": before["share_high"],
            "n_high_after": summary["n_high"],
            "share_high_after": summary["share_high"],
            "output_norm_before": before["output_norm"],
            "extra_token_norm": _stats(extra),
        }
    return summary, acc


def _accumulate(
    backbone: Any, records: Sequence[Any], device: Any, max_side: int | None, progress: bool | None, label: str
) -> NormSummary:
    from tqdm import tqdm

    from objdisc.utils.progress import show_progress

    acc = NormSummary()
    show = show_progress(progress)
    with tqdm(total=len(records), unit="img", desc=label, disable=not show) as bar:
        for item in collect(backbone, records, device, max_side):
            acc.update(item)
            bar.update(1)
    return acc


__all__ = ["ImageNorms", "NormSummary", "collect", "find_threshold", "norm_summary"]
