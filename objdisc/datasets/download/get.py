"""``objdisc data download`` and ``objdisc data status``: each dataset in one call.

A dataset that was fetched and verified gets a marker file (``.objdisc-download.json``) with
what was checked; a second call finds it and does nothing. Interrupted downloads resume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.datasets.base import IMAGE_SUFFIXES
from objdisc.datasets.coco import COCO20K_LIST, COCO20K_SEL, COCO_VAL2017_ANNOTATIONS
from objdisc.datasets.download.coco20k import build_coco20k, fetch_images, read_list
from objdisc.datasets.download.extract import extract
from objdisc.datasets.download.http import DownloadError, download, md5_file
from objdisc.datasets.download.saliency import get_saliency
from objdisc.datasets.download.sources import (
    DOWNLOADABLE,
    Source,
    coco20k_list_source,
    coco_2017_sources,
    coco_annotations_source,
    coco_train_images_source,
    known_archives,
    voc_source,
)
from objdisc.datasets.saliency import SALIENCY_SETS, dataset_folder, find_dir
from objdisc.datasets.voc import YEARS
from objdisc.errors import DatasetError
from objdisc.utils.jsonio import read_json, write_json_atomic
from objdisc.utils.provenance import now_iso

logger = logging.getLogger(__name__)

EXPECTED_IMAGES = {
    "voc07": 5011,
    "voc12": 11540,
    "coco20k": 19817,
    "coco_val2017": 5000,
    **{kind: spec.n_images for kind, spec in SALIENCY_SETS.items()},
}
MARKER = ".objdisc-download.json"


def dataset_dir(kind: str, root: Path) -> Path:
    """Where a dataset lives under the data root (where its download marker is)."""
    if kind == "coco_val2017":
        return root / "COCO" / "images" / "val2017"
    if kind in SALIENCY_SETS:
        return dataset_folder(SALIENCY_SETS[kind], root)
    return root / "VOCdevkit" / f"VOC{YEARS[kind]}" if kind in YEARS else root / "COCO"


def get_dataset(
    kind: str,
    root: Path,
    *,
    mirror: str | None = None,
    archives: Sequence[Path] | Mapping[str, Path] = (),
    full_zip: bool = False,
    workers: int = 16,
    progress: bool | None = None,
) -> str:
    """Download, verify and unpack ``kind`` (``voc07``, ``voc12``, ``coco20k``) under ``root``.

    Args:
        kind: the dataset.
        root: the data root (``--data-root``).
        mirror: one base URL holding every file (see :mod:`objdisc.datasets.download.sources`); ``None``:
            ``$OBJDISC_MIRROR`` if set.
        archives: local archives to use instead of downloading, recognised by file name, or by
            size and md5 when renamed (:func:`match_archives`; or its result), and checked
            against the known md5 like a download.
        full_zip: COCO20k: take ``train2014.zip`` (13 GB) instead of the 19,817 single images.
        workers: parallel image downloads for COCO20k.
        progress: progress bars (``None``: on a terminal).

    Returns:
        A one-line account of what was done.
    """
    if kind not in DOWNLOADABLE:
        raise DatasetError(f"cannot download {kind!r}; downloadable: {', '.join(DOWNLOADABLE)}")
    mirror = mirror or os.environ.get("OBJDISC_MIRROR") or None
    folder = dataset_dir(kind, root)
    if (status := dataset_status(kind, root)).verified and status.all_listed_present:
        return f"{kind}: already complete and verified in {folder}"
    local = archives if isinstance(archives, Mapping) else match_archives(archives)
    if kind in YEARS:
        return _get_voc(kind, root, voc_source(YEARS[kind], mirror), local, progress)
    if kind == "coco_val2017":
        return _get_coco_val2017(root, mirror, local, progress)
    if kind in SALIENCY_SETS:
        return get_saliency(kind, root, mirror, local, progress, _archive, _mark)
    return _get_coco20k(root, mirror, local, full_zip, workers, progress)


def match_archives(archives: Sequence[Path], kinds: Sequence[str] | None = None) -> dict[str, Path]:
    """Which known archive each ``--archive`` file is: by its name, else by its size and md5.

    Args:
        archives: the files given.
        kinds: the datasets being fetched; an archive of none of them is refused (``None``:
            not checked).

    Returns:
        Known archive file name -> the file given for it.

    Raises:
        DatasetError: a file that is missing, is no known archive, or is not needed.
    """
    known = known_archives()
    out: dict[str, Path] = {}
    for given in archives:
        path = Path(given).expanduser()
        if not path.is_file():
            raise DatasetError(f"--archive {path}: file not found")
        name = path.name if path.name in known else _recognise(path, known)
        kind = known[name][2]
        if kinds is not None and kind not in kinds:
            raise DatasetError(
                f"--archive {path}: is {name}, an archive of {kind}, which is not being fetched; "
                f"add {kind} to the datasets or leave the archive out"
            )
        out[name] = path
    return out


def _recognise(path: Path, known: Mapping[str, tuple[str | None, int | None, str]]) -> str:
    """The known archive a renamed file is, by size then md5."""
    size = path.stat().st_size
    same_size = [name for name, (_, known_size, _) in known.items() if known_size == size]
    if not same_size:
        names = ", ".join(f"{name} ({s:,} bytes)" if s else name for name, (_, s, _) in known.items())
        raise DatasetError(
            f"--archive {path}: neither its name nor its size ({size:,} bytes) is that of a known archive "
            f"({names}); give the archive as downloaded"
        )
    md5 = md5_file(path)
    for name in same_size:
        if known[name][0] == md5:
            logger.info("--archive %s: recognised as %s by its size and md5", path, name)
            return name
    raise DatasetError(
        f"--archive {path}: has the size of {same_size[0]} but md5 {md5}, not its {known[same_size[0]][0]}: "
        "a damaged copy; download it again"
    )


def _archive(
    source: Source, local: Mapping[str, Path], downloads: Path, progress: bool | None, kind: str = "voc07"
) -> tuple[Path, str]:
    """A verified copy of ``source``: the local archive given for it, or a download."""
    if source.filename in local:
        path = local[source.filename]
        if not path.is_file():
            raise DatasetError(f"{path}: archive not found")
        if source.md5 and (actual := md5_file(path)) != source.md5:
            raise DatasetError(f"{path}: md5 {actual} does not match the known {source.md5} of {source.filename}")
        return path, str(path)
    try:
        path = download(source.urls, downloads / source.filename, md5=source.md5, size=source.size, progress=progress)
    except DownloadError as exc:
        root = downloads.parent
        raise DownloadError(
            f"{exc}. To go on: fetch {source.filename} another way and run `objdisc data download {kind} "
            f"--data-root {root} --archive FILE`, or name a server that holds it with `objdisc data download "
            f"{kind} --mirror URL` (or OBJDISC_MIRROR=URL, which `objdisc run --download` reads too); a rerun "
            "resumes a partial download"
        ) from exc
    return path, source.urls[0]


def _mark(folder: Path, entries: list[dict[str, Any]]) -> None:
    write_json_atomic(folder / MARKER, {"verified": True, "date": now_iso(), "files": entries})


def _get_voc(kind: str, root: Path, source: Source, local: Mapping[str, Path], progress: bool | None) -> str:
    path, origin = _archive(source, local, root / "downloads", progress, kind)
    extract(path, root)
    folder = dataset_dir(kind, root)
    if not (folder / "ImageSets" / "Main" / "trainval.txt").is_file():
        raise DatasetError(f"{path}: unpacked, but {folder}/ImageSets/Main/trainval.txt is not there")
    _mark(folder, [{"file": source.filename, "from": origin, "md5": source.md5, "size": source.size}])
    if source.filename not in local:
        path.unlink()  # the tar is unpacked and verified; keep the disk
    return f"{kind}: {source.filename} verified and unpacked into {folder}"


def _get_coco20k(
    root: Path, mirror: str | None, local: Mapping[str, Path], full_zip: bool, workers: int, progress: bool | None
) -> str:
    coco, downloads = root / "COCO", root / "downloads"
    files = []
    list_source = coco20k_list_source(mirror)
    list_path = coco / COCO20K_LIST
    if not list_path.is_file():
        download(list_source.urls, list_path, md5=list_source.md5, size=list_source.size, progress=progress)
    files.append({"file": list_source.filename, "from": list_source.urls[0], "md5": list_source.md5})

    annotations = coco / "annotations"
    selected = annotations / COCO20K_SEL
    if not selected.is_file():
        instances = annotations / "instances_train2014.json"
        if not instances.is_file():
            source = coco_annotations_source(mirror)
            path, origin = _archive(source, local, downloads, progress, "coco20k")
            extract(path, coco)
            files.append({"file": source.filename, "from": origin, "md5": source.md5})
            if source.filename not in local:
                path.unlink()
        counts = build_coco20k(instances, list_path, selected)
        logger.info("built %s: %d images, %d annotations", selected, counts["images"], counts["annotations"])

    images_dir = coco / "images" / "train2014"
    if full_zip:
        source = coco_train_images_source(mirror)
        path, origin = _archive(source, local, downloads, progress, "coco20k")
        extract(path, coco / "images")
        files.append({"file": source.filename, "from": origin, "md5": source.md5})
        if source.filename not in local:
            path.unlink()
        how = "train2014.zip"
    else:
        images = read_json(selected)["images"]
        counts = fetch_images(images, images_dir, mirror=mirror, workers=workers, progress=progress)
        files.append({"file": "train2014/*.jpg", "from": "per-image coco_url", "check": "decodes at annotated size"})
        how = f"{counts['fetched']} images fetched, {counts['present']} already there"
    _mark(coco, files)
    return f"coco20k: {how}; annotations in {selected}"


def _get_coco_val2017(root: Path, mirror: str | None, local: Mapping[str, Path], progress: bool | None) -> str:
    coco, downloads = root / "COCO", root / "downloads"
    files = []
    annotations_source, images_source = coco_2017_sources(mirror)
    if not (coco / "annotations" / COCO_VAL2017_ANNOTATIONS).is_file():
        path, origin = _archive(annotations_source, local, downloads, progress, "coco_val2017")
        extract(path, coco)  # annotations/instances_val2017.json (and train2017's, captions, keypoints)
        files.append({"file": annotations_source.filename, "from": origin, "md5": annotations_source.md5})
        if annotations_source.filename not in local:
            path.unlink()
    folder = dataset_dir("coco_val2017", root)
    if dataset_status("coco_val2017", root).found_images < EXPECTED_IMAGES["coco_val2017"]:
        path, origin = _archive(images_source, local, downloads, progress, "coco_val2017")
        extract(path, coco / "images")  # images/val2017/*.jpg
        files.append({"file": images_source.filename, "from": origin, "md5": images_source.md5})
        if images_source.filename not in local:
            path.unlink()
    _mark(folder, files)
    return f"coco_val2017: verified and unpacked in {folder}"


@dataclass(frozen=True)
class DatasetStatus:
    """What is on disk for one dataset.

    Attributes:
        kind: ``voc07``, ``voc12`` or ``coco20k``.
        folder: where it lives.
        expected_images: images of the real split (VOC trainval, COCO20k list).
        listed_images: images the split file on disk lists (0 when it is missing).
        found_images: listed images present on disk.
        expected_annotations: annotation files (VOC) or selected images (COCO20k) expected.
        found_annotations: those present.
        verified: a download marker says the archives' checksums were checked.
    """

    kind: str
    folder: Path
    expected_images: int
    listed_images: int
    found_images: int
    expected_annotations: int
    found_annotations: int
    verified: bool

    @property
    def complete(self) -> bool:
        """Every image and annotation of the real split is there."""
        return self.found_images == self.expected_images and self.found_annotations == self.expected_annotations

    @property
    def all_listed_present(self) -> bool:
        """The split file is there and every image and annotation it lists is too."""
        return self.listed_images > 0 and self.found_images == self.found_annotations == self.listed_images


def dataset_status(kind: str, root: Path) -> DatasetStatus:
    """Count what is on disk for ``kind`` under ``root`` (reads no image)."""
    folder = dataset_dir(kind, root)
    expected = EXPECTED_IMAGES[kind]
    verified = (folder / MARKER).is_file()
    if kind in YEARS:
        split = folder / "ImageSets" / "Main" / "trainval.txt"
        stems = split.read_text().split() if split.is_file() else []
        images = {p.stem for p in (folder / "JPEGImages").glob("*.jpg")} if stems else set()
        xmls = {p.stem for p in (folder / "Annotations").glob("*.xml")} if stems else set()
        found_images = sum(s in images for s in stems)
        found_xml = sum(s in xmls for s in stems)
        return DatasetStatus(kind, folder, expected, len(stems), found_images, expected, found_xml, verified)
    if kind in SALIENCY_SETS:
        return _saliency_status(kind, root, folder, verified)
    if kind == "coco_val2017":
        annotations = root / "COCO" / "annotations" / COCO_VAL2017_ANNOTATIONS
        names = [i["file_name"] for i in read_json(annotations)["images"]] if annotations.is_file() else []
        present = {p.name for p in folder.glob("*.jpg")}
        found = sum(n in present for n in names)
        return DatasetStatus(kind, folder, expected, len(names), found, expected, len(names), verified)
    list_path = folder / COCO20K_LIST
    ids = read_list(list_path) if list_path.is_file() else []
    present = {p.name for p in (folder / "images" / "train2014").glob("*.jpg")} if ids else set()
    found_images = sum(f"COCO_train2014_{i:012d}.jpg" in present for i in ids)
    selected = folder / "annotations" / COCO20K_SEL
    found_ann = len(read_json(selected)["images"]) if selected.is_file() else 0
    return DatasetStatus(kind, folder, expected, len(ids), found_images, expected, found_ann, verified)


def _saliency_status(kind: str, root: Path, folder: Path, verified: bool) -> DatasetStatus:
    """Images found in the set's image folder, and how many of them have their mask."""
    spec = SALIENCY_SETS[kind]
    images, masks = find_dir(folder, spec.image_dirs), find_dir(folder, spec.mask_dirs)
    stems = sorted(p.stem for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images else []
    have = {p.stem for p in masks.glob("*.png")} if masks else set()
    with_mask = sum(s in have for s in stems)
    return DatasetStatus(kind, folder, spec.n_images, len(stems), len(stems), spec.n_images, with_mask, verified)
