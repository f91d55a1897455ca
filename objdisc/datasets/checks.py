"""Checks of a dataset before a run: its annotation warnings, images without ground truth, and
annotations made for photos of another size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from objdisc.datasets.base import Dataset, DatasetError, ImageRecord

logger = logging.getLogger(__name__)

SHOWN_WARNINGS = 20


def warn_dataset(dataset: Dataset) -> None:
    """Log the dataset's annotation warnings: the first :data:`SHOWN_WARNINGS`, then how many more."""
    for warning in dataset.warnings[:SHOWN_WARNINGS]:
        logger.warning("%s: %s", warning["file_name"], warning["message"])
    if len(dataset.warnings) > SHOWN_WARNINGS:
        more = len(dataset.warnings) - SHOWN_WARNINGS
        logger.warning("... and %d more annotation warnings (all of them in metrics.json: dataset_warnings)", more)


SIZE_SAMPLE = 64  # images whose header is read before a run, to catch annotations of other sizes


def check_annotated_sizes(records: Sequence[ImageRecord], where: Path | None = None) -> None:
    """Refuse, before any work, a dataset whose images are mostly not the size their annotations say
    (the photos were resized after annotation: every box would be scored at the wrong scale).

    Reads the headers of up to :data:`SIZE_SAMPLE` annotated images spread over the set. A few
    mismatches only warn; each image's size is checked again as it is decoded
    (``metrics.json`` ``size_mismatch``).

    Raises:
        DatasetError: more than half of the images read disagree with their annotation.
    """
    from objdisc.images import header_size

    annotated = [r for r in records if r.width and r.height]
    if not annotated:
        return
    step = max(1, len(annotated) // SIZE_SAMPLE)
    seen, wrong = 0, []
    for record in annotated[::step][:SIZE_SAMPLE]:
        try:
            with open(record.path, "rb") as f:
                size = header_size(f.read(1 << 18))
        except OSError:
            continue
        if size is None:
            continue
        seen += 1
        if size != (record.height, record.width):
            wrong.append(f"{record.file_name} is {size[1]}x{size[0]}, annotated {record.width}x{record.height}")
    if seen and len(wrong) * 2 > seen:
        raise DatasetError(
            f"{where or 'the annotations'}: {len(wrong)} of {seen} images read are not the size their annotation "
            f"says ({'; '.join(wrong[:2])}): were the photos resized after annotation? The boxes are for other "
            "pixels; give the annotations of these very images (or the images at their annotated size)"
        )
    if wrong:
        logger.warning(
            "%d of %d images read are not the size their annotation says (%s); their boxes are scored as annotated",
            len(wrong), seen, "; ".join(wrong[:2]),
        )  # fmt: skip


def warn_no_ground_truth(dataset: Dataset, records: Sequence[ImageRecord]) -> None:
    """Say loudly which images have no ground-truth box: CorLoc leaves them out."""
    if not dataset.has_gt:
        return
    lacking = [r.file_name for r in records if r.no_ground_truth]
    if len(lacking) == len(records):
        logger.warning("none of the %d images has a ground-truth box: there will be boxes but no CorLoc", len(records))
    elif lacking:
        logger.warning(
            "%d of %d images have no ground-truth box (%s%s): they are left out of CorLoc "
            "and listed as no_ground_truth in metrics.json",
            len(lacking),
            len(records),
            ", ".join(lacking[:3]),
            ", ..." if len(lacking) > 3 else "",
        )


FOUND_SAMPLE = 256  # records whose file is looked for before a run


def check_images_found(records: Sequence[ImageRecord], where: str = "--images") -> None:
    """Refuse, before any work, a dataset whose images are mostly not where its records say.

    Looks for up to :data:`FOUND_SAMPLE` files spread over the records. A few missing only warn
    (they are skipped, each named, when the run reaches them); more than half missing is a wrong
    image folder, or file names with a folder prefix the folder does not have (COCO files
    written with ``train2017/NAME.jpg``): refused, naming the first missing file and the fix.

    Raises:
        DatasetError: more than half of the files looked for are missing.
    """
    if not records:
        return
    step = max(1, len(records) // FOUND_SAMPLE)
    sample = records[::step][:FOUND_SAMPLE]
    missing = [r for r in sample if not (r.path.exists() or r.path.is_symlink())]
    if not missing:
        return
    if len(missing) * 2 <= len(sample):
        logger.warning(
            "%d of %d images looked for are missing (first: %s); they will be skipped",
            len(missing), len(sample), missing[0].path,
        )  # fmt: skip
        return
    first = missing[0]
    raise DatasetError(
        f"{len(missing)} of the {len(sample)} images looked for are missing (first: {first.path}); "
        + _missing_hint(first, where)
    )


def _missing_hint(record: ImageRecord, where: str) -> str:
    """What to do about a record whose file is missing: a folder prefix to drop or add, or the folder."""
    path, name = Path(record.path), record.file_name
    text = str(path)
    root = Path(text[: -len(name)]) if text.endswith(name) and len(text) > len(name) else path.parent
    parts = Path(name).parts
    if len(parts) > 1 and (root / parts[-1]).exists():
        prefix = "/".join(parts[:-1]) + "/"
        if (root.parent / name).exists():
            return (
                f"the file names carry the folder prefix '{prefix}' and {root} holds the images without it: "
                f"give {where} {root.parent} (the folder that holds '{parts[0]}/')"
            )
        return (
            f"the file names carry the folder prefix '{prefix}', but {root} holds the images without it: "
            f"remove the prefix from the annotations' file_name entries (or give {where} the folder that holds it)"
        )
    if len(parts) == 1:
        below = [p for p in root.glob(f"*/{name}")] if root.is_dir() else []
        if below:
            return (
                f"{name} is in {below[0].parent}, a folder below {root}: give {where} {below[0].parent}"
            )
    return f"check {where}: it must be the folder the file names are relative to ({root})"


__all__ = [
    "FOUND_SAMPLE",
    "SHOWN_WARNINGS",
    "SIZE_SAMPLE",
    "check_annotated_sizes",
    "check_images_found",
    "warn_dataset",
    "warn_no_ground_truth",
]
