"""``objdisc visualize RUN [RUN_B]``: a picture per image of what the method did, and a gallery.

The run folder holds objects, not the maps the method read, so each picture is recomputed: the
backbone is rebuilt from ``run.json`` (same weights file, checked by sha256; same features,
method and options; same precision), the image is run again, and the recomputed boxes are
checked against the run's (a difference is noted on the picture's row, e.g. after a GPU run
redrawn on CPU). Any registered method is drawn: its boxes, seeds and masks, and its score map
as the method shows it (:meth:`~objdisc.methods.base.MethodBase.display_map`).
Pictures go to ``OUT/<run name>/<image>.png`` with thumbnails in ``OUT/<run name>/thumbs/``,
the page to ``OUT/index.html`` (``OUT`` defaults to ``RUN/vis``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from objdisc.engine.run_files import read_per_image
from objdisc.errors import ObjdiscError
from objdisc.reports import gallery
from objdisc.reports.panels import figure
from objdisc.utils.jsonio import read_json

logger = logging.getLogger(__name__)

THUMB_HEIGHT = 130  # pixels: rows of the gallery line up whatever the aspect ratio


@dataclass
class RunView:
    """What a run folder says about its images."""

    folder: Path
    label: str
    info: dict[str, Any]
    images: dict[str, dict[str, Any]]  # by file name: per_image.json entries
    gt: dict[int, list[list[float]]]  # image id -> xyxy boxes

    @classmethod
    def read(cls, folder: Path) -> RunView:
        folder = Path(folder)
        try:
            info = read_json(folder / "run.json")
            per_image = read_per_image(folder)
            gt = read_json(folder / "gt.json")
        except FileNotFoundError as exc:
            raise ObjdiscError(f"{folder}: not a finished objdisc run ({Path(exc.filename).name} missing)") from None
        if not isinstance(info.get("options"), dict):
            raise ObjdiscError(
                f"{folder}: run.json has no run options (a folder written by objdisc eval?); "
                "visualize needs the folder of an objdisc run"
            )
        boxes: dict[int, list[list[float]]] = {}
        for ann in gt.get("annotations", []):
            if ann.get("iscrowd"):  # a crowd region is no object to find
                continue
            x, y, w, h = ann["bbox"]
            boxes.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
        return cls(folder, folder.name, info, {e["file_name"]: e for e in per_image}, boxes)


def _saliency_truths(config: Any) -> dict[str, Path]:
    """File name -> ground-truth mask of a saliency dataset's run (empty for other datasets, or
    when the dataset cannot be read now: the pictures then go without it)."""
    from objdisc.datasets import DATASETS, load_dataset
    from objdisc.errors import DatasetError

    if not DATASETS[config.dataset].saliency:
        return {}
    try:
        data = load_dataset(config.dataset, config.data_root, config.images, config.annotations)
    except DatasetError as exc:
        logger.warning("ground-truth masks not drawn: %s", exc)
        return {}
    return {r.file_name: r.mask_path for r in data.records if r.mask_path is not None}


def _corloc(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("corloc") or {}


def select(view: RunView, only: str | None, limit: int | None) -> list[str]:
    """File names to draw, in the run's order: all, hits or misses, the first ``limit``."""
    names = [n for n, e in view.images.items() if "objects" in e]
    if only is not None:
        if only not in ("hits", "misses"):
            raise ObjdiscError(f"--only takes hits or misses, not {only!r}")
        if not any("hit" in _corloc(view.images[n]) for n in names):
            raise ObjdiscError(f"{view.folder}: no ground truth, so no hits or misses to pick")
        names = [n for n in names if _corloc(view.images[n]).get("hit") is (only == "hits")]
    return names[:limit] if limit is not None else names


class Redrawer:
    """Recomputes one run's method on chosen images and draws them."""

    def __init__(self, view: RunView, device: str = "cpu", weights_file: Path | None = None) -> None:
        import torch

        from objdisc.engine.runner import RunConfig
        from objdisc.models.backbones import create_backbone
        from objdisc.models.features import FeatureExtractor
        from objdisc.models.specs import get_spec
        from objdisc.models.test_time_registers import RegisterNeurons
        from objdisc.models.token_probe import TokenProbe

        made_by = view.info["producer"]
        self.config = RunConfig.from_options(dict(view.info["options"]))
        weights = made_by["weights"]
        path = weights_file or (weights["path"] if weights["source"] == "local" else None)
        if path is not None and not Path(path).is_file():
            raise ObjdiscError(
                f"{view.folder}: the run's weights file {path} is gone; pass visualize --weights FILE "
                f"with the same file (sha256 {weights['sha256'][:12]}…)"
            )
        self.device = torch.device(device)
        ttr = made_by.get("test_time_registers")  # the run's own neurons, not whatever a file holds now
        neurons = RegisterNeurons.from_record(ttr) if ttr else None
        self.backbone = create_backbone(
            get_spec(made_by["backbone"]).name,
            path,
            self.device,
            neurons,
            self.config.resample_weights,
            **self.config.model_kwargs,
        )
        if self.backbone.weights.sha256 != weights["sha256"]:
            raise ObjdiscError(
                f"{view.folder}: the weights now found ({self.backbone.weights.path}) are not the ones the run used "
                f"(sha256 {weights['sha256'][:12]}…)"
            )
        self.precision = (
            made_by["precision"] if self.device.type == "cuda" or made_by["precision"] != "fp16" else "fp32"
        )
        self.view = view
        self.method = self.config.make_method()
        self.patch_resize = self.config.patch_resized(self.backbone.patch_size)
        self.truths = _saliency_truths(self.config)  # file name -> ground-truth mask, saliency datasets
        self.root = Path(view.info["dataset"]["image_root"])
        # Hooks registered once; one full forward pass per image gives both features and norms.
        spec = self.backbone.spec
        self.extractor = FeatureExtractor(self.backbone.model, [self.config.feature_spec], stop=False)
        self.probe = TokenProbe(self.backbone.model, spec.num_registers, spec.class_token)

    def _saliency_panels(self, name: str, found: Any, image_hw: tuple[int, int]) -> list[tuple[np.ndarray, str]]:
        """For a run that wrote saliency maps: the mask, the refined mask and soft map
        (``--refine``), the ground truth; each ``(H, W)`` in ``[0, 1]``."""
        from objdisc.engine.saliency_maps import MASKS, SOFT, png_name
        from objdisc.evaluation.saliency import read_mask, read_prediction, union_map

        folder = self.view.folder
        if not (folder / MASKS).is_dir():
            return []
        out = [(union_map(found, image_hw), "mask")]
        if (folder / SOFT / png_name(name)).is_file():
            out.append((read_prediction(folder / MASKS / png_name(name)), "refined mask (bilateral solver)"))
            out.append((read_prediction(folder / SOFT / png_name(name)), "solver output (soft, scored)"))
        if name in self.truths:
            out.append((read_mask(self.truths[name]).astype(np.float64), "ground truth"))
        return out

    def close(self) -> None:
        """Remove the hooks."""
        self.extractor.close()
        self.probe.close()

    def draw(self, name: str, out: Path) -> gallery.Cell:
        """Recompute and write ``out/<stem>.png`` and its thumbnail; returns the gallery cell."""
        import torch

        from objdisc.images import fixed_model_input, load_image, make_batch, patch_multiple
        from objdisc.utils.device import compute_context

        entry = self.view.images[name]
        ran = sorted(entry["objects"], key=lambda o: -o["score"])  # the run's objects, best first
        spec, patch = self.backbone.spec, self.backbone.patch_size
        path = self.root / name
        original, _ = load_image(path, patch_size=patch)
        image = (
            original
            if self.config.max_side is None
            else load_image(path, max_side=self.config.max_side, patch_size=patch)[0]
        )
        side = self.method.input_side(patch)
        if side is not None:  # the method's own input size, as the run made it (MaskCut: 480 x 480)
            image = fixed_model_input(original, side, patch)
        elif self.patch_resize:  # TokenCut's saliency input
            image = patch_multiple(original, patch)
        model_hw = (image.shape[0], image.shape[1])
        with torch.inference_mode():
            x = make_batch([torch.from_numpy(image)], patch, spec.mean, spec.std, self.device)
            grid = (x.shape[-2] // patch, x.shape[-1] // patch)
            with compute_context(self.device.type, self.precision):
                feats = self.extractor(x)
                (norms,) = self.probe.read(x.shape)
            sizes = torch.tensor([model_hw], dtype=torch.long, device=self.device)
            (found,) = self.method(feats, grid, patch, sizes).to_host(patch, [model_hw])
        if self.patch_resize and found.geometry is not None:
            found = replace(found, geometry=replace(found.geometry, sampling="nearest"))
        found = self.method.finalize(found, lambda: original, original.shape[:2])  # as the run did
        order = np.argsort(-found.scores, kind="stable")
        boxes = found.boxes[order].tolist()
        note = (
            ""
            if boxes == [o["box"] for o in ran]
            else f"recomputed boxes {boxes} differ from the run's {[o['box'] for o in ran]}"
        )
        if note:
            logger.warning("%s: %s", name, note)
        hit, iou = _corloc(entry).get("hit"), _corloc(entry).get("iou")
        verdict = "" if hit is None else (" · hit" if hit else " · miss") + f" · IoU {iou:.2f}"
        caption = f"{name} · {self.view.label}{verdict}"
        seeds = found.seeds[order].tolist() if found.seeds is not None else []
        masks = found.masks[order] if found.masks is not None else np.zeros((0, *grid), dtype=bool)
        score_map = found.score_map if found.score_map is not None else np.zeros(grid, dtype=np.float32)
        picture = figure(
            original,
            [o["box"] for o in ran],
            self.view.gt.get(entry["image_id"], []),
            seeds,
            masks,
            self.method.display_map(score_map),
            norms.patch[-1].float().cpu().numpy(),
            patch,
            model_hw,
            self.method.map_label,
            caption,
            self._saliency_panels(name, found, original.shape[:2]),
        )
        stem = Path(name).with_suffix("").as_posix().replace("/", "__")
        full, thumb = out / f"{stem}.png", out / "thumbs" / f"{stem}.jpg"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        _write(full, ".png", picture)
        scale = THUMB_HEIGHT / picture.shape[0]
        small = cv2.resize(picture, (max(1, int(picture.shape[1] * scale)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
        _write(thumb, ".jpg", small)
        return gallery.Cell(f"{out.name}/{full.name}", f"{out.name}/thumbs/{thumb.name}", hit, iou, note)


def _write(path: Path, ext: str, image: np.ndarray) -> None:
    ok, data = cv2.imencode(ext, image)
    if not ok:
        raise RuntimeError(f"encoding {path} failed")
    path.write_bytes(data.tobytes())


def visualize(
    runs: list[Path],
    out: Path | None = None,
    only: str | None = None,
    limit: int | None = None,
    device: str = "cpu",
    weights: list[Path] | None = None,
    overwrite: bool = False,
) -> Path:
    """Pictures and ``index.html`` for one run, or two side by side (images of the first run's
    selection that the second run also has). Returns the page's path.

    Args:
        weights: weights files to use where a run's own file has moved; each run takes the one
            whose sha256 is the run's.
        overwrite: replace an earlier ``objdisc visualize`` output in ``out`` (a folder holding
            anything else is refused, :func:`objdisc.engine.out_folder.claim_folder`).

    An image that can no longer be read is listed on the page as missing; the others are drawn.
    """
    from objdisc.engine.out_folder import claim_folder, lock_out, record_outputs
    from objdisc.images import ImageError

    if not 1 <= len(runs) <= 2:
        raise ObjdiscError("visualize takes one run folder, or two to compare")
    views = [RunView.read(r) for r in runs]
    if len(views) == 2 and views[0].label == views[1].label:
        views[1].label += "-2"
    out = Path(out) if out is not None else views[0].folder / "vis"
    names = select(views[0], only, limit if len(views) == 1 else None)
    if len(views) == 2:
        names = [n for n in names if n in views[1].images and "objects" in views[1].images[n]][:limit]
    if not names:
        raise ObjdiscError(f"{views[0].folder}: no images to draw (check --only)")
    files = {view.folder: _weights_for(view, weights or []) for view in views}
    with lock_out(out, "objdisc visualize"):
        claim_folder(out, "objdisc visualize", overwrite, legacy=_is_gallery_folder)
        rows: list[tuple[str, list[gallery.Cell | None]]] = [(n, []) for n in names]
        written: list[Path] = []
        missing: list[str] = []
        for view in views:
            redrawer = Redrawer(view, device, files[view.folder])
            folder = out / view.label
            folder.mkdir(parents=True, exist_ok=True)
            try:
                for name, cells in rows:
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
                redrawer.close()
        labels = [v.label for v in views]
        hits = [sum(bool(c.hit) for _, cells in rows for c in [cells[i]] if c is not None) for i in range(len(views))]
        summary = ", ".join(f"{label}: {h}/{len(rows)} hits" for label, h in zip(labels, hits, strict=True))
        if missing:
            summary += "; missing: " + "; ".join(missing)
        page = gallery.render(" vs ".join(labels), labels, rows, summary)
        gallery.write(out / "index.html", page)
        record_outputs(out, "objdisc visualize", [*written, out / "index.html"])
    return out / "index.html"


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


__all__ = ["Redrawer", "RunView", "select", "visualize"]
