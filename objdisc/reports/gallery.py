"""A static, self-contained HTML gallery: thumbnails, hit / miss, IoU, sortable; runs side by side.

No server and no CDN: one HTML file with inline CSS and a few lines of inline JavaScript (click
a column header to sort), links relative to the file. Works from ``file://``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    """One run's picture of one image.

    Attributes:
        picture: path of the full PNG, relative to the gallery file.
        thumbnail: path of the thumbnail, relative to the gallery file.
        hit: CorLoc hit, ``None`` without ground truth.
        iou: best IoU with the ground truth, ``None`` without it.
        note: extra text (e.g. the recomputed box differs from the run's).
    """

    picture: str
    thumbnail: str
    hit: bool | None
    iou: float | None
    note: str = ""


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; color: #111; }
table { border-collapse: collapse; }
th { cursor: pointer; background: #eee; position: sticky; top: 0; padding: .4rem .6rem; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td { border-top: 1px solid #ddd; padding: .3rem .6rem; vertical-align: top; }
img { height: 130px; width: auto; display: block; }
.hit { color: #fff; background: #0072b2; padding: 0 .4rem; border-radius: .2rem; }
.miss { color: #000; background: #e69f00; padding: 0 .4rem; border-radius: .2rem; }
.note { color: #555; font-size: .85em; }
"""

_SCRIPT = """
(function () {
  const table = document.getElementById("gallery");
  const body = table.tBodies[0];
  function sortBy(th, descending) {
    const index = Array.prototype.indexOf.call(th.parentNode.children, th);
    const numeric = th.dataset.type === "number";
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      let order;
      if (numeric) { order = (x === "" ? -Infinity : Number(x)) - (y === "" ? -Infinity : Number(y)); }
      else { order = x.localeCompare(y); }
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (const other of th.parentNode.children) { other.removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", function () { sortBy(th, th.getAttribute("aria-sort") === "ascending"); });
  }
  sortBy(table.tHead.rows[0].cells[0], false);
  document.body.dataset.ready = String(body.rows.length);
})();
"""


def render(title: str, runs: list[str], rows: list[tuple[str, list[Cell | None]]], summary: str = "") -> str:
    """The gallery page.

    Args:
        title: page title.
        runs: run labels, one column group each.
        rows: ``(file name, one cell per run or None)`` per image.
        summary: a line under the title.
    """
    esc = html.escape
    head = ['<th data-type="text">image</th>']
    for label in runs:
        head += [
            f'<th data-type="text">{esc(label)}</th>',
            f'<th data-type="number">hit ({esc(label)})</th>',
            f'<th data-type="number">IoU ({esc(label)})</th>',
        ]
    if len(runs) == 2:
        head.append(f'<th data-type="number">IoU {esc(runs[1])} minus {esc(runs[0])}</th>')
    body = []
    for name, cells in rows:
        tds = [f'<td data-value="{esc(name)}">{esc(name)}</td>']
        for cell in cells:
            if cell is None:
                tds += ['<td data-value="">missing</td>', '<td data-value=""></td>', '<td data-value=""></td>']
                continue
            note = f'<div class="note">{esc(cell.note)}</div>' if cell.note else ""
            tds.append(
                f'<td data-value="{esc(name)}"><a href="{esc(cell.picture)}">'
                f'<img src="{esc(cell.thumbnail)}" alt="{esc(name)}" loading="lazy"></a>{note}</td>'
            )
            if cell.hit is None:
                tds.append('<td data-value="">n/a</td>')
            else:
                badge = '<span class="hit">hit</span>' if cell.hit else '<span class="miss">miss</span>'
                tds.append(f'<td data-value="{int(cell.hit)}">{badge}</td>')
            iou = "" if cell.iou is None else f"{cell.iou:.3f}"
            tds.append(f'<td data-value="{iou}">{iou}</td>')
        if len(runs) == 2:
            a, b = cells
            delta = "" if a is None or b is None or a.iou is None or b.iou is None else f"{b.iou - a.iou:+.3f}"
            tds.append(f'<td data-value="{delta}">{delta}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p>{esc(summary)}</p>\n"
        "<p>Click a column header to sort. Pictures: GT blue, prediction orange, seed vermillion, mask sky blue; "
        "maps in viridis.</p>\n"
        '<table id="gallery"><thead><tr>' + "".join(head) + "</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n"
        "</tbody></table>\n"
        f"<script>{_SCRIPT}</script>\n"
        f'<script type="application/json" id="runs">{esc(json.dumps(runs))}</script>\n'
        "</body></html>\n"
    )


def write(path: Path, page: str) -> None:
    """Write the page (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")


__all__ = ["Cell", "render", "write"]
