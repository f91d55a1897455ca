"""``objdisc registers find``: rank a ViT's MLP hidden units by how much they write into its
high-norm outlier tokens (the register-neuron search of Jiang et al., NeurIPS 2025; see
:mod:`objdisc.models.test_time_registers` for what the found neurons are used for).

As the authors' ``find_register_neurons`` does: per image, the tokens whose norm after block
``layer`` (default the last, before the final norm) exceeds a threshold are its outliers, CLS and
registers included; for every block and hidden unit the image's score is the mean |activation|
at those positions; images without an outlier are left out; the final score is the mean over
the images that have one, and every (block, unit) pair is ranked by it, highest first (ties to
the lowest block, then unit: the release code's ``torch.sort`` leaves their order open).

Two passes per image keep memory to one block's activations: the first (which stops after
block ``layer``) finds the outliers and, with ``threshold=None``, the threshold, found as
``objdisc norms`` finds it (the gap of the bimodal distribution of patch-token norms); the
second accumulates the scores. Activations are read where the MLP's ``fc2`` reads them, as for
test-time registers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from objdisc.errors import OptionError
from objdisc.utils.progress import show_progress

logger = logging.getLogger(__name__)

DEFAULT_TOP = 50  # the published ViT-L/14 list holds 45


class _Stop(Exception):
    """Ends a forward pass once the block that decides the outliers has run."""


@dataclass
class Outliers:
    """One image's tokens after block ``layer``.

    Attributes:
        file_name: the image, as the dataset names it.
        norms: ``(T,)`` float32 norms of every token (prefix, patches, any extra).
        patch: ``slice`` of the patch tokens in ``norms``.
    """

    file_name: str
    norms: np.ndarray
    patch: slice


def _batches(
    backbone: Any, records: Sequence[Any], device: torch.device, max_side: int | None, label: str, progress: bool | None
) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(record, (1, 3, H, W) batch)`` per readable image, with a progress bar."""
    from tqdm import tqdm

    from objdisc.images import ImageError, load_image, make_batch

    spec = backbone.spec
    show = show_progress(progress)
    for record in tqdm(records, unit="img", desc=label, disable=not show):
        try:
            image, _ = load_image(record.path, max_side=max_side, patch_size=backbone.patch_size, member=record.member)
        except ImageError as exc:
            logger.warning("skipped %s", exc)
            continue
        yield record, make_batch([torch.from_numpy(image)], backbone.patch_size, spec.mean, spec.std, device)


def token_norms(
    backbone: Any,
    records: Sequence[Any],
    device: torch.device,
    block: int,
    precision: str = "fp32",
    max_side: int | None = None,
    progress: bool | None = None,
) -> list[Outliers]:
    """Pass 1: every token's norm after block ``block`` (absolute index), per readable image."""
    from objdisc.utils.device import compute_context

    model = backbone.model
    seen: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        seen.append(output[0].float().norm(dim=-1))
        raise _Stop

    out = []
    handle = model.blocks[block].register_forward_hook(keep)
    try:
        for record, x in _batches(backbone, records, device, max_side, "outliers", progress):
            seen.clear()
            with torch.inference_mode(), compute_context(device.type, precision):
                try:
                    model.forward_features(x)
                except _Stop:
                    pass
            norms = seen[0].cpu().numpy()
            n_patches = (x.shape[2] // backbone.patch_size) * (x.shape[3] // backbone.patch_size)
            first = int(model.num_prefix_tokens)
            out.append(Outliers(record.file_name, norms, slice(first, first + n_patches)))
    finally:
        handle.remove()
    return out


def neuron_scores(
    backbone: Any,
    records: Sequence[Any],
    positions: dict[str, np.ndarray],
    device: torch.device,
    precision: str = "fp32",
    max_side: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, int]:
    """Pass 2: the mean over images of each unit's mean |activation| at the image's outliers.

    Args:
        positions: file name -> token indices of its outliers (images not in it are skipped).

    Returns:
        ``((L, H) float64 scores, number of images that counted)``.
    """
    from objdisc.utils.device import compute_context

    model = backbone.model
    blocks = model.blocks
    widths = [int(block.mlp.fc2.in_features) for block in blocks]
    if len(set(widths)) != 1:
        raise OptionError(f"the MLPs of {backbone.spec.name} differ in width ({sorted(set(widths))})")
    total = torch.zeros(len(blocks), widths[0], dtype=torch.float64, device=device)
    where: dict[str, torch.Tensor] = {}

    def hook(index: int):
        def read(fc2: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            hidden = args[0][0]  # (T, H)
            total[index] += hidden[where["now"]].abs().double().mean(dim=0)

        return read

    handles = [block.mlp.fc2.register_forward_pre_hook(hook(i)) for i, block in enumerate(blocks)]
    counted = 0
    try:
        chosen = [r for r in records if r.file_name in positions]
        for record, x in _batches(backbone, chosen, device, max_side, "scores", progress):
            where["now"] = torch.from_numpy(positions[record.file_name]).to(device)
            with torch.inference_mode(), compute_context(device.type, precision):
                model.forward_features(x)
            counted += 1
    finally:
        for handle in handles:
            handle.remove()
    return (total / max(counted, 1)).cpu().numpy(), counted


def rank(scores: np.ndarray, top: int) -> list[dict[str, Any]]:
    """The ``top`` highest ``(block, neuron)`` of ``(L, H)`` scores, ties to the lowest index."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:top]
    width = scores.shape[1]
    return [{"block": int(i // width), "neuron": int(i % width), "score": float(flat[i])} for i in order]


def find_register_neurons(
    backbone: Any,
    records: Sequence[Any],
    device: torch.device | str = "cpu",
    layer: int = -1,
    threshold: float | None = None,
    top: int = DEFAULT_TOP,
    precision: str = "fp32",
    max_side: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """``objdisc registers find`` without the file: the ranked register neurons and how they were found.

    Args:
        backbone: a :class:`objdisc.models.backbones.Backbone` without test-time registers.
        records: the images (dataset records).
        layer: the block whose output decides the outliers (Python index).
        threshold: outlier norm threshold; ``None`` finds it in the gap of the bimodal
            distribution of that block's patch-token norms.
        top: how many of the ranked pairs to return.

    Returns:
        JSON-able: ``ranked`` (``{"block", "neuron", "score"}``, best first), ``neurons`` (the
        same by block), ``threshold``, ``threshold_source``, ``n_images``,
        ``n_images_with_outliers``, ``n_tokens``, ``n_outlier_tokens``, ``share_outlier_tokens``.

    Raises:
        OptionError: the model already has test-time registers, the layer does not exist, no
            threshold can be found, or no image has an outlier.
    """
    from objdisc.registers.norm_diagnostics import find_threshold

    if backbone.test_time_registers is not None:
        raise OptionError("registers find needs the model without test-time registers")
    device = torch.device(device)
    depth = len(backbone.model.blocks)
    if not -depth <= layer < depth:
        raise OptionError(f"--layer {layer} does not exist in a model of {depth} blocks")
    block = layer % depth
    if top < 1:
        raise OptionError(f"--top {top}: must be at least 1")
    seen = token_norms(backbone, records, device, block, precision, max_side, progress)
    if not seen:
        raise OptionError("no image could be read")
    source = "given"
    if threshold is None:
        found, details = find_threshold(np.concatenate([s.norms[s.patch] for s in seen]))
        if found is None:
            raise OptionError(
                f"no high-norm outliers after block {block} in {len(seen)} images (the patch-token norms are not "
                f"bimodal: {details['reason']}); give --threshold T, or more images"
            )
        threshold, source = found, "bimodal gap"
    positions = {s.file_name: np.flatnonzero(s.norms > threshold) for s in seen}
    positions = {name: where for name, where in positions.items() if where.size}
    n_tokens = sum(s.norms.size for s in seen)
    n_outliers = sum(where.size for where in positions.values())
    if not positions:
        raise OptionError(
            f"no token is above the threshold {threshold:.4g} after block {block} in {len(seen)} images; "
            "lower --threshold, or give more images"
        )
    scores, counted = neuron_scores(backbone, records, positions, device, precision, max_side, progress)
    ranked = rank(scores, top)
    by_block: dict[str, list[int]] = {}
    for item in sorted(ranked, key=lambda r: r["block"]):
        by_block.setdefault(str(item["block"]), []).append(item["neuron"])
    return {
        "layer": layer,
        "block": block,
        "threshold": float(threshold),
        "threshold_source": source,
        "n_images": len(seen),
        "n_images_with_outliers": counted,
        "n_tokens": n_tokens,
        "n_outlier_tokens": n_outliers,
        "share_outlier_tokens": n_outliers / n_tokens,
        "top": top,
        "ranked": ranked,
        "neurons": by_block,
    }


__all__ = [
    "DEFAULT_TOP",
    "find_register_neurons",
    "neuron_scores",
    "rank",
    "token_norms",
]
