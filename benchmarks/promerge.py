"""ProMerge: objdisc against facebookresearch/ProMerge's promerge.py on the same random weights and photos.

    python benchmarks/promerge.py --images ../shared/data/coco128/images --limit 20 \
        --promerge ~/src/ProMerge [--e2e 5] [--json out.json]

Needs a checkout of facebookresearch/ProMerge (``promerge/``: promerge.py, crf.py, dino.py,
utils.py, annotations.py) and pydensecrf (``pip install 'objdisc[crf]'``). objdisc ships none of
its code: it is imported from the given folder, with three shims that change no computation:
``.cuda()`` is the identity (this machine has no GPU), and the plotting-only imports
(``detectron2.utils.colormap``, ``matplotlib``) are stand-ins. Its settings are
``run_script.sh``'s (DINO ViT-B/8 keys, 480 x 480, stride 4, the thresholds objdisc's defaults
copy); its own model is ProMerge's ``dino.ViTFeat`` with every parameter random (position
embeddings and tokens non-smooth), saved in the release layout and loaded by objdisc.

A random 12-block ViT's keys share one direction (rank collapse: 77-98 % of the affinities are
above ``tau`` on these photos), so every point's mask touches every border, every point is a
background candidate and no image has an object: a comparison of nothing. With ``--depth 1``
(the default; both models keep their first block and read its keys) the affinities spread
(median 0.05-0.24) and the photos have 2-6 objects each. The full-depth keys are compared with
DINO's release code in ``benchmarks/fidelity.py``.

1. **Same features** (``--limit`` photos): ProMerge's own loop (``ProMerge.__call__``: its
   points, mask splitting, background vote, ``cascade_filter``, the merging, the CRF) is given
   objdisc's keys of each photo, so that only the two implementations of the method differ. Its
   masks before the CRF (what it hands ``densecrf``) are compared with objdisc's
   (``unrefined_masks``, 480 x 480) as sets (its clusters live in a Python ``set`` iterated in
   memory order); its final masks (``densecrf``, hole filling, the IoU filter, the resize,
   ``create_annotation_info``'s threshold) with objdisc's ``finalize_masks``.
2. **Own features** (``--e2e`` photos): ProMerge's loop on its own model's keys against objdisc's
   masks; where they differ, the number of affinities within 1e-5 of ``tau`` (the keys of the two
   models differ by ~1e-6, so a patch that close to the threshold may fall either side).
3. **Seconds per image**: ProMerge's loop with its model and the CRF, against ``objdisc run
   --method promerge`` on the same photos with ``--post-workers 0`` and ``2``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fidelity import randomise  # benchmarks/ is on the path when a script here runs

from objdisc.commands.run import RunConfig, run
from objdisc.images import fixed_model_input, load_image, make_batch
from objdisc.methods.promerge import ProMerge
from objdisc.models.backbones import create_backbone
from objdisc.models.features import KeyExtractor
from objdisc.refinement.pixel_chain import finalize_masks, unrefined_masks

FIXED, PATCH, NAME = 480, 8, "dino_vitb8"
SETTINGS = {
    "stride": 4, "bipartition_tau": 0.2, "foreground_include_tau": 0.1, "intersection_merge_tau": 0.5,
    "dino_merge_tau": 0.1, "cc_maskarea_tau": 0.5, "merge_ioa_tau": 0.1, "iou_filter_tau": 0.8,
}  # fmt: skip  (run_script.sh)


def import_official(promerge: Path) -> dict[str, Any]:
    """ProMerge's modules, with the plotting-only imports stubbed."""
    colormap = types.ModuleType("detectron2.utils.colormap")
    colormap.random_color = lambda rgb=False, maximum=255: np.zeros(3)  # type: ignore[attr-defined]
    for name, module in (("detectron2", types.ModuleType("detectron2")),
                         ("detectron2.utils", types.ModuleType("detectron2.utils")),
                         ("detectron2.utils.colormap", colormap)):  # fmt: skip
        sys.modules.setdefault(name, module)
    if importlib.util.find_spec("matplotlib") is None:
        plt = types.ModuleType("matplotlib.pyplot")
        sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
        sys.modules.setdefault("matplotlib.pyplot", plt)
    sys.path.insert(0, str(promerge / "promerge"))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    return {name: importlib.import_module(name) for name in ("promerge", "dino", "utils", "annotations", "crf")}


def official_model(mods: dict[str, Any], depth: int) -> torch.nn.Module:
    """ProMerge's ``dino.ViTFeat`` (ViT-B/8 keys) around a random model of its first ``depth``
    blocks (its constructor downloads)."""
    dino = mods["dino"]
    feat = dino.ViTFeat.__new__(dino.ViTFeat)
    torch.nn.Module.__init__(feat)
    feat.model = dino.vit_base(patch_size=PATCH, num_classes=0)
    feat.model.blocks = feat.model.blocks[:depth]
    feat.feat_dim, feat.vit_feat, feat.patch_size = 768, "k", PATCH
    randomise(feat.model, seed=0)
    return feat.eval()


class Given(torch.nn.Module):
    """A stand-in backbone handing ProMerge's loop the given keys, one image per call."""

    def __init__(self, feats: list[torch.Tensor]) -> None:
        super().__init__()
        self.feats = list(feats)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.feats.pop(0).T[None]  # (1, C, N), as ViTFeat


def official_run(mods: dict[str, Any], files: list[Path], backbone: torch.nn.Module, work: Path) -> tuple[list, float]:
    """Per image ``(masks before the CRF, final masks)`` from ProMerge's loop, and its seconds."""
    folder = work / "official_images"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, path in enumerate(files):
        (folder / f"{i:05d}{path.suffix}").symlink_to(path.resolve())
    pm = mods["promerge"]
    args = argparse.Namespace(image_dir=str(folder), fixed_size=FIXED, img_out_dir=None, final_figures_dir=None,
                              **SETTINGS)  # fmt: skip
    method = pm.ProMerge(args)
    records: list[list[tuple[np.ndarray, np.ndarray]]] = []
    real_crf = pm.densecrf

    class Counting(torch.nn.Module):  # a new image starts with each forward pass
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            records.append([])
            return backbone(image)

    def recording_crf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = real_crf(image, mask)
        records[-1].append((mask.copy(), out.copy(), image.shape))
        return out

    pm.densecrf = recording_crf
    pm.tqdm = lambda items: items
    start = time.perf_counter()
    method(Counting())
    seconds = time.perf_counter() - start
    pm.densecrf = real_crf
    results = []
    for path, calls in zip(files, records, strict=True):
        width, height = pm.Image.open(path).size
        pre, finals = [], []
        for mask, out, _ in calls:
            pre.append(mask >= 0.5)
            refined = pm.ndimage.binary_fill_holes(out >= 0.5)
            if mods["utils"].IoU(torch.from_numpy(refined), torch.from_numpy(mask)) < 0.5:
                continue
            resized = np.asarray(pm.Image.fromarray(np.uint8(refined * 255)).resize((width, height)))
            info = mods["annotations"].create_annotation_info(1, 1, resized.copy())
            if info is not None:
                from pycocotools import mask as mask_util

                rle = dict(info["segmentation"], counts=info["segmentation"]["counts"].encode())
                finals.append(mask_util.decode(rle).astype(bool))
        results.append((pre, finals))
    return results, seconds / len(files)


def objdisc_masks(backbone: Any, path: Path) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """objdisc's keys ``(N, C)`` of one photo, its masks before the CRF (480) and final (original size)."""
    original, hw = load_image(path)
    image = fixed_model_input(original, FIXED, PATCH)
    x = make_batch([torch.from_numpy(np.ascontiguousarray(image))], PATCH, backbone.spec.mean, backbone.spec.std)
    with KeyExtractor(backbone.model) as keys, torch.inference_mode():
        feats = keys(x)
    grid = (x.shape[2] // PATCH, x.shape[3] // PATCH)
    (found,) = ProMerge()(feats, grid, PATCH, torch.tensor([image.shape[:2]])).to_host(PATCH, [image.shape[:2]])
    pre = [m > 0.5 for m in unrefined_masks(found, (FIXED, FIXED), FIXED, hw, exclusive=False)]
    final = finalize_masks(found, lambda: original, hw, FIXED, True, exclusive=False)
    return feats[0], pre, list(final.pixel_masks())


def same(theirs: list[np.ndarray], ours: list[np.ndarray]) -> bool:
    """The two lists hold the same masks, in any order."""
    key = sorted(m.tobytes() for m in theirs if m.any())
    return key == sorted(m.tobytes() for m in ours if m.any())


def near_threshold(feats: torch.Tensor, band: float = 1e-5) -> int:
    """How many (point, patch) affinities lie within ``band`` of ProMerge's ``tau``."""
    unit = feats / (feats.norm(dim=-1, keepdim=True) + 1e-5)
    h = w = FIXED // PATCH
    points = [r * w + c for r in range(0, h, 4) for c in range(0, w, 4)]
    return int(((unit[points] @ unit.T - SETTINGS["bipartition_tau"]).abs() < band).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--e2e", type=int, default=5, help="photos for the own-features comparison and the timing")
    parser.add_argument("--promerge", type=Path, required=True, help="facebookresearch/ProMerge checkout")
    parser.add_argument("--depth", type=int, default=1, help="blocks of the random ViT-B/8 (module docstring)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    mods = import_official(args.promerge)
    report: dict[str, Any] = {"model": NAME, "depth": args.depth, "images": len(files)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        official = official_model(mods, args.depth)
        weights = work / f"{NAME}.pth"
        torch.save(official.model.state_dict(), weights)
        backbone = create_backbone(NAME, weights, depth=args.depth)
        ours = [objdisc_masks(backbone, path) for path in files]
        # 1. same features
        theirs, _ = official_run(mods, files, Given([feats for feats, _, _ in ours]), work)
        for stage, index in (("same_features_pre_crf", 0), ("same_features_final", 1)):
            differ = [p.name for p, t, o in zip(files, theirs, ours, strict=True) if not same(t[index], o[index + 1])]
            report[stage] = {"identical": len(files) - len(differ), "differ": differ}
        report["objects_per_image"] = float(np.mean([len(o[1]) for o in ours]))
        report["images_without_objects"] = sum(not o[1] for o in ours)
        # 2. own features, and 3. ProMerge's seconds per image
        e2e = files[: args.e2e]
        theirs, official_seconds = official_run(mods, e2e, official, work)
        pairs = zip(e2e, theirs, ours[: len(e2e)], strict=True)
        differ = {p.name: near_threshold(o[0]) for p, t, o in pairs if not same(t[0], o[1])}
        report["own_features_pre_crf"] = {"identical": len(e2e) - len(differ), "differ_near_threshold": differ}
        folder = work / "official_images"
        seconds = {"official": official_seconds}
        for workers in (0, 2):
            config = RunConfig.flat(NAME, "folder", work / f"run_{workers}", weights=weights, images=folder,
                                    method="promerge", workers=0, post_workers=workers,
                                    model_kwargs={"depth": args.depth})  # fmt: skip
            start = time.perf_counter()
            run(config, progress=False)
            seconds[f"objdisc_post_workers_{workers}"] = (time.perf_counter() - start) / len(e2e)
        report["seconds_per_image"] = seconds
        report["speedup"] = seconds["official"] / min(v for k, v in seconds.items() if k != "official")
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
