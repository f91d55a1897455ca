"""``Objects`` to and from ``supervision.Detections`` (Roboflow's supervision; ``pip install 'objdisc[supervision]'``).

``to_detections`` gives one image's objects as supervision's detections: ``xyxy`` the boxes
(float64 pixels, x2 / y2 exclusive as objdisc's), ``confidence`` the scores, ``mask`` the pixel
masks at the original size (when the objects carry masks), ``class_id`` 0 (discovery is
class-agnostic: one class, ``fg``), and the seed patches in ``data["seed"]`` when known.
``from_detections`` is the inverse: boxes must be whole pixels (objdisc's boxes are; another
tool's are rounded to the nearest and said so with ``round_boxes``), scores default to 1.0, masks
become COCO RLEs. A round trip keeps boxes, masks and scores exactly (tested).

supervision draws (``BoxAnnotator``, ``MaskAnnotator``), tracks and filters detections, and
converts them to other formats; objdisc's runs feed it through :func:`objects_of_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from objdisc.errors import OptionError
from objdisc.objects import Objects, encode_rles

if TYPE_CHECKING:
    import supervision as sv

MISSING = "supervision is not installed: pip install 'objdisc[supervision]'"


def _supervision() -> Any:
    try:
        import supervision
    except ImportError as exc:
        raise OptionError(MISSING) from exc
    return supervision


def to_detections(objects: Objects) -> sv.Detections:
    """One image's objects as ``supervision.Detections`` (module docstring).

    Raises:
        OptionError: supervision is not installed.
    """
    sv = _supervision()
    k = len(objects)
    mask = objects.pixel_masks() if objects.has_masks and k else None
    data = {"seed": np.asarray(objects.seeds, dtype=np.int64)} if objects.seeds is not None else {}
    return sv.Detections(
        xyxy=np.asarray(objects.boxes, dtype=np.float64).reshape(k, 4),
        confidence=np.asarray(objects.scores, dtype=np.float64),
        class_id=np.zeros(k, dtype=int),
        mask=mask,
        data=data,
    )


def from_detections(detections: sv.Detections, round_boxes: bool = False) -> Objects:
    """``supervision.Detections`` of one image as objdisc's ``Objects`` (module docstring).

    Args:
        detections: boxes, and optionally confidences, masks and ``data["seed"]``.
        round_boxes: round boxes that are not whole pixels to the nearest (else refused).

    Raises:
        OptionError: boxes that are not whole pixels without ``round_boxes``.
    """
    xyxy = np.asarray(detections.xyxy, dtype=np.float64).reshape(-1, 4)
    rounded = np.rint(xyxy)
    if not round_boxes and not np.array_equal(rounded, xyxy):
        raise OptionError("detections with boxes that are not whole pixels; pass round_boxes=True to round them")
    k = len(xyxy)
    scores = (
        np.ones(k) if detections.confidence is None else np.asarray(detections.confidence, dtype=np.float64)
    )
    seeds = detections.data.get("seed") if detections.data else None
    segmentation = encode_rles(np.asarray(detections.mask, dtype=bool)) if detections.mask is not None else None
    return Objects(
        rounded.astype(np.int64),
        scores,
        None if seeds is None else np.asarray(seeds, dtype=np.int64),
        segmentation=segmentation,
    )


def objects_of_run(run: str | Path, file_name: str) -> Objects:
    """One image's objects from a finished run folder (its ``predictions.json``, found by the
    image's ``file_name`` in ``per_image.json``), with their pixel masks when the run wrote them.

    Raises:
        ObjdiscError: not a finished run, or no such image in it.
    """
    from objdisc.errors import ObjdiscError
    from objdisc.utils.jsonio import read_json

    folder = Path(run)
    try:
        entries = read_json(folder / "per_image.json")["images"]
        predictions = read_json(folder / "predictions.json")
    except FileNotFoundError as exc:
        raise ObjdiscError(f"{folder}: not a finished objdisc run ({Path(exc.filename).name} missing)") from None
    image_id = next((e["image_id"] for e in entries if e["file_name"] == file_name), None)
    if image_id is None:
        raise ObjdiscError(f"{folder}: no image {file_name!r} in its per_image.json")
    mine = [p for p in predictions if p["image_id"] == image_id]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in mine)]
    data: dict[str, Any] = {"boxes": boxes, "scores": [p["score"] for p in mine]}
    if mine and all("segmentation" in p for p in mine):
        data["segmentation"] = [p["segmentation"] for p in mine]
    return Objects.from_json(data)


__all__ = ["MISSING", "from_detections", "objects_of_run", "to_detections"]
