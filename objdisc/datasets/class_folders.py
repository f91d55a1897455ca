"""A tree of one folder per class, as ImageNet's ``train/n01440764/*.JPEG``: no ground truth.

Each record keeps its class folder (:attr:`~objdisc.datasets.base.ImageRecord.group`) and its
file name relative to the tree's root (``n01440764/n01440764_10026.JPEG``, the ``file_name`` a
detector's data loader joins to the root, as CutLER's ImageNet pseudo-labels have it).

Image ids do not depend on which classes a run takes: the ``c``-th class folder (sorted by name,
from 0) holds ids ``c * 1,000,000 + 1`` upward, in the folder's sorted order. So runs over
subsets of the classes (``--classes``, CutLER's one job per few folders) and shards of one run
hold the ids the whole tree would, and merge into exactly the whole run's files.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES, Dataset, DatasetError, ImageRecord, require
from objdisc.datasets.listing import list_images

CLASS_STRIDE = 1_000_000  # ids per class folder


def class_folders(root: Path) -> list[str]:
    """The class folders under ``root`` (links to folders included), sorted by name."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def parse_classes(value: str | None, known: list[str], where: str = "--classes") -> list[str]:
    """The classes ``--classes`` names, in the tree's order: a comma list of folder names, a
    slice of the sorted folders (``0:100``, as CutLER's job index), or ``@FILE`` (one name a line).

    Raises:
        DatasetError: a class not in the tree (naming the nearest ones), an empty selection or a
            bad slice.
    """
    if value is None:
        return known
    text = value.strip()
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = ",".join(line.strip() for line in path.read_text().splitlines() if line.strip())
        except OSError as exc:
            raise DatasetError(f"{where} {value}: cannot read {path} ({exc.strerror or exc})") from None
    if ":" in text and "," not in text:
        start, _, stop = text.partition(":")
        try:
            chosen = known[slice(int(start) if start else None, int(stop) if stop else None)]
        except ValueError:
            raise DatasetError(f"{where} {value}: a slice of class folders is START:STOP, e.g. 0:100") from None
    else:
        wanted = [c.strip() for c in text.split(",") if c.strip()]
        missing = [c for c in wanted if c not in set(known)]
        if missing:
            near = difflib.get_close_matches(missing[0], known, n=3)
            hint = f" (nearest: {', '.join(near)})" if near else f" ({len(known)} class folders there)"
            raise DatasetError(f"{where}: {', '.join(missing[:5])} not a class folder of the tree{hint}")
        chosen = [c for c in known if c in set(wanted)]
    if not chosen:
        raise DatasetError(f"{where} {value}: selects no class folder of the {len(known)} there")
    return chosen


def load_class_folders(images: Path, classes: str | None = None, exclude: Path | None = None) -> Dataset:
    """The images of the class folders under ``images`` (all, or those ``classes`` names).

    Raises:
        DatasetError: no such folder, no class folder in it, an unknown class, a class folder of
            more than :data:`CLASS_STRIDE` images, or no image at all.
    """
    require(images, "a folder with one folder of images per class")
    if not images.is_dir():
        raise DatasetError(f"{images}: not a folder")
    known = class_folders(images)
    if not known:
        raise DatasetError(f"{images}: no class folders in it (a tree of ROOT/CLASS/IMAGE); for a flat folder of "
                           "images use --dataset folder")  # fmt: skip
    index = {name: i for i, name in enumerate(known)}
    records, warnings = [], []
    for name in parse_classes(classes, known):
        listing = list_images(images / name, exclude)
        if len(listing.images) >= CLASS_STRIDE:
            raise DatasetError(f"{images / name}: {len(listing.images):,} images, more than a class folder may hold "
                               f"({CLASS_STRIDE - 1:,}); split it")  # fmt: skip
        for k, path in enumerate(listing.images):
            relative = f"{name}/{path.relative_to(images / name).as_posix()}"
            image_id = index[name] * CLASS_STRIDE + k + 1
            records.append(ImageRecord(image_id, path, relative, error=listing.errors.get(path), group=name))
        warnings += [{**w, "file_name": f"{name}/{w['file_name']}"} for w in listing.warnings]
    if not records:
        raise DatasetError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders taken")
    # The name is the tree's, whatever classes were taken: runs over subsets are one dataset's parts.
    return Dataset(f"class-folders/{images.name}", images, records, has_gt=False, warnings=warnings)


__all__ = ["CLASS_STRIDE", "class_folders", "load_class_folders", "parse_classes"]
