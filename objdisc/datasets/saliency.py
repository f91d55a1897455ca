"""Saliency datasets: images with a ground-truth foreground mask each (ECSSD, DUTS-TE, DUT-OMRON, DUTS-TR).

Each lives in its folder under the data root as its archives unpack (``objdisc data download``
puts them there), or as TokenCut's ``datasets/*/download_data.sh`` leaves them (``img/``, ``gt/``):

```
ECSSD/images/*.jpg                      ECSSD/ground_truth_mask/*.png        (1,000)
DUTS-TE/DUTS-TE-Image/*.jpg             DUTS-TE/DUTS-TE-Mask/*.png           (5,019)
DUT-OMRON/DUT-OMRON-image/*.jpg         DUT-OMRON/pixelwiseGT-new-PNG/*.png  (5,168)
DUTS-TR/DUTS-TR-Image/*.jpg             DUTS-TR/DUTS-TR-Mask/*.png           (10,553)
```

DUTS-TR is FOUND's training set (``objdisc train-head`` reads its images only; its masks are
never used for training, and score a run on it as on the others).

The image and mask folders are found up to two levels below the dataset's folder (an archive
may add a level). Images are taken in sorted file-name order (get_saliency.py's
``sorted(os.listdir(...))``), ids 1-based in that order; each image's mask is the PNG of its
stem in the mask folder (get_saliency.py's ``.jpg`` -> ``.png``). ``--dataset saliency --images
DIR --annotations MASK_DIR`` takes any such pair of folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES, Dataset, DatasetError, ImageRecord


@dataclass(frozen=True)
class SaliencySet:
    """One saliency benchmark's layout.

    Attributes:
        kind: the ``--dataset`` name.
        folders: its folder under the data root (objdisc's name first, then TokenCut's).
        image_dirs: names of its image folder (the archive's, then TokenCut's ``img``).
        mask_dirs: names of its mask folder (the archive's, then TokenCut's ``gt``).
        n_images: images in the published set.
    """

    kind: str
    folders: tuple[str, ...]
    image_dirs: tuple[str, ...]
    mask_dirs: tuple[str, ...]
    n_images: int


SALIENCY_SETS: dict[str, SaliencySet] = {
    "ecssd": SaliencySet("ecssd", ("ECSSD",), ("images", "img"), ("ground_truth_mask", "gt"), 1000),
    "duts-te": SaliencySet(
        "duts-te", ("DUTS-TE", "DUTS_Test"), ("DUTS-TE-Image", "img"), ("DUTS-TE-Mask", "gt"), 5019
    ),
    "dut-omron": SaliencySet(
        "dut-omron", ("DUT-OMRON", "DUT_OMRON"), ("DUT-OMRON-image", "img"), ("pixelwiseGT-new-PNG", "gt"), 5168
    ),
    "duts-tr": SaliencySet(
        "duts-tr", ("DUTS-TR", "DUTS_Train"), ("DUTS-TR-Image", "img"), ("DUTS-TR-Mask", "gt"), 10553
    ),
}


def dataset_folder(spec: SaliencySet, root: Path) -> Path:
    """The set's folder under the data root (the first of its names that exists, else objdisc's)."""
    for name in spec.folders:
        if (root / name).is_dir():
            return root / name
    return root / spec.folders[0]


def find_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first folder called one of ``names`` (in that order) at most two levels below ``folder``."""
    for name in names:
        for candidate in (folder / name, *sorted(folder.glob(f"*/{name}")), *sorted(folder.glob(f"*/*/{name}"))):
            if candidate.is_dir() and "__MACOSX" not in candidate.parts:
                return candidate
    return None


def load_saliency_set(kind: str, root: Path) -> Dataset:
    """ECSSD, DUTS-TE, DUT-OMRON or DUTS-TR under the data root (module docstring).

    Raises:
        DatasetError: the folder, its image folder or its mask folder is missing (naming where
            they were looked for and the command that fetches them), or an image has no mask.
    """
    spec = SALIENCY_SETS[kind]
    folder = dataset_folder(spec, root)
    fetch = f"`objdisc data download {kind} --data-root {root}` fetches it"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not found; expected the {kind} dataset there ({fetch})")
    images = find_dir(folder, spec.image_dirs)
    masks = find_dir(folder, spec.mask_dirs)
    for found, names, what in ((images, spec.image_dirs, "image"), (masks, spec.mask_dirs, "mask")):
        if found is None:
            raise DatasetError(
                f"{folder}: no {what} folder ({' or '.join(names)}) in it or two levels below; the {kind} archives "
                f"unpack to {spec.folders[0]}/{spec.image_dirs[0]} and {spec.folders[0]}/{spec.mask_dirs[0]} ({fetch})"
            )
    assert images is not None and masks is not None
    dataset = load_saliency(images, masks, kind)
    if len(dataset.records) != spec.n_images:
        dataset.warnings.append(
            {"file_name": str(images), "message": f"{len(dataset.records)} images, not the {spec.n_images} of {kind}"}
        )
    return dataset


def load_saliency(images: Path, masks: Path, name: str = "") -> Dataset:
    """Every image of ``images`` (sorted by file name) with the mask of its stem in ``masks``.

    Raises:
        DatasetError: either folder is missing or not a folder, there is no image, or an image
            has no mask (naming the first few).
    """
    for path, what in ((images, "--images: the image folder"), (masks, "--annotations: the mask folder")):
        if not path.is_dir():
            raise DatasetError(f"{path}: not a folder; expected {what} of a saliency dataset")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not paths:
        raise DatasetError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    records, missing = [], []
    for i, path in enumerate(paths):
        mask = masks / f"{path.stem}.png"
        if not mask.is_file():
            missing.append(mask)
        records.append(ImageRecord(i + 1, path, path.name, mask_path=mask))
    if missing:
        shown = ", ".join(str(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} of {len(paths)} images of {images} have no mask ({shown}); "
            f"each image needs the PNG of its stem in {masks}"
        )
    return Dataset(name or f"saliency/{images.name}", images, records, has_gt=False, has_saliency=True)


__all__ = ["SALIENCY_SETS", "SaliencySet", "dataset_folder", "find_dir", "load_saliency", "load_saliency_set"]
