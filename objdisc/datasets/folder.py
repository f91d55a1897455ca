"""Any folder of images, no ground truth (boxes only)."""

from __future__ import annotations

from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES, Dataset, DatasetError, ImageRecord, require
from objdisc.datasets.listing import list_images


def load_folder(images: Path, exclude: Path | None = None) -> Dataset:
    """Every image file below ``images`` (recursively), sorted by relative path.

    Image ids are 1-based positions in that order; ``gt.json`` maps each id to its file. What
    is listed is :func:`objdisc.datasets.listing.list_images`'s: links to folders followed, a
    broken link with an image suffix and an image in a format objdisc does not decode listed, so
    that the run reports them under ``skipped`` instead of dropping them unseen. Nothing below
    ``exclude`` (the command's own ``--out``, which may lie inside the image folder and hold its
    pictures) is listed.
    """
    require(images, "a folder of images")
    if not images.is_dir():
        raise DatasetError(f"{images}: not a folder")
    listing = list_images(images, exclude)
    if not listing.images:
        raise DatasetError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    records = [
        ImageRecord(i + 1, p, p.relative_to(images).as_posix(), error=listing.errors.get(p))
        for i, p in enumerate(listing.images)
    ]
    return Dataset(f"folder/{images.name}", images, records, has_gt=False, warnings=listing.warnings)
