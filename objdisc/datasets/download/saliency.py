"""``objdisc data download ecssd|duts-te|dut-omron|duts-tr``: fetch, unpack and check a saliency benchmark.

Each archive (:data:`objdisc.datasets.download.sources.SALIENCY_ARCHIVES`) is downloaded with
resume and retries (or taken from ``--archive``), must be a zip, and is unpacked into the
dataset's folder under the data root (``ECSSD/``, ``DUTS-TE/``, ``DUT-OMRON/``); a zip inside it
(DUT-OMRON's ``.zip.zip``) is unpacked too. The dataset is verified by what it unpacks to: the
loader finds its image and mask folders, every image has its mask, and there are as many images
as the published set. No checksum is published for these archives: the md5 and sha256 of each
one fetched are recorded in the marker, so two copies can be compared.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from objdisc.datasets.download.extract import extract
from objdisc.datasets.download.http import md5_file
from objdisc.datasets.download.sources import Source, saliency_sources
from objdisc.datasets.saliency import SALIENCY_SETS, dataset_folder, load_saliency_set
from objdisc.errors import DatasetError
from objdisc.utils.hashing import sha256_file

Fetch = Callable[[Source, Mapping[str, Path], Path, "bool | None", str], tuple[Path, str]]


def is_zip(path: Path) -> str | None:
    """``None`` when ``path`` is a zip archive, else what is wrong (the download's content check)."""
    return None if zipfile.is_zipfile(path) else "not a zip archive (an error page?)"


def get_saliency(
    kind: str,
    root: Path,
    mirror: str | None,
    local: Mapping[str, Path],
    progress: bool | None,
    fetch: Fetch,
    mark: Callable[[Path, list[dict[str, Any]]], None],
) -> str:
    """Fetch, unpack and verify ``kind`` under ``root`` (module docstring).

    Args:
        fetch: gives a verified local copy of a source (the given archive, or a download).
        mark: writes the dataset's download marker.

    Raises:
        DatasetError: an archive that is not a zip, or a dataset that does not unpack complete.
    """
    spec = SALIENCY_SETS[kind]
    folder = dataset_folder(spec, root)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for source in saliency_sources(kind, mirror):
        path, origin = fetch(source, local, root / "downloads", progress, kind)
        if (wrong := is_zip(path)) is not None:
            if source.filename not in local:
                path.unlink()  # not kept for a rerun to trust
            raise DatasetError(f"{path}: {wrong}; it should be {source.filename} from {source.urls[0]}")
        files.append(
            {"file": source.filename, "from": origin, "md5": md5_file(path), "sha256": sha256_file(path),
             "size": path.stat().st_size}
        )  # fmt: skip
        extract(path, folder)
        for inner in [*folder.glob("*.zip"), *folder.glob("*/*.zip")]:  # an archive inside the archive
            extract(inner, inner.parent)
            inner.unlink()
        if source.filename not in local:
            path.unlink()  # unpacked; keep the disk
    dataset = load_saliency_set(kind, root)
    if len(dataset.records) != spec.n_images:
        raise DatasetError(
            f"{folder}: unpacked {len(dataset.records)} images with masks, not the {spec.n_images} of {kind}; the "
            "archives are not the published ones (delete the folder and download again, or pass the right --archive)"
        )
    mark(folder, [*files, {"check": f"{spec.n_images} images, each with its mask"}])
    return f"{kind}: {spec.n_images} images with masks unpacked and checked in {folder}"


__all__ = ["get_saliency", "is_zip"]
