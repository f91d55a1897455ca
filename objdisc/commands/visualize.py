"""``objdisc visualize RUN [RUN_B]``: a picture per image of what the method did, and a gallery.

Each run's model, method and options are rebuilt from its ``run.json`` (same weights file,
checked by sha256; the same features, method and options, resolved as ``objdisc run`` resolves
them; the same precision) and handed to :class:`objdisc.reports.pictures.Redrawer`, which
recomputes and draws each image. Pictures go to ``OUT/<run name>/<image>.png`` with thumbnails
in ``OUT/<run name>/thumbs/``, the page to ``OUT/index.html`` (``OUT`` defaults to ``RUN/vis``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from objdisc.commands.run import RunConfig, resolve_discovery
from objdisc.datasets import DATASETS
from objdisc.engine.out_folder import check_folder, claim_folder, lock_out, record_outputs
from objdisc.errors import DatasetError, ObjdiscError
from objdisc.images import ImageError, Member
from objdisc.reports import gallery
from objdisc.reports.pictures import Redrawer, RunView, select
from objdisc.utils.progress import show_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisualizeConfig:
    """Everything ``objdisc visualize`` takes.

    Attributes:
        runs: one run folder, or two to compare side by side.
        limit: at most this many images.
        out: the output folder (default ``RUN/vis``).
        only: ``hits``, ``misses`` or ``None`` (all).
        device: where the model runs again (``cpu`` or ``cuda``).
        weights: weights files to use where a run's own file has moved; each run takes the one
            whose sha256 is the run's.
        overwrite: replace an earlier ``objdisc visualize`` output in ``out`` (a folder holding
            anything else is refused, :func:`objdisc.engine.out_folder.claim_folder`).
        figures: also write each picture for print in these formats (``pdf``, ``svg``, ``png``;
            matplotlib), in ``OUT/<run>/figures/``.
        grid: the print figures' ``(rows, cols)`` of panels (``None``: as square as they allow).
        figure_width: the print figures' width in inches (``None``: one column, 3.3 in).
        progress: a progress bar over the images (``None``: on a terminal).
    """

    runs: list[Path]
    limit: int | None = 50
    out: Path | None = None
    only: str | None = None
    device: str = "cpu"
    weights: list[Path] = field(default_factory=list)
    overwrite: bool = False
    figures: tuple[str, ...] = ()
    grid: tuple[int, int] | None = None
    figure_width: float | None = None
    progress: bool | None = None


def run(config: VisualizeConfig) -> Path:
    """Pictures and ``index.html`` for one run, or two side by side (images of the first run's
    selection that the second run also has). Returns the page's path.

    An image that can no longer be read is listed on the page as missing; the others are drawn.

    Raises:
        ObjdiscError: not one or two finished run folders, nothing to draw, a weights file that
            is gone or not the run's, or an ``out`` that is not objdisc's.
    """
    from tqdm import tqdm

    from objdisc.reports.print_figures import layout, parse_formats

    runs, limit = list(config.runs), config.limit
    formats = parse_formats(config.figures)  # refused before any work when matplotlib is missing
    if not 1 <= len(runs) <= 2:
        raise ObjdiscError("visualize takes one run folder, or two to compare")
    views = [RunView.read(r) for r in runs]
    if len(views) == 2 and views[0].label == views[1].label:
        views[1].label += "-2"
    out = Path(config.out) if config.out is not None else views[0].folder / "vis"
    names = select(views[0], config.only, limit if len(views) == 1 else None)
    if len(views) == 2:
        names = [n for n in names if n in views[1].images and "objects" in views[1].images[n]][:limit]
    if not names:
        raise ObjdiscError(f"{views[0].folder}: no images to draw (check --only)")
    files = {view.folder: _weights_for(view, list(config.weights)) for view in views}
    if config.grid is not None:
        for view in views:
            layout(_most_panels(view), config.grid)  # a grid too small: refused before any work
    check_folder(out, "objdisc visualize", config.overwrite, legacy=_is_gallery_folder)  # without touching it
    with lock_out(out, "objdisc visualize"):
        claim_folder(out, "objdisc visualize", config.overwrite, legacy=_is_gallery_folder)
        rows: list[tuple[str, list[gallery.Cell | None]]] = [(n, []) for n in names]
        written: list[Path] = []
        missing: list[str] = []
        bar = tqdm(
            total=len(rows) * len(views), disable=not show_progress(config.progress), desc="visualize", unit="image"
        )
        for view in views:
            redrawer = redrawer_for(view, config.device, files[view.folder], formats, config.grid, config.figure_width)
            folder = out / view.label
            folder.mkdir(parents=True, exist_ok=True)
            try:
                for name, cells in rows:
                    bar.update(1)
                    try:
                        cell = redrawer.draw(name, folder)
                    except ImageError as exc:
                        logger.warning("%s", exc)
                        missing.append(str(exc))
                        cells.append(None)
                        continue
                    cells.append(cell)
                    written += [out / cell.picture, out / cell.thumbnail]
            finally:
                written += redrawer.written
                redrawer.close()
        bar.close()
        labels = [v.label for v in views]
        hits = [sum(bool(c.hit) for _, cells in rows for c in [cells[i]] if c is not None) for i in range(len(views))]
        summary = ", ".join(f"{label}: {h}/{len(rows)} hits" for label, h in zip(labels, hits, strict=True))
        if missing:
            summary += "; missing: " + "; ".join(missing)
        page = gallery.render(" vs ".join(labels), labels, rows, summary)
        gallery.write(out / "index.html", page)
        record_outputs(out, "objdisc visualize", [*written, out / "index.html"])
    return out / "index.html"


def redrawer_for(
    view: RunView,
    device: str = "cpu",
    weights_file: Path | None = None,
    print_formats: tuple[str, ...] = (),
    grid: tuple[int, int] | None = None,
    width: float | None = None,
) -> Redrawer:
    """The run's model, method and options rebuilt from its ``run.json``, as a :class:`Redrawer`
    (``print_formats``, ``grid``, ``width``: its figures for print, :class:`Redrawer`'s).

    Raises:
        ObjdiscError: the run's weights file is gone (and none was given), or the weights found
            are not the ones the run used.
    """
    import torch

    from objdisc.models.backbones import create_backbone
    from objdisc.models.specs import get_spec
    from objdisc.models.test_time_registers import RegisterNeurons

    made_by = view.info["producer"]
    config = RunConfig.from_options(dict(view.info["options"]))
    weights = made_by["weights"]
    path = weights_file or (weights["path"] if weights["source"] == "local" else None)
    if path is not None and not Path(path).is_file():
        raise ObjdiscError(
            f"{view.folder}: the run's weights file {path} is gone; pass visualize --weights FILE "
            f"with the same file (sha256 {weights['sha256'][:12]}…)"
        )
    where = torch.device(device)
    ttr = made_by.get("test_time_registers")  # the run's own neurons, not whatever a file holds now
    neurons = RegisterNeurons.from_record(ttr) if ttr else None
    spec = get_spec(made_by["backbone"])
    discovery = resolve_discovery(config, spec)
    backbone = create_backbone(
        spec.name, path, where, neurons, config.model.resample_weights, **config.model.model_kwargs
    )
    if backbone.weights.sha256 != weights["sha256"]:
        raise ObjdiscError(
            f"{view.folder}: the weights now found ({backbone.weights.path}) are not the ones the run used "
            f"(sha256 {weights['sha256'][:12]}…)"
        )
    precision = made_by["precision"] if where.type == "cuda" or made_by["precision"] != "fp16" else "fp32"
    return Redrawer(
        view,
        backbone,
        discovery.method,
        discovery.features,
        precision,
        config.max_side,
        discovery.patch_resize,
        _saliency_truths(config),
        _members(config),
        print_formats,
        grid,
        width,
    )


def _most_panels(view: RunView) -> int:
    """The most panels one of the run's pictures can have: the image and two maps, and for a run
    that wrote saliency masks the mask, the refined mask and solver output (``--refine``) or the
    method's soft map, and the ground truth (a saliency dataset)."""
    from objdisc.engine.saliency_maps import MASKS, SOFT

    if not (view.folder / MASKS).is_dir():
        return 3
    config = RunConfig.from_options(dict(view.info["options"]))
    kind = DATASETS.get(config.data.dataset)
    soft = (2 if config.refine == "bilateral" else 1) if (view.folder / SOFT).is_dir() else 0
    return 4 + soft + bool(kind is not None and kind.saliency)


def _saliency_truths(config: RunConfig) -> dict[str, Path]:
    """File name -> ground-truth mask of a saliency dataset's run (empty for other datasets, or
    when the dataset cannot be read now: the pictures then go without it)."""
    kind = DATASETS.get(config.data.dataset)
    if kind is None or not kind.saliency:
        return {}
    try:
        data = config.data.load()
    except DatasetError as exc:
        logger.warning("ground-truth masks not drawn: %s", exc)
        return {}
    return {r.file_name: r.mask_path for r in data.records if r.mask_path is not None}


def _members(config: RunConfig) -> dict[str, tuple[Path, Member]]:
    """File name -> ``(shard, member)`` of a run over tar shards (empty for other datasets)."""
    if config.data.dataset != "tars":
        return {}
    return {r.file_name: (r.path, r.member) for r in config.data.load().records if r.member is not None}


def _weights_for(view: RunView, given: list[Path]) -> Path | None:
    """The given weights file whose sha256 is the run's (``None``: use the run's own)."""
    from objdisc.utils.hashing import sha256_file

    wanted = view.info["producer"]["weights"]["sha256"]
    for path in given:
        if Path(path).is_file() and sha256_file(path) == wanted:
            return Path(path)
    if given:
        names = ", ".join(str(p) for p in given)
        raise ObjdiscError(
            f"{view.folder}: none of --weights {names} is the run's weights file (sha256 {wanted[:12]}…)"
        )
    return None


def _is_gallery_folder(out: Path) -> bool:
    """Whether ``out`` holds a gallery written before output manifests existed (only its files)."""
    page = out / "index.html"
    if not page.is_file() or "Click a column header to sort" not in page.read_text(errors="replace"):
        return False
    allowed = {".png", ".jpg", ".html", ".lock"}
    return all(p.suffix in allowed or p.is_dir() for p in out.rglob("*"))


__all__ = ["VisualizeConfig", "redrawer_for", "run"]
