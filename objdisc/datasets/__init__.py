"""Datasets: each loader returns a :class:`Dataset` of :class:`ImageRecord`."""

from __future__ import annotations

from pathlib import Path

from objdisc.datasets.base import Dataset, DatasetError, ImageRecord, resolve_data_root
from objdisc.datasets.coco import load_coco, load_coco20k
from objdisc.datasets.folder import load_folder
from objdisc.datasets.voc import load_voc

DATASETS = ("voc07", "voc12", "coco20k", "coco", "folder")

__all__ = ["DATASETS", "Dataset", "DatasetError", "ImageRecord", "load_dataset"]


def load_dataset(
    kind: str,
    data_root: str | Path | None = None,
    images: str | Path | None = None,
    annotations: str | Path | None = None,
    split: str = "trainval",
    no_hard: bool = False,
) -> Dataset:
    """Load a dataset by kind.

    Args:
        kind: one of :data:`DATASETS`.
        data_root: root for ``voc07``, ``voc12``, ``coco20k`` (else ``$OBJDISC_DATA_ROOT``).
        images: image folder for ``coco`` and ``folder``.
        annotations: COCO instances json for ``coco``.
        split: VOC image set.
        no_hard: VOC only: drop difficult / truncated objects.
    """
    if kind in ("voc07", "voc12"):
        return load_voc(resolve_data_root(data_root), kind, split, no_hard)
    if kind == "coco20k":
        return load_coco20k(resolve_data_root(data_root))
    if kind == "coco":
        if images is None or annotations is None:
            raise DatasetError("--dataset coco needs --images DIR and --annotations FILE.json")
        return load_coco(Path(images).expanduser(), Path(annotations).expanduser())
    if kind == "folder":
        if images is None:
            raise DatasetError("--dataset folder needs --images DIR")
        return load_folder(Path(images).expanduser())
    raise DatasetError(f"unknown dataset {kind!r}; known: {', '.join(DATASETS)}")
