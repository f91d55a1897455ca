"""File digests (torch-free, so light commands stay fast)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_KNOWN: dict[tuple[str, int, int, int], str] = {}  # (real path, inode, size, mtime_ns) -> sha256


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` pieces.

    Remembered for the process's life by the file's real path, inode, size and modification time
    (a weights file is hashed once, not once per run of a sweep); a changed file is read again.
    """
    info = os.stat(path)
    key = (os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _KNOWN:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                digest.update(chunk)
        _KNOWN[key] = digest.hexdigest()
    return _KNOWN[key]
