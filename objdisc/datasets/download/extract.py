"""Archive extraction that no member can escape.

Every member of a tar or zip must land inside the target folder: absolute paths, ``..``
components, links pointing outside, and device files are refused with an error naming the
archive and the member, before anything is written.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from objdisc.errors import ObjdiscError


class UnsafeArchiveError(ObjdiscError):
    """An archive member would land outside the target folder."""


def _escapes(root: Path, name: str, base: Path | None = None) -> bool:
    """Whether ``name`` (relative to ``base``, default ``root``) resolves outside ``root``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]):
        return True
    dest = ((base or root) / pure).resolve()
    return dest != root and root not in dest.parents


def _unsafe_tar_member(root: Path, member: tarfile.TarInfo) -> str | None:
    if _escapes(root, member.name) or ".." in PurePosixPath(member.name).parts:
        return member.name
    if member.issym() and _escapes(root, member.linkname, (root / member.name).parent):
        return f"{member.name} -> {member.linkname}"
    if member.islnk() and _escapes(root, member.linkname):
        return f"{member.name} => {member.linkname}"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return f"{member.name} (device or fifo)"
    return None


def _unsafe_zip_member(root: Path, info: zipfile.ZipInfo) -> str | None:
    if _escapes(root, info.filename) or ".." in PurePosixPath(info.filename).parts:
        return info.filename
    if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink stored in the zip
        return f"{info.filename} (symlink)"
    return None


def extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a ``.tar`` (any compression) or ``.zip`` into ``target``, safely.

    Returns:
        ``target``.

    Raises:
        UnsafeArchiveError: a member would escape ``target``; nothing is extracted.
        ObjdiscError: the archive cannot be read.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                bad = [m for m in (_unsafe_zip_member(root, i) for i in zf.infolist()) if m]
                if not bad:
                    zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                bad = [m for m in (_unsafe_tar_member(root, i) for i in tar.getmembers()) if m]
                if not bad:
                    tar.extractall(target, filter="data")  # the stdlib's own guard, on top of ours
        else:
            raise ObjdiscError(f"{archive}: neither a tar nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ObjdiscError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
    if bad:
        raise UnsafeArchiveError(
            f"{archive}: member {bad[0]} would land outside {root}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            + "; nothing extracted"
        )
    return target
