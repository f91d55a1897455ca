"""``objdisc data download`` and ``objdisc data status``: fetch, verify and inspect the benchmark datasets
(:mod:`objdisc.datasets.download.get`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from objdisc.datasets import resolve_data_root
from objdisc.datasets.download.get import DOWNLOADABLE, dataset_status, get_dataset, match_archives
from objdisc.utils.text_table import text_table


@dataclass(frozen=True)
class DownloadConfig:
    """Everything ``objdisc data download`` takes.

    Attributes:
        kinds: the datasets (``all``: every downloadable one).
        data_root: where they go (``None``: ``$OBJDISC_DATA_ROOT``).
        mirror: one base URL holding every file, flat.
        archives: local archives to use instead of downloading (known by name, or by size and md5).
        full_zip: COCO20k: take train2014.zip (13 GB) instead of 19,817 single images.
        workers: parallel image fetches.
    """

    kinds: list[str]
    data_root: Path | None = None
    mirror: str | None = None
    archives: list[Path] = field(default_factory=list)
    full_zip: bool = False
    workers: int = 16


def download(config: DownloadConfig, progress: bool | None = None) -> Iterator[str]:
    """Fetch, verify and unpack the datasets (resumable; a rerun skips what is done); yields a line
    per dataset as it is done.

    Raises:
        ObjdiscError: no data root, an archive that is none of the datasets', a failed download
            (naming how to go on: ``--archive``, ``--mirror``).
    """
    root = resolve_data_root(config.data_root)
    wanted = list(DOWNLOADABLE if "all" in config.kinds else dict.fromkeys(config.kinds))
    local = match_archives(config.archives, wanted)
    for kind in wanted:
        yield get_dataset(
            kind, root, mirror=config.mirror, archives=local, full_zip=config.full_zip, workers=config.workers,
            progress=progress,
        )  # fmt: skip


def status(data_root: Path | None = None) -> str:
    """What is under the data root: expected vs found images and annotations, verified or not.

    Raises:
        ObjdiscError: no data root.
    """
    root = resolve_data_root(data_root)
    rows = [("dataset", "images", "annotations", "verified", "state", "folder")]
    for kind in DOWNLOADABLE:
        s = dataset_status(kind, root)
        state = "complete" if s.complete else ("missing" if s.found_images == 0 else "incomplete")
        rows.append(
            (
                kind,
                f"{s.found_images}/{s.expected_images}",
                f"{s.found_annotations}/{s.expected_annotations}",
                "yes" if s.verified else "no",
                state,
                str(s.folder),
            )
        )
    return text_table(rows)


__all__ = ["DownloadConfig", "download", "status"]
