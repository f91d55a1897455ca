"""Listing the image files of a folder tree: nothing that looks like an image goes unsaid.

- Files with an image suffix objdisc decodes (:data:`IMAGE_SUFFIXES`) are images; a symbolic
  link among them is listed even when broken (the run then says its target is missing).
- Files that look like images in a format objdisc does not decode (GIF, HEIC, AVIF, JPEG 2000,
  ...: by suffix, or by their first bytes when the suffix says nothing) are listed too, each with
  the reason it will be skipped, so that the run's ``skipped`` list names them.
- A file without an image suffix whose first bytes are a JPEG, PNG, BMP, WebP or TIFF header is
  an image: it is decoded like the others.
- Symbolic links to folders are followed; a link back to a folder already being walked (a loop)
  is not, and is reported as a dataset warning.

The order is the sorted relative paths (by path component), as objdisc always listed folders, so
that image ids stay the same between runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from objdisc.datasets.base import IMAGE_SUFFIXES

# Formats a user may have among their images that OpenCV's decoder does not read.
UNREAD_SUFFIXES = {
    ".gif": "GIF",
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".jxl": "JPEG XL",
    ".jp2": "JPEG 2000",
    ".j2k": "JPEG 2000",
    ".jpx": "JPEG 2000",
    ".svg": "SVG",
    ".ico": "ICO",
    ".psd": "Photoshop",
    ".exr": "OpenEXR",
    ".hdr": "Radiance HDR",
    ".dng": "raw camera (DNG)",
    ".cr2": "raw camera (CR2)",
    ".nef": "raw camera (NEF)",
    ".arw": "raw camera (ARW)",
}
DECODED = "JPEG, PNG, BMP, WebP and TIFF"


def sniff(head: bytes) -> tuple[str, bool] | None:
    """``(format, objdisc decodes it)`` from a file's first 16 bytes, or ``None``: not an image."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG", True
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG", True
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP", True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", True
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", True
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", False
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
        return "HEIC", False
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF", False
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xffO\xffQ":
        return "JPEG 2000", False
    return None


@dataclass
class Listing:
    """What a folder tree holds.

    Attributes:
        images: the image files, sorted by relative path components.
        errors: path -> why it will be skipped (formats objdisc does not decode); these paths
            are in :attr:`images` too, so that the run lists them under ``skipped``.
        warnings: ``{"file_name", "message"}`` for what was not walked (folder loops).
    """

    images: list[Path] = field(default_factory=list)
    errors: dict[Path, str] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)


def list_images(root: Path, exclude: Path | None = None) -> Listing:
    """Every image-like file below ``root``, following links to folders (module docstring).

    Args:
        root: the folder.
        exclude: a folder never walked (the command's own ``--out``, which may lie inside).
    """
    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    out = Listing()
    found: list[tuple[tuple[str, ...], Path]] = []
    walking: set[tuple[int, int]] = set()

    def walk(folder: Path, relative: tuple[str, ...]) -> None:
        try:
            info = folder.stat()
        except OSError:
            return
        key = (info.st_dev, info.st_ino)
        if key in walking:  # a link back into the folders being walked
            name = "/".join(relative) or "."
            message = f"symbolic link to {os.path.realpath(folder)}, a folder above it: a loop, not followed"
            out.warnings.append({"file_name": name, "message": message})
            return
        if skip is not None and folder.resolve() == skip:
            return
        walking.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=True):
                walk(path, (*relative, entry.name))
                continue
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                kind, decoded = suffix, True
            elif suffix in UNREAD_SUFFIXES:
                kind, decoded = UNREAD_SUFFIXES[suffix], False
            elif entry.is_file(follow_symlinks=True) and (sniffed := _sniff_file(path)) is not None:
                kind, decoded = sniffed  # an image whose suffix does not say so
            else:
                continue
            found.append(((*relative, entry.name), path))
            if not decoded:
                out.errors[path] = unread_message(path, kind)
        walking.discard(key)

    walk(root, ())
    out.images = [path for _, path in sorted(found, key=lambda item: item[0])]
    return out


def unread_message(path: Path, kind: str) -> str:
    """Why an image in a format objdisc does not decode is skipped, and what to do."""
    return f"{path}: a {kind} file; objdisc decodes {DECODED}: convert it (e.g. to PNG) to include it"


def _sniff_file(path: Path) -> tuple[str, bool] | None:
    try:
        with open(path, "rb") as f:
            return sniff(f.read(16))
    except OSError:
        return None


__all__ = ["DECODED", "UNREAD_SUFFIXES", "Listing", "list_images", "sniff", "unread_message"]
