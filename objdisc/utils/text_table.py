"""Plain-text tables for the terminal (``objdisc backbones``, ``objdisc data status``)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, the first row a header underlined with dashes.

    Args:
        rows: the header, then the rows; every row as long as the header.

    Returns:
        The lines, joined with newlines (no trailing newline), trailing spaces stripped.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


__all__ = ["text_table"]
