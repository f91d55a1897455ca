"""Datasets: :data:`DATASETS` maps each kind to its loader and the arguments it takes.

Each loader returns a :class:`Dataset` of :class:`ImageRecord`. A new dataset is one loader
file plus one entry here; the CLI's ``--dataset`` choices come from the keys. An argument a kind
does not take (``--images`` with ``voc07``, ``--annotations`` with ``folder``) is refused rather
than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from objdisc.datasets.base import Dataset, DatasetError, ImageRecord, resolve_data_root
from objdisc.datasets.class_folders import load_class_folders
from objdisc.datasets.coco import load_coco, load_coco20k, load_coco_val2017
from objdisc.datasets.folder import load_folder
from objdisc.datasets.saliency import SALIENCY_SETS, load_saliency, load_saliency_set
from objdisc.datasets.tars import load_tars
from objdisc.datasets.voc import load_voc


@dataclass(frozen=True)
class DatasetArgs:
    """Which images a command reads, as given: ``--dataset`` and the arguments its kind takes
    (``--data-root``, ``--images``, ``--annotations``, ``--split``, ``--no-hard``, ``--classes``)."""

    dataset: str
    data_root: str | Path | None = None
    images: str | Path | None = None
    annotations: str | Path | None = None
    split: str = "trainval"
    no_hard: bool = False
    classes: str | None = None

    @property
    def kind(self) -> DatasetKind:
        """The registered kind.

        Raises:
            DatasetError: an unknown kind, listing the known ones.
        """
        if self.dataset not in DATASETS:
            raise DatasetError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS)}")
        return DATASETS[self.dataset]

    def load(self, exclude: str | Path | None = None) -> Dataset:
        """The dataset (:func:`load_dataset`); ``exclude``: a folder whose files are never images of
        the set (the command's own ``--out``).

        Raises:
            DatasetError: an unknown kind, an argument the kind does not take, or what its loader refuses.
        """
        return load_dataset(
            self.dataset, self.data_root, self.images, self.annotations, self.split, self.no_hard, exclude, self.classes
        )


def _path(value: str | Path | None, flag: str, kind: str, what: str) -> Path:
    if value is None:
        raise DatasetError(f"--dataset {kind} needs {flag} ({what})")
    return Path(value).expanduser()


@dataclass(frozen=True)
class DatasetKind:
    """One dataset kind.

    Attributes:
        load: builds the :class:`Dataset` from the arguments and the folder to leave out (``None``: none).
        takes: which of ``data_root``, ``images``, ``annotations``, ``split``, ``no_hard`` it reads.
        help: one line for ``--help``.
        saliency: its ground truth is a mask per image (the saliency metrics; images resized to
            a patch multiple by default, as TokenCut's saliency code).
    """

    load: Callable[[DatasetArgs, Path | None], Dataset]
    takes: frozenset[str]
    help: str
    saliency: bool = False


DATASETS: dict[str, DatasetKind] = {
    "voc07": DatasetKind(
        lambda a, _: load_voc(resolve_data_root(a.data_root), "voc07", a.split, a.no_hard),
        frozenset({"data_root", "split", "no_hard"}),
        "PASCAL VOC 2007 (under --data-root)",
    ),
    "voc12": DatasetKind(
        lambda a, _: load_voc(resolve_data_root(a.data_root), "voc12", a.split, a.no_hard),
        frozenset({"data_root", "split", "no_hard"}),
        "PASCAL VOC 2012 (under --data-root)",
    ),
    "coco20k": DatasetKind(
        lambda a, _: load_coco20k(resolve_data_root(a.data_root)),
        frozenset({"data_root"}),
        "LOST's COCO20k (under --data-root)",
    ),
    "coco_val2017": DatasetKind(
        lambda a, _: load_coco_val2017(resolve_data_root(a.data_root)),
        frozenset({"data_root"}),
        "COCO val2017, 5,000 images with masks (under --data-root)",
    ),
    "coco": DatasetKind(
        lambda a, _: load_coco(
            _path(a.images, "--images DIR", "coco", "the image folder"),
            _path(a.annotations, "--annotations FILE.json", "coco", "the COCO instances file"),
        ),
        frozenset({"images", "annotations"}),
        "any COCO instances file (--images, --annotations)",
    ),
    **{
        kind: DatasetKind(
            lambda a, _, kind=kind: load_saliency_set(kind, resolve_data_root(a.data_root)),
            frozenset({"data_root"}),
            f"saliency: {spec.folders[0]}, {spec.n_images:,} images with ground-truth masks (under --data-root)",
            saliency=True,
        )
        for kind, spec in SALIENCY_SETS.items()
    },
    "saliency": DatasetKind(
        lambda a, _: load_saliency(
            _path(a.images, "--images DIR", "saliency", "the image folder"),
            _path(a.annotations, "--annotations DIR", "saliency", "the folder of ground-truth masks, a PNG per image"),
        ),
        frozenset({"images", "annotations"}),
        "any image folder with a ground-truth mask per image (--images, --annotations: the mask folder)",
        saliency=True,
    ),
    "class-folders": DatasetKind(
        lambda a, exclude: load_class_folders(
            _path(a.images, "--images DIR", "class-folders", "the folder of class folders"), a.classes, exclude
        ),
        frozenset({"images", "classes"}),
        "a tree of one image folder per class, as ImageNet's train/ (--images; --classes to take some)",
    ),
    "tars": DatasetKind(
        lambda a, _: load_tars(_path(a.images, "--images DIR", "tars", "the folder of .tar shards"), a.classes),
        frozenset({"images", "classes"}),
        "tar shards of images, WebDataset's layout, read in place (--images; --classes to take some shards)",
    ),
    "folder": DatasetKind(
        lambda a, exclude: load_folder(_path(a.images, "--images DIR", "folder", "the image folder"), exclude),
        frozenset({"images"}),
        "a folder of images, no ground truth (--images)",
    ),
}

_FLAGS = {
    "images": "--images",
    "annotations": "--annotations",
    "split": "--split",
    "no_hard": "--no-hard",
    "classes": "--classes",
}


def load_dataset(
    kind: str,
    data_root: str | Path | None = None,
    images: str | Path | None = None,
    annotations: str | Path | None = None,
    split: str = "trainval",
    no_hard: bool = False,
    exclude: str | Path | None = None,
    classes: str | None = None,
) -> Dataset:
    """Load a dataset by kind.

    Args:
        kind: one of :data:`DATASETS`.
        data_root: root for ``voc07``, ``voc12``, ``coco20k`` (else ``$OBJDISC_DATA_ROOT``).
        images: image folder for ``coco`` and ``folder``.
        annotations: COCO instances json for ``coco``.
        split: VOC image set.
        no_hard: VOC only: drop difficult / truncated objects.
        exclude: a folder whose files are never images of the set (the command's own ``--out``).
        classes: ``class-folders`` and ``tars``: which class folders or shards (names, ``START:STOP``
            or ``@FILE``); ``None``: all.

    Raises:
        DatasetError: an unknown kind, an argument the kind does not take, or what its loader refuses.
    """
    args = DatasetArgs(kind, data_root, images, annotations, split, no_hard, classes)
    entry = args.kind
    given = {"images": images is not None, "annotations": annotations is not None}
    given |= {"split": split != "trainval", "no_hard": bool(no_hard), "classes": classes is not None}
    unused = [_FLAGS[name] for name, is_given in given.items() if is_given and name not in entry.takes]
    if unused:
        uses = ", ".join(sorted(_FLAGS.get(t, "--data-root") for t in entry.takes))
        raise DatasetError(f"--dataset {kind} does not take {', '.join(unused)} (it reads {uses})")
    return entry.load(args, Path(exclude) if exclude is not None else None)


__all__ = ["DATASETS", "Dataset", "DatasetArgs", "DatasetError", "DatasetKind", "ImageRecord", "load_dataset"]
