"""Images in tar shards, as WebDataset lays them out (``shard-000000.tar`` holding ``KEY.jpg``,
``KEY.json``, ...), read in place: no shard is unpacked.

Each image member becomes a record whose ``path`` is its shard and whose
:attr:`~objdisc.datasets.base.ImageRecord.member` says where its bytes are; its ``file_name`` is
``SHARD/MEMBER`` (``shard-000000.tar/000123.jpg``). Members that are not images (a sample's
``.json``, ``.cls``, ``.txt``) are left out; images in a format objdisc does not decode are listed
with the reason they will be skipped. The ``s``-th shard (sorted by name, from 0) holds image ids
``s * 1,000,000 + 1`` upward, so any subset of shards (``--classes`` takes shard names too)
keeps the ids of the whole set.

A shard that cannot be read to its end (cut short, damaged) keeps the members listed before the
damage, and says so in the dataset's warnings: the rest of that shard is left out, nothing else.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES, Dataset, DatasetError, ImageRecord, require
from objdisc.datasets.class_folders import parse_classes
from objdisc.datasets.listing import UNREAD_SUFFIXES, unread_message
from objdisc.images import Member

SHARD_STRIDE = 1_000_000  # ids per shard


def shard_files(images: Path) -> list[Path]:
    """The tar shards: ``images`` itself when it is one, else the ``*.tar`` files in it, sorted."""
    if images.is_file():
        return [images]
    return sorted(p for p in images.iterdir() if p.suffix == ".tar" and p.is_file())


def list_members(shard: Path) -> tuple[list[tuple[str, Member]], str | None]:
    """``([(member name, where its bytes are), ...], why the listing stopped early or None)``:
    the regular files of an uncompressed tar, in their order in the shard."""
    found: list[tuple[str, Member]] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    found.append((info.name, Member(info.offset_data, info.size, info.name)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        return found, f"{type(exc).__name__}: {exc}"
    return found, None


def load_tars(images: Path, shards: str | None = None) -> Dataset:
    """The images of the tar shards in ``images`` (or the one shard ``images`` is).

    Args:
        images: a folder of ``*.tar`` shards, or one shard.
        shards: which shards (``--classes`` syntax: names, ``START:STOP`` or ``@FILE``); ``None``: all.

    Raises:
        DatasetError: no shard, an unknown shard name, no image member at all.
    """
    require(images, "a folder of tar shards (or one .tar)")
    files = shard_files(images)
    if not files:
        raise DatasetError(f"{images}: no .tar shards in it; give the folder of the shards (or one .tar)")
    root = images if images.is_dir() else images.parent
    index = {p.name: i for i, p in enumerate(files)}
    records, warnings = [], []
    for name in parse_classes(shards, list(index), "--classes"):
        shard = root / name
        members, stopped = list_members(shard)
        if stopped is not None:
            why = f"the shard cannot be read past member {len(members)} ({stopped}): the rest of it is left out"
            warnings.append({"file_name": name, "message": why})
        k = 0
        for member_name, member in members:
            suffix = Path(member_name).suffix.lower()
            if suffix not in IMAGE_SUFFIXES and suffix not in UNREAD_SUFFIXES:
                continue  # a sample's other files (.json, .cls, .txt)
            error = None
            if suffix in UNREAD_SUFFIXES:
                error = unread_message(Path(f"{shard} (member {member_name})"), UNREAD_SUFFIXES[suffix])
            image_id = index[name] * SHARD_STRIDE + k + 1
            records.append(
                ImageRecord(image_id, shard, f"{name}/{member_name}", error=error, group=name, member=member)
            )
            k += 1
            if k >= SHARD_STRIDE:
                raise DatasetError(f"{shard}: more than {SHARD_STRIDE - 1:,} images in one shard; split it")
    if not records:
        raise DatasetError(f"{images}: no image members ({', '.join(IMAGE_SUFFIXES)}) in the shards taken")
    return Dataset(f"tars/{images.name}", root, records, has_gt=False, warnings=warnings)


__all__ = ["SHARD_STRIDE", "list_members", "load_tars", "shard_files"]
