"""What happens to each image on the host after the method, turned into its journal entry.

:func:`post_process` does, for one image: the method's pixel-level step
(:meth:`~objdisc.methods.base.Method.finalize`: MaskCut decodes the image again and runs its CRF),
the saliency map where the run writes them (PNGs, the bilateral solver, the counts:
:func:`objdisc.engine.saliency_maps.saliency_result`), and the journal entry with the masks
encoded as RLEs (:func:`journal_entry`). It is a pure function of a picklable :class:`PostSpec` and
one :class:`~objdisc.engine.discover.ImageResult`, so it runs the same in the main process or in
a worker of :class:`objdisc.engine.post_pool.PostPool`: the entries are identical either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.engine.discover import ImageResult
from objdisc.engine.journal import file_stamp
from objdisc.engine.saliency_maps import saliency_result
from objdisc.errors import OptionError
from objdisc.images import load_image
from objdisc.methods import Method


@dataclass(frozen=True)
class PostSpec:
    """How a run post-processes its images (picklable: sent once to each worker).

    Attributes:
        method: the run's method (its :meth:`~objdisc.methods.base.Method.finalize`).
        maps: the run folder, when it writes each image's saliency map (else ``None``).
        refine: the saliency refinement (``none`` or ``bilateral``).
        with_masks: journal the masks (off for a resumed objdisc 0.1 journal, which has none).
    """

    method: Method
    maps: Path | None = None
    refine: str = "none"
    with_masks: bool = True


def journal_entry(result: ImageResult, with_masks: bool = True) -> dict[str, Any]:
    """One journal line for a finished image (masks as RLEs unless ``with_masks`` is off), with its
    file's stamp: a resume redoes an image whose file changed."""
    return {
        "image_id": result.record.image_id,
        "file_name": result.record.file_name,
        "stamp": file_stamp(result.record.path),
        "hw": list(result.image_hw) if result.image_hw else None,
        "objects": result.objects.to_json(with_masks) if result.objects is not None else None,
        "error": result.error,
    }


def post_process(spec: PostSpec, result: ImageResult) -> dict[str, Any]:
    """The journal entry of one image (module docstring); a failure of this image becomes its error.

    Raises:
        OptionError: an option the run cannot take after all (the run's fault, not the image's).
    """
    try:
        if not result.finalized and result.objects is not None and result.image_hw is not None:
            record = result.record
            objects = spec.method.finalize(
                result.objects, lambda: load_image(record.path, member=record.member)[0], result.image_hw
            )
            result = dataclasses.replace(result, objects=objects, finalized=True)
        if spec.maps is not None:
            result = saliency_result(result, spec.maps, spec.refine, spec.method)
        return journal_entry(result, spec.with_masks)
    except OptionError:
        raise
    except Exception as exc:  # one image's failure (a decode, the CRF, a write) never stops the run
        failed = ImageResult(result.record, result.image_hw, None, f"{result.record.path}: {type(exc).__name__}: {exc}")
        return journal_entry(failed, spec.with_masks)


__all__ = ["PostSpec", "journal_entry", "post_process"]
