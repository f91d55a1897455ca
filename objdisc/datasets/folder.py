"""Any folder of images, no ground truth (boxes only)."""

from __future__ import annotations

from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES, Dataset, DatasetError, ImageRecord, require


def load_folder(images: Path, exclude: Path | None = None) -> Dataset:
    """Every image file below ``images`` (recursively), sorted by relative path.

    Image ids are 1-based positions in that order; ``gt.json`` maps each id to its file. A
    symbolic link with an image suffix is listed even when broken, so that the run reports it
    under ``skipped`` instead of dropping it unseen. Nothing below ``exclude`` (the command's
    own ``--out``, which may lie inside the image folder and hold its pictures) is listed.
    """
    require(images, "a folder of images")
    if not images.is_dir():
        raise DatasetError(f"{images}: not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    paths = sorted(
        p
        for p in images.rglob("*")
        if (p.is_file() or p.is_symlink())
        and p.suffix.lower() in IMAGE_SUFFIXES
        and (skip is None or not p.resolve().is_relative_to(skip))
    )
    if not paths:
        raise DatasetError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    records = [ImageRecord(i + 1, p, p.relative_to(images).as_posix()) for i, p in enumerate(paths)]
    return Dataset(f"folder/{images.name}", images, records, has_gt=False)
