"""A picture per image of what a run's method did (``objdisc visualize``: :mod:`objdisc.commands.visualize`).

The run folder holds objects, not the maps the method read, so each picture is recomputed with
the run's model, method and options (:class:`Redrawer`; the command rebuilds them from
``run.json``): the image is run again, and the recomputed boxes are checked against the run's
(a difference is noted on the picture's row, e.g. after a GPU run redrawn on CPU). Any
registered method is drawn: its boxes, seeds and masks, and its score map as the method shows
it (:meth:`~objdisc.methods.base.Method.display_map`).
Pictures go to ``OUT/<run name>/<image>.png`` with thumbnails in ``OUT/<run name>/thumbs/``,
the page to ``OUT/index.html`` (``OUT`` defaults to ``RUN/vis``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from objdisc.engine.run_files import read_per_image
from objdisc.errors import ObjdiscError
from objdisc.reports import gallery, print_figures
from objdisc.reports.panels import figure
from objdisc.utils.jsonio import read_json

if TYPE_CHECKING:
    from objdisc.images import Member
    from objdisc.methods import Method
    from objdisc.models.backbones import Backbone
    from objdisc.models.feature_spec import FeatureSpec

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
    """Recomputes one run's method on chosen images and draws them.

    Args:
        view: the run folder's files.
        backbone: the run's model, built with its weights (and test-time registers).
        method: the run's method with its options.
        features: the features the method read.
        precision: the model's compute precision.
        max_side: the run's ``--max-side``.
        patch_resize: the run resized images to the nearest patch multiple.
        truths: file name -> ground-truth mask, for a saliency dataset's run (else empty).
        members: file name -> ``(shard, member)`` for images stored in tar shards (else the image
            is the file ``name`` under the run's image root).
        print_formats: also write each picture for print (:mod:`.print_figures`) in these
            formats, to ``OUT/<run name>/figures/<image>.<format>``.
        grid: the print figures' ``(rows, cols)``, or ``None`` (as square as the panels allow).
        width: the print figures' width in inches.
    """

    def __init__(
        self,
        view: RunView,
        backbone: Backbone,
        method: Method,
        features: FeatureSpec,
        precision: str,
        max_side: int | None = None,
        patch_resize: bool = False,
        truths: dict[str, Path] | None = None,
        members: dict[str, tuple[Path, Member]] | None = None,
        print_formats: tuple[str, ...] = (),
        grid: tuple[int, int] | None = None,
        width: float | None = None,
    ) -> None:
        from objdisc.models.features import FeatureExtractor
        from objdisc.models.token_probe import TokenProbe

        self.view = view
        self.backbone = backbone
        self.device = next(backbone.model.parameters()).device
        self.method = method
        self.features = features
        self.precision = precision
        self.max_side = max_side
        self.patch_resize = patch_resize
        self.truths = truths or {}
        self.members = members or {}
        self.print_formats, self.grid, self.width = print_formats, grid, width
        self.root = Path(view.info["dataset"]["image_root"])
        # Hooks registered once; one full forward pass per image gives both features and norms.
        spec = backbone.spec
        self.extractor = FeatureExtractor(backbone.model, [features], stop=False)
        self.written: list[Path] = []  # print figures written
        self.probe = TokenProbe(backbone.model, spec.num_registers, spec.class_token)

    def _saliency_panels(self, name: str, found: Any, image_hw: tuple[int, int]) -> list[tuple[np.ndarray, str]]:
        """For a run that wrote saliency maps: the mask, the refined mask and soft map
        (``--refine``) or the method's soft map (FOUND's multi mode), the ground truth; each
        ``(H, W)`` in ``[0, 1]``."""
        from objdisc.engine.saliency_maps import MASKS, SOFT, png_name
        from objdisc.evaluation.saliency import read_mask, read_prediction, union_map

        folder = self.view.folder
        if not (folder / MASKS).is_dir():
            return []
        out = [(union_map(found, image_hw), "mask")]
        soft = folder / SOFT / png_name(name)
        if soft.is_file() and self.view.info["options"].get("refine", "none") == "bilateral":
            out.append((read_prediction(folder / MASKS / png_name(name)), "refined mask (bilateral solver)"))
            out.append((read_prediction(soft), "solver output (soft, scored)"))
        elif soft.is_file():  # the method's own soft map (FOUND's multi mode)
            out.append((read_prediction(soft), "soft map (scored)"))
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
        path, member = self.members.get(name, (self.root / name, None))
        original, _ = load_image(path, patch_size=patch, member=member)
        if self.max_side is None:
            image = original
        else:
            image = load_image(path, max_side=self.max_side, patch_size=patch, member=member)[0]
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
        if self.print_formats:
            self.written += print_figure(
                original, ran, self.view.gt.get(entry["image_id"], []), seeds, masks,
                self.method.display_map(score_map), norms.patch[-1].float().cpu().numpy(), patch, model_hw,
                self.method.map_label, caption, self._saliency_panels(name, found, original.shape[:2]),
                out / "figures" / stem, self.print_formats, self.grid, self.width,
                print_figures.describe(self.view.info["producer"], f"{self.method.name}; {self.view.folder.name}"),
            )  # fmt: skip
        full, thumb = out / f"{stem}.png", out / "thumbs" / f"{stem}.jpg"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        _write(full, ".png", picture)
        scale = THUMB_HEIGHT / picture.shape[0]
        small = cv2.resize(picture, (max(1, int(picture.shape[1] * scale)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
        _write(thumb, ".jpg", small)
        return gallery.Cell(f"{out.name}/{full.name}", f"{out.name}/thumbs/{thumb.name}", hit, iou, note)


def print_figure(
    rgb: np.ndarray,
    ran: list[dict[str, Any]],
    gt_boxes: list[list[float]],
    seeds: list[int],
    masks: np.ndarray,
    score_map: np.ndarray,
    norm_map: np.ndarray,
    patch: int,
    model_hw: tuple[int, int],
    score_label: str,
    caption: str,
    extra: list[tuple[np.ndarray, str]],
    stem: Path,
    formats: tuple[str, ...],
    grid: tuple[int, int] | None,
    width: float | None,
    about: str = "",
) -> list[Path]:
    """The picture of :meth:`Redrawer.draw` for print: the image with vector boxes, masks and
    seeds, the maps with colour bars, the saliency masks (:func:`.print_figures.figure`);
    ``about`` (what produced it) goes in each file's metadata."""
    from objdisc.reports.panels import grid_to_image
    from objdisc.reports.print_figures import COLUMN_WIDTH, Panel

    height, width_px = rgb.shape[:2]
    image_hw = (height, width_px)
    boxes = [("blue", box, 0.8) for box in gt_boxes]
    boxes += [("orange", o["box"], 1.4 if k == 0 else 0.9) for k, o in enumerate(ran)]
    grid_w = masks.shape[-1] if masks.ndim == 3 else max(1, model_hw[1] // patch)
    sx, sy = width_px / model_hw[1], height / model_hw[0]
    points = []
    for seed in seeds:
        if seed >= 0:
            row, col = divmod(int(seed), grid_w)
            points.append(((col + 0.5) * patch * sx, (row + 0.5) * patch * sy))
    panels = [
        Panel(
            "image",
            image=rgb,
            boxes=boxes,
            masks=[grid_to_image(m.astype(np.float32), patch, model_hw, image_hw) > 0.5 for m in masks],
            points=points,
            note="truth blue, found orange, seed vermillion, mask sky blue",
        ),
        Panel("method's map", values=grid_to_image(score_map, patch, model_hw, image_hw), colorbar=score_label),
        Panel(
            "token norms",
            values=grid_to_image(norm_map, patch, model_hw, image_hw),
            colorbar="output patch-token L2 norm",
        ),
    ]
    panels += [Panel(label, values=values, colorbar=label, cmap="gray", limits=(0.0, 1.0)) for values, label in extra]
    return print_figures.figure(panels, caption, stem, formats, grid, width or COLUMN_WIDTH, about)


def _write(path: Path, ext: str, image: np.ndarray) -> None:
    ok, data = cv2.imencode(ext, image)
    if not ok:
        raise RuntimeError(f"encoding {path} failed")
    path.write_bytes(data.tobytes())


__all__ = ["THUMB_HEIGHT", "Redrawer", "RunView", "print_figure", "select"]
