"""Per-image results journaled as they finish, so a killed run resumes where it stopped.

One append-only JSON-lines file per process (``OUT/journal/rank<r>.jsonl``): a header line
with the settings that decide the objects and their hash, then one line per finished image
(``image_id``, ``file_name``, ``hw``, ``objects`` as :meth:`objdisc.objects.Objects.to_json`,
``error``). The header is written with the first image, so a run that fails before finishing
one leaves no journal behind.

Journals of objdisc 0.1 (settings without ``format``, entries with one ``box`` and ``seed``)
are read too: :func:`read_journals` takes the settings such a journal would hold as
``legacy`` and says when they matched, and the run's files read those entries as one object
with score 1 (:func:`objdisc.engine.run_files.entry_objects`).
Lines are flushed to the OS as they are written (a SIGKILL loses nothing written) and fsync'd
every few seconds (a machine crash loses at most those seconds). A torn last line from a kill
mid-write is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from objdisc.errors import ObjdiscError


class JournalMismatchError(ObjdiscError):
    """The journal in --out was written with other settings."""


class JournalWriteError(ObjdiscError):
    """The journal cannot be written (a full disk, a read-only folder)."""


def settings_key(settings: dict[str, Any]) -> str:
    """Stable hash of the settings that decide the boxes."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class JournalEntries(Mapping[int, dict[str, Any]]):
    """The journaled images by id, read from disk when asked (never all held in memory at once).

    Each image id maps to the winning line's place in its journal file; ``entries[image_id]``
    parses that line, :meth:`summary` gives what resuming needs (file name, stamp, whether it
    holds a result) without reading the file again. Files stay open until :meth:`close`.
    """

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._handles: dict[int, Any] = {}
        self._where: dict[int, tuple[int, int, int]] = {}  # image id -> (file, offset, length)
        self._summaries: dict[int, dict[str, Any]] = {}
        self.any_without_stamp = False  # an entry of objdisc 0.1 (no file stamp) was read

    def _put(self, image_id: int, where: tuple[int, int, int], entry: dict[str, Any]) -> None:
        self._where[image_id] = where
        summary = {"file_name": entry["file_name"], "objects": True if finished(entry) else None}
        if "stamp" in entry:
            summary["stamp"] = entry["stamp"]
        else:
            self.any_without_stamp = True
        self._summaries[image_id] = summary

    def summary(self, image_id: int) -> dict[str, Any] | None:
        """``{"file_name", "objects": True or None, "stamp" (absent for 0.1 entries)}``, or ``None``."""
        return self._summaries.get(image_id)

    def __getitem__(self, image_id: int) -> dict[str, Any]:
        index, offset, length = self._where[image_id]
        handle = self._handles.get(index)
        if handle is None:
            handle = self._handles[index] = open(self._files[index], "rb")  # closed by close()
        handle.seek(offset)
        return json.loads(handle.read(length))

    def __iter__(self) -> Iterator[int]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        """Close the journal files opened for reading."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> JournalEntries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journals(
    folder: Path,
    settings: dict[str, Any],
    legacy: dict[str, Any] | None = None,
    stamps: Mapping[int, list[int] | None] | None = None,
) -> tuple[JournalEntries, bool]:
    """Every journaled image in ``folder``'s journals, by image id: the entry with a result for the
    image file as it is now wins over one with a result for another file under that name, which
    wins over one without a result (a failure that a later resume fixed); the later line on a tie.

    The journals are read line by line; what is kept per image is where its winning line is and
    a few words about it (:class:`JournalEntries`), so memory does not grow with the entries' size.

    Args:
        folder: the ``journal/`` folder.
        settings: what decides the objects now.
        legacy: the settings an objdisc 0.1 journal of the same run would hold (``None``: none
            would match).
        stamps: the image files' :func:`file_stamp` now, by image id (``None``: not compared).

    Returns:
        ``(entries by image id, whether a journal matched only the legacy settings)``.

    Raises:
        JournalMismatchError: a journal was made with other settings; names what differs.
    """
    key = settings_key(settings)
    legacy_key = settings_key(legacy) if legacy is not None else None
    files = sorted(folder.glob("rank*.jsonl"))
    done = JournalEntries(files)
    old = False
    fix = "use --overwrite to start over, or another --out"
    for index, path in enumerate(files):
        with open(path, "rb") as f:
            first = f.readline()
            if not first:
                continue
            header = _json_or_none(first.decode("utf-8", errors="replace"))
            if not isinstance(header, dict) or not isinstance(header.get("settings"), dict):
                raise JournalMismatchError(
                    f"{path}: not an objdisc journal (its first line is no journal header); {fix}"
                )
            if legacy_key is not None and header.get("key") == legacy_key:
                old = True
            elif header.get("key") != key:
                theirs = header.get("settings", {})
                diff = sorted(k for k in {*settings, *theirs} if settings.get(k) != theirs.get(k))
                raise JournalMismatchError(
                    f"{path}: this output folder holds a run made with other settings "
                    f"({', '.join(f'{k}: {theirs.get(k)!r} there, {settings.get(k)!r} now' for k in diff)}); "
                    "use another --out, or --overwrite to start over"
                )
            offset = len(first)
            for number, raw in enumerate(f, start=2):
                where = (index, offset, len(raw))
                offset += len(raw)
                entry = _json_or_none(raw.decode("utf-8", errors="replace"))
                if entry is None:  # a line torn by a kill mid-write: that image is redone
                    continue
                if isinstance(entry, dict) and "settings" in entry and "key" in entry:
                    raise JournalMismatchError(
                        f"{path}: line {number} is a second journal header: two runs wrote into this folder at once; "
                        f"{fix}"
                    )
                if not (isinstance(entry, dict) and isinstance(entry.get("image_id"), int) and "file_name" in entry):
                    raise JournalMismatchError(f"{path}: line {number} is not a journal entry; {fix}")
                image_id = entry["image_id"]
                # Files are read in rank order, not time order: a failure journaled by one run must
                # not hide the result a later resume (possibly on another rank) found for the image,
                # nor a result for an earlier file under that name hide the result for today's.
                now = stamps.get(image_id) if stamps is not None else None
                current = done.summary(image_id)
                if current is None or _rank(entry, now) >= _rank(current, now):
                    done._put(image_id, where, entry)
    return done, old


def file_stamp(path: Path) -> list[int] | None:
    """What tells one image file from another under the same name: ``[size, mtime_ns]`` (``None``:
    unreadable). A journal entry holds its image's stamp; a resume redoes an image whose file's
    stamp changed (another set of images with the same names, an edited photo)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [int(info.st_size), int(info.st_mtime_ns)]


def same_file(entry: dict[str, Any], stamp: list[int] | None) -> bool:
    """Whether a journal entry was made from the file whose stamp is ``stamp`` now (entries of
    objdisc 0.1 carry no stamp and are taken as they are)."""
    recorded = entry.get("stamp", "absent")
    return recorded == "absent" or (recorded is not None and recorded == stamp)


def _rank(entry: dict[str, Any], stamp: list[int] | None) -> tuple[bool, bool]:
    return (finished(entry) and same_file(entry, stamp), finished(entry))


def finished(entry: dict[str, Any] | None) -> bool:
    """Whether a journal entry holds a result (today's ``objects`` or 0.1's ``box``)."""
    return entry is not None and (entry.get("objects") is not None or entry.get("box") is not None)


def _json_or_none(line: str) -> Any:
    """The JSON value of one line, ``None`` where the line does not parse."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class Journal:
    """Appends finished images to ``folder/rank<rank>.jsonl`` (created with the first image)."""

    def __init__(self, folder: Path, rank: int, settings: dict[str, Any], fsync_every_s: float = 2.0) -> None:
        self.folder = folder
        self.path = folder / f"rank{rank}.jsonl"
        self.settings = settings
        self._file: Any = None
        self._fsync_every_s = fsync_every_s
        self._last_sync = time.monotonic()

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a")
        if fresh:
            self._file.write(json.dumps({"key": settings_key(self.settings), "settings": self.settings}) + "\n")
        elif not self._ends_with_newline():
            self._file.write("\n")  # close a line torn by a kill

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def append(self, entry: dict[str, Any]) -> None:
        """Write one finished image (flushed now, fsync'd every few seconds).

        Raises:
            JournalWriteError: the journal cannot be written (a full disk): the lines already
                written stay readable (a torn last line is ignored), so a rerun resumes.
        """
        try:
            if self._file is None:
                self._open()
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
            if time.monotonic() - self._last_sync >= self._fsync_every_s:
                os.fsync(self._file.fileno())
                self._last_sync = time.monotonic()
        except OSError as exc:
            raise JournalWriteError(
                f"{self.folder}: cannot write the journal ({exc.strerror or exc}); make room there (or use "
                "another --out) and rerun the same command: it resumes from the images already journaled"
            ) from exc

    def close(self) -> None:
        """fsync and close (a journal that cannot be flushed any more is closed all the same)."""
        if self._file is not None and not self._file.closed:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                pass  # the write that failed has already said so
            finally:
                try:
                    self._file.close()
                except OSError:
                    pass

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
