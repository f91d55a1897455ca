"""Each image's saliency map as a run makes it: the PNGs in ``--out`` and, with ground truth, its counts.

For a saliency dataset (or with ``--refine bilateral``), as each image finishes:

- the map is the union of the objects' pixel masks (:func:`objdisc.evaluation.saliency.union_map`:
  one object for LOST, TokenCut and DINO-seg; MaskCut's masks together);
- a method's own soft map where it has one (FOUND's multi mode: the head's sigmoid map), scored
  instead of the union, written to ``OUT/soft``;
- with ``--refine bilateral`` the bilateral solver's soft output on it, with the image as the
  reference (:func:`objdisc.refinement.bilateral.bilateral_solve`); that soft map is what is
  scored, as TokenCut's get_saliency.py scores it;
- ``OUT/masks/<name>.png``: the binary mask (0 / 255; refined: :func:`~objdisc.refinement.bilateral.refined_mask`),
  ``OUT/soft/<name>.png``: the soft map (clipped to ``[0, 1]``, times 255, rounded), where there
  is one; ``<name>`` is the image's file name with ``/`` as ``__`` and the suffix ``.png``;
- where the record has a ground-truth mask, the counts the metrics need
  (:func:`objdisc.evaluation.saliency.counts`) go into the objects (``Objects.saliency``) and
  so into the journal: the soft map is scored at full precision and need not be kept.

An image whose ground-truth mask is unreadable or of another size, or whose pixels cannot be
read again for the solver, becomes a skipped image with that reason (the run goes on).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from objdisc.engine.discover import ImageResult
from objdisc.errors import OptionError
from objdisc.evaluation.saliency import SaliencyError, counts, read_mask, union_map
from objdisc.images import ImageError, load_image
from objdisc.methods.base import Method

MASKS, SOFT = "masks", "soft"
REFINERS = ("none", "bilateral")


def png_name(file_name: str) -> str:
    """``a/b.jpg`` -> ``a__b.png``."""
    return Path(file_name).with_suffix(".png").as_posix().replace("/", "__")


def check_map_names(file_names: Iterable[str]) -> None:
    """Refuse images whose maps would land on one PNG (``a.jpg`` and ``a.png``; ``x/a.jpg`` and
    ``x__a.jpg``), before anything is written.

    Raises:
        OptionError: naming both files.
    """
    seen: dict[str, str] = {}
    for name in file_names:
        other = seen.setdefault(png_name(name), name)
        if other != name:
            raise OptionError(
                f"{other} and {name} would both write their saliency map to {MASKS}/{png_name(name)}: "
                "rename one of them, or run them into separate --out folders"
            )


def write_png(path: Path, values: np.ndarray) -> None:
    """An 8-bit grey PNG of ``values`` in ``[0, 1]`` (clipped, times 255, rounded), written atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(grey).save(tmp, format="PNG")
    os.replace(tmp, path)


def saliency_result(
    result: ImageResult, out: Path, refine: str = "none", method: Method | None = None
) -> ImageResult:
    """The result with its saliency map written and, with ground truth, its counts attached
    (module docstring); results without objects pass unchanged. A method with its own soft map
    (:meth:`~objdisc.methods.base.Method.saliency_map`: FOUND's multi mode) has that map scored and
    written to ``OUT/soft`` (without ``--refine``)."""
    objects = result.objects
    if objects is None or result.image_hw is None:
        return result
    record = result.record
    try:
        binary = union_map(objects, result.image_hw)
        scored, mask = binary, binary > 0.5
        soft = None if method is None or refine == "bilateral" else method.saliency_map(objects, result.image_hw)
        if soft is not None:
            scored = soft
            write_png(out / SOFT / png_name(record.file_name), soft)
        if refine == "bilateral":
            from objdisc.refinement.bilateral import bilateral_solve, refined_mask

            rgb, _ = load_image(record.path, member=record.member)
            scored = bilateral_solve(rgb, binary)
            mask = refined_mask(scored)
            write_png(out / SOFT / png_name(record.file_name), scored)
        write_png(out / MASKS / png_name(record.file_name), mask.astype(np.float64))
        if record.mask_path is not None:
            found = counts(scored, read_mask(record.mask_path), str(record.mask_path))
            objects = dataclasses.replace(objects, saliency=found)
    except (SaliencyError, ImageError) as exc:
        return ImageResult(record, result.image_hw, None, str(exc))
    return dataclasses.replace(result, objects=objects)


def clear_maps(out: Path) -> None:
    """``--overwrite``: delete the PNGs a run wrote in ``OUT/masks`` and ``OUT/soft`` (and the
    folders when that empties them), nothing else."""
    for name in (MASKS, SOFT):
        folder = out / name
        for path in folder.glob("*.png"):
            path.unlink()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


__all__ = ["MASKS", "REFINERS", "SOFT", "check_map_names", "clear_maps", "png_name", "saliency_result", "write_png"]
