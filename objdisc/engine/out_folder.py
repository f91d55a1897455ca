"""The ``--out`` folder of a run: checked, locked, and cleared only of what objdisc wrote.

- ``--out`` must be a folder objdisc can write; a file or a read-only place is refused with
  one sentence.
- A run holds an exclusive ``flock`` on ``OUT/.objdisc.lock`` for as long as it writes there;
  a second run into the same folder is refused at once, naming the process that holds it. The
  kernel drops the lock when that process ends, however it ends (SIGKILL included), so a
  stale lock file never blocks a later run.
- A non-empty folder that holds no objdisc run (no ``run.json`` with a ``producer``, no
  ``journal/rank*.jsonl``) is refused: objdisc never writes over files it did not make.
- ``--overwrite`` deletes only objdisc's own files (:data:`RUN_FILES`, the journals and an
  emptied ``journal/``); anything else in the folder is left alone.

The other commands that write follow the same rule (:func:`claim_folder`, :func:`claim_file`):
``norms --out`` and ``visualize --out`` write a manifest (:data:`MANIFEST`) naming the command
and every file it wrote; a folder holding anything else (a run, a user's files) is refused, and
an earlier output of the same command is replaced only with ``--overwrite`` (which deletes the
files its manifest lists, nothing else). ``registers find --out FILE`` refuses a file it did not
write and replaces its own only with ``--overwrite``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

from objdisc.errors import OptionError

LOCK_NAME = ".objdisc.lock"
RUN_FILES = ("predictions.json", "gt.json", "per_image.json", "metrics.json", "run.json")


class OutLock:
    """An exclusive lock on an output folder, held until :meth:`release` (or process exit)."""

    def __init__(self, out: Path, handle: IO[str]) -> None:
        self.out = out
        self._handle = handle

    def release(self) -> None:
        """Drop the lock (the lock file stays: it is harmless and its presence proves nothing)."""
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> OutLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_out(out: Path) -> None:
    """Create ``out`` (and parents), or say in one sentence why it cannot be used.

    Raises:
        OptionError: ``out`` is a file, or cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out}: is a file, not a folder; give a folder path (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot create the folder ({exc.strerror}); choose a writable place") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise OptionError(f"--out {out}: the folder is not writable; choose a writable place")


def check_out(out: Path) -> None:
    """Refuse, before any work and without creating or changing anything, an ``--out`` that cannot
    be used: a file, a folder another process is writing in, a folder of files objdisc did not
    write, or a place that cannot be written. :func:`lock_out` decides for good when the work starts.

    Raises:
        OptionError: naming the folder and what to do.
    """
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out}: is a file, not a folder; give a folder path (it is created if missing)")
    if not out.is_dir():
        check_creatable(out, "--out", "the folder")
        return
    lock = out / LOCK_NAME
    if lock.is_file():
        try:
            handle = open(lock)
        except OSError:
            handle = None
        if handle is not None:
            with handle:
                try:  # shared and at once: free unless a run holds it exclusively now
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _busy(out, handle.read()) from None
                fcntl.flock(handle, fcntl.LOCK_UN)
    check_ours(out)
    if not os.access(out, os.W_OK | os.X_OK):
        raise OptionError(f"--out {out}: the folder is not writable; choose a writable place")


def check_creatable(path: Path, flag: str, what: str = "the file") -> None:
    """Refuse a path that cannot be created: its nearest existing ancestor must be a writable folder.

    Raises:
        OptionError: naming the flag, the path and the ancestor.
    """
    existing = next((p for p in Path(path).absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is not a writable folder" if existing is not None else "no existing parent"
        raise OptionError(f"{flag} {path}: cannot create {what} ({why}); choose a writable place")


def check_writable_file(path: Path, flag: str) -> None:
    """Refuse, before any work, a file path objdisc could not write at the end: a folder, a
    read-only file, or a place where the file cannot be created.

    Raises:
        OptionError: naming the flag, the path and why.
    """
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{flag} {path}: is a folder; give the file to write")
    if path.exists():
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise OptionError(f"{flag} {path}: the file (or its folder) is not writable; choose a writable place")
        return
    check_creatable(path, flag)


def lock_out(out: Path, what: str = "objdisc run") -> OutLock:
    """Take ``out``'s lock, or refuse naming the process that holds it.

    Raises:
        OptionError: another process holds the lock, or the folder cannot be used.
    """
    make_out(out)
    path = out / LOCK_NAME
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot write in the folder ({exc.strerror}); choose a writable place") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read()
        handle.close()
        raise _busy(out, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{what} (pid {os.getpid()} on {socket.gethostname()})\n")
    handle.flush()
    return OutLock(out, handle)


def _busy(out: Path, holder: str) -> OptionError:
    """The refusal of a folder another process holds (``holder``: what its lock file says)."""
    who = holder.strip() or "another process"
    return OptionError(f"--out {out}: {who} is writing in this folder now; wait for it to finish, or use another --out")


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds an objdisc run: a ``run.json`` with a ``producer``, or journals."""
    if any((out / "journal").glob("rank*.jsonl")):
        return True
    try:
        info = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "producer" in info


def foreign_files(out: Path) -> list[str]:
    """Entries of ``out`` objdisc would not have written, in a folder that holds no objdisc run."""
    if not out.is_dir() or is_run_folder(out):
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)


def check_ours(out: Path) -> None:
    """Refuse a non-empty ``out`` that holds no objdisc run.

    Raises:
        OptionError: naming a few of the files that are not objdisc's.
    """
    others = foreign_files(out)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise OptionError(
            f"--out {out}: the folder holds files objdisc did not write ({shown}); "
            "use a new or empty folder (objdisc never writes over other files)"
        )


def clear_run(out: Path) -> None:
    """``--overwrite``: delete objdisc's own files in ``out``, nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    journal = out / "journal"
    for path in journal.glob("rank*.jsonl"):
        path.unlink()
    if journal.is_dir() and not any(journal.iterdir()):
        journal.rmdir()


MANIFEST = ".objdisc-output.json"


def check_folder(
    out: Path, command: str, overwrite: bool = False, legacy: Callable[[Path], bool] | None = None
) -> None:
    """Refuse, without creating or changing anything, an ``out`` :func:`claim_folder` would refuse.

    Raises:
        OptionError: as :func:`claim_folder`.
    """
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out}: is a file, not a folder; give a folder path (it is created if missing)")
    if not out.is_dir():
        check_creatable(out, "--out", "the folder")
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise OptionError(f"--out {out}: the folder is not writable; choose a writable place")
    _claim_decision(out, command, overwrite, legacy)


def _claim_decision(out: Path, command: str, overwrite: bool, legacy: Callable[[Path], bool] | None) -> dict | None:
    """Refuse an ``out`` holding others' files, or ``command``'s own without ``overwrite``; returns
    the manifest of an earlier output to replace (or ``None``: nothing to replace)."""
    entries = sorted(p.name for p in out.iterdir() if p.name not in (LOCK_NAME, MANIFEST))
    manifest = _read_manifest(out)
    own = (manifest is not None and manifest.get("command") == command) or (legacy is not None and legacy(out))
    if not entries and manifest is None:
        return None
    if not own:
        what = "an objdisc run" if is_run_folder(out) else "files " + command + " did not write"
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise OptionError(
            f"--out {out}: the folder holds {what} ({shown}); give {command} a new or empty folder "
            "(objdisc never writes over other files)"
        )
    if not overwrite:
        raise OptionError(f"--out {out}: holds an earlier {command} output; pass --overwrite to replace it")
    return manifest or {}


def claim_folder(
    out: Path, command: str, overwrite: bool = False, legacy: Callable[[Path], bool] | None = None
) -> None:
    """Make ``out`` ready for ``command``'s files, or refuse in one sentence.

    Args:
        out: the folder (created if missing).
        command: e.g. ``objdisc norms``.
        overwrite: replace an earlier output of the same command (its listed files only).
        legacy: recognises an output of ``command`` written before manifests existed.

    Raises:
        OptionError: ``out`` is a file or not writable, holds files ``command`` did not write (a
            run, a user's files), or holds an earlier output of ``command`` and ``overwrite`` is off.
    """
    make_out(out)
    manifest = _claim_decision(out, command, overwrite, legacy)
    if manifest is None:
        return
    for name in manifest.get("files", []):
        target = (out / name).resolve()
        if target.is_file() and out.resolve() in target.parents:
            target.unlink()
    (out / MANIFEST).unlink(missing_ok=True)


def record_outputs(out: Path, command: str, files: list[Path]) -> None:
    """Write ``out``'s manifest: the command and the files (relative to ``out``) it wrote."""
    from objdisc.utils.jsonio import write_json_atomic

    names = sorted({str(Path(f).resolve().relative_to(out.resolve())) for f in files})
    write_json_atomic(out / MANIFEST, {"command": command, "files": names})


def recorded_outputs(out: Path) -> list[str]:
    """The files (relative to ``out``) its manifest says the command wrote; none without one."""
    files = (_read_manifest(out) or {}).get("files")
    return [str(f) for f in files] if isinstance(files, list) else []


def _read_manifest(out: Path) -> dict | None:
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def claim_file(
    path: Path, command: str, overwrite: bool, ours: Callable[[Path], bool], flag: str = "--out"
) -> None:
    """Make ``path`` writable for ``command``: refuse a file it did not write, and its own without ``overwrite``.

    Raises:
        OptionError: ``path`` is a folder, a file ``ours`` does not recognise, or an earlier
            output with ``overwrite`` off (each naming ``flag``).
    """
    check_writable_file(path, flag)
    if not path.exists():
        return
    if not ours(path):
        raise OptionError(
            f"{flag} {path}: the file exists and {command} did not write it; give another file name "
            "(objdisc never writes over other files)"
        )
    if not overwrite:
        raise OptionError(f"{flag} {path}: holds an earlier {command} output; pass --overwrite to replace it")


def check_not_a_run_file(path: Path, out: Path, flag: str) -> None:
    """Refuse an extra output file that would land on one of the run's own files in ``out``
    (``predictions.json``, the journal, the lock, the pictures).

    Raises:
        OptionError: it would, naming the flag and the file.
    """
    try:
        inside = path.resolve().relative_to(out.resolve())
    except ValueError:
        return
    if inside.parts and inside.parts[0] in (*RUN_FILES, "journal", "vis", LOCK_NAME, MANIFEST):
        raise OptionError(f"{flag} {path}: is one of the run's own files in {out}; give another file name")


__all__ = [
    "LOCK_NAME",
    "MANIFEST",
    "RUN_FILES",
    "OutLock",
    "check_creatable",
    "check_folder",
    "check_not_a_run_file",
    "check_ours",
    "check_out",
    "check_writable_file",
    "claim_file",
    "claim_folder",
    "clear_run",
    "foreign_files",
    "lock_out",
    "make_out",
    "record_outputs",
]
