"""Downloads that survive real networks.

A file is streamed to ``<dest>.part``; after an interruption the next attempt resumes it with
an HTTP ``Range`` request; 5xx answers, resets and timeouts are retried with exponential
backoff; the finished file is checked against its size and md5 *before* it replaces anything,
so nothing half-written or wrong ever sits at ``dest``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from objdisc.errors import ObjdiscError
from objdisc.utils.progress import show_progress

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
USER_AGENT = "objdisc-downloader"


class DownloadError(ObjdiscError):
    """A download failed for good (every URL and retry), or its content is wrong."""


class _Retryable(Exception):
    """A failure worth another attempt (5xx, reset, timeout, short body)."""


def md5_file(path: str | Path, chunk_bytes: int = 1 << 23) -> str:
    """Hex md5 of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    urls: str | Sequence[str],
    dest: str | Path,
    *,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool | None = None,
    check: Callable[[Path], str | None] | None = None,
) -> Path:
    """Fetch the first URL that works into ``dest``, resuming and retrying.

    Args:
        urls: one URL or several (a primary and its mirrors), tried in order.
        dest: final path; written only once the content is verified.
        md5: expected hex md5, checked before the file is moved into place.
        size: expected size in bytes, checked likewise.
        retries: extra attempts per URL on retryable failures.
        backoff_s: first wait between attempts, doubled each time.
        timeout_s: socket timeout per request.
        progress: tqdm bar with size and speed; ``None``: only on a terminal.
        check: extra content check on the finished file, returning what is wrong or ``None``.

    Returns:
        ``dest``.

    Raises:
        DownloadError: naming the URLs and what went wrong; a wrong checksum leaves neither
            ``dest`` nor a partial file behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in [urls] if isinstance(urls, str) else list(urls):
        if _fetch_with_retries(url, part, size, retries, backoff_s, timeout_s, progress, errors):
            problem = _verify(part, md5, size) or (check(part) if check is not None else None)
            if problem is None:
                os.replace(part, dest)
                return dest
            part.unlink()  # wrong content: never resumed from, never moved into place
            errors.append(f"{url}: {problem}; nothing was replaced")
    # A partial file from a lost connection stays as <dest>.part so that a rerun resumes it.
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors[-6:]))


def _fetch_with_retries(
    url: str,
    part: Path,
    size: int | None,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    progress: bool | None,
    errors: list[str],
) -> bool:
    """Try ``url`` up to ``retries + 1`` times; False (with the reason in ``errors``) if it never completes."""
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size, timeout_s, progress)
            return True
        except _Retryable as exc:
            errors.append(f"{url}: {exc}")
            if attempt < retries:
                wait = backoff_s * 2**attempt
                logger.warning("%s: %s; retrying in %.1f s (%d/%d)", url, exc, wait, attempt + 1, retries)
                time.sleep(wait)
        except urllib.error.HTTPError as exc:  # 4xx: this URL will not work, try the next one
            errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
            return False
        except (urllib.error.URLError, ValueError, OSError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            return False
    return False


def _verify(part: Path, md5: str | None, size: int | None) -> str | None:
    """What is wrong with a finished download, or None."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        return f"got {actual_size} bytes, expected {size}"
    if md5 is not None and (actual := md5_file(part)) != md5.lower():
        return f"md5 {actual} does not match the known {md5}"
    return None


def _fetch(url: str, part: Path, size: int | None, timeout_s: float, progress: bool | None) -> None:
    """One attempt: resume ``part`` from its current length up to the end of ``url``."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: the part file is already whole
            return
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise
    except (TimeoutError, ConnectionError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, ConnectionError, socket.timeout)):
            raise _Retryable(str(exc.reason)) from exc
        raise
    with response:
        if offset and response.status != 206:  # the server ignored Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        mode = "ab" if offset else "wb"
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not show_progress(progress),
        )
        received = offset
        try:
            with open(part, mode) as f, bar:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (TimeoutError, ConnectionError, http.client.IncompleteRead) as exc:
            raise _Retryable(f"connection lost after {received} bytes ({type(exc).__name__})") from exc
    if total is not None and received < total:
        raise _Retryable(f"connection closed after {received} of {total} bytes")
