"""Whether a command shows a progress bar."""

from __future__ import annotations

import sys


def show_progress(progress: bool | None) -> bool:
    """``--progress`` / ``--no-progress`` as given, or (``None``) whether standard error is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


__all__ = ["show_progress"]
