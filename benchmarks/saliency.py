"""Saliency: objdisc against TokenCut's get_saliency.py on the same random weights, photos and masks.

    python benchmarks/saliency.py --images ../shared/data/coco128/images \
        --annotations ../shared/data/coco128/annotations/instances_train2017.json \
        --tokencut ~/src/TokenCut --limit 20 [--json out.json]

Needs a checkout of YangtaoWANG95/TokenCut (``unsupervised_saliency_detection/``: dino.py,
object_discovery.py, utils.py, bilateral_solver.py, metric.py) and scikit-image (its
bilateral_solver.py imports it). objdisc ships none of their code: it is imported from there.

The check writes its own saliency set: the first ``--limit`` photos that have objects, each with
a ground-truth PNG made from its COCO polygons (the union of the image's non-crowd instances,
0 / 255). Then, on DINO ViT-S/16 (TokenCut's ``dino.ViTFeat``, every parameter random, saved in
the release layout and loaded by objdisc with ``create_backbone``), tau 0.2, keys:

- official, as get_saliency.py's loop: ``get_tokencut_binary_map`` (PIL, ``resize_pil``,
  ``ncut``), ``bilateral_solver_output`` (sigma 16 / 16 / 8) and ``metric.metrics`` on the
  masks and on the solver's soft outputs. Two shims let it run here, and say so: ``.cuda()``
  and ``.to('cuda')`` stay on the CPU, and scipy's ``cg`` gets ``rtol`` for the ``tol`` that
  scipy 1.14 removed;
- objdisc: ``objdisc run --dataset saliency --method tokencut`` with and without
  ``--refine bilateral`` on the same files.

Compared: the masks before the solver (official bipartitions against ``OUT/masks``): identical
or not; the solver's soft output on the same mask (official against
:func:`objdisc.refinement.bilateral.bilateral_solve`): max abs difference, and seconds per
image of each; the metrics: official against ``metrics.json``, and objdisc's metric code on the
official masks against ``metric.metrics`` on them (the arithmetic alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fidelity import randomise  # benchmarks/ is on the path when a script here runs

from objdisc.commands.run import RunConfig, run
from objdisc.evaluation.saliency import counts, read_mask, scores
from objdisc.refinement.bilateral import bilateral_solve

TAU, PATCH = 0.2, 16


def make_set(images: Path, annotations: Path, limit: int, out: Path) -> tuple[Path, Path]:
    """``out/img`` and ``out/gt``: the first ``limit`` photos with objects and their union masks."""
    import contextlib
    import io

    from PIL import Image
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
    img_dir, gt_dir = out / "img", out / "gt"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir()
    made = 0
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        if not anns or not (images / info["file_name"]).is_file():
            continue
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in anns:
            mask |= coco.annToMask(ann).astype(bool)
        (img_dir / info["file_name"]).write_bytes((images / info["file_name"]).read_bytes())
        Image.fromarray(mask.astype(np.uint8) * 255).save(gt_dir / f"{Path(info['file_name']).stem}.png")
        made += 1
        if made == limit:
            break
    return img_dir, gt_dir


def import_official(tokencut: Path) -> dict[str, Any]:
    """TokenCut's saliency modules, with the two shims (module docstring)."""
    import scipy.sparse.linalg

    sys.path.insert(0, str(tokencut / "unsupervised_saliency_detection"))
    import bilateral_solver
    import dino
    import metric
    import object_discovery
    import utils

    real_cg = scipy.sparse.linalg.cg

    def cg(*args: Any, tol: float | None = None, **kwargs: Any) -> Any:
        if tol is not None:
            kwargs["rtol"] = tol
        return real_cg(*args, **kwargs)

    bilateral_solver.cg = cg
    real_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if a == "cuda" else a for a in args)
        return real_to(self, *args, **kwargs)

    torch.Tensor.to = to  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    return {"dino": dino, "tokencut": object_discovery, "utils": utils, "solver": bilateral_solver, "metric": metric}


def official_model(mods: dict[str, Any]) -> torch.nn.Module:
    """TokenCut's ``ViTFeat`` around a random DINO ViT-S/16 (its constructor downloads; this one does not)."""
    dino = mods["dino"]
    feat = dino.ViTFeat.__new__(dino.ViTFeat)
    torch.nn.Module.__init__(feat)
    feat.model = dino.vit_small(patch_size=PATCH, num_classes=0)
    feat.feat_dim, feat.vit_feat, feat.patch_size = 384, "k", PATCH
    randomise(feat.model, seed=0)
    return feat.eval()


def official(mods: dict[str, Any], model: torch.nn.Module, img_dir: Path, gt_dir: Path) -> dict[str, Any]:
    """get_saliency.py's loop: masks, soft outputs, seconds of the solver, and its metrics."""
    from PIL import Image
    from torchvision import transforms

    to_tensor = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    masks, softs, gts, seconds = {}, {}, [], []
    for name in sorted(p.name for p in img_dir.iterdir()):
        image = Image.open(img_dir / name).convert("RGB")
        resized, w, h, feat_w, feat_h = mods["utils"].resize_pil(image, PATCH)
        feats = model(to_tensor(resized).unsqueeze(0))[0]
        _, bipartition, _ = mods["tokencut"].ncut(feats, [feat_h, feat_w], [PATCH, PATCH], [h, w], TAU)
        start = time.perf_counter()
        soft, _ = mods["solver"].bilateral_solver_output(
            str(img_dir / name), bipartition, sigma_spatial=16, sigma_luma=16, sigma_chroma=8
        )
        seconds.append(time.perf_counter() - start)
        masks[name], softs[name] = bipartition, soft
        gts.append(np.array(Image.open(gt_dir / name.replace(".jpg", ".png")).convert("L")))
    names = sorted(masks)
    return {
        "masks": masks,
        "softs": softs,
        "solver_s": float(np.mean(seconds)),
        "metrics": mods["metric"].metrics([masks[n] for n in names], gts),
        "metrics_bs": mods["metric"].metrics([softs[n] for n in names], gts),
    }


def objdisc_run(img_dir: Path, gt_dir: Path, weights: Path, out: Path, refine: str) -> dict[str, float]:
    config = RunConfig.flat(
        "dino_vits16", "saliency", out, weights=weights, images=img_dir, annotations=gt_dir,
        method="tokencut", method_options={"tau": TAU}, refine=refine, workers=0, batch_size=1,
    )  # fmt: skip
    values = run(config, progress=False).metrics["metrics"]["saliency"]["values"]
    return {k: v / 100.0 for k, v in values.items()}


def compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from PIL import Image

    img_dir, gt_dir = make_set(args.images, args.annotations, args.limit, work / "set")
    mods = import_official(args.tokencut)
    model = official_model(mods)
    weights = work / "dino_vits16.pth"
    torch.save(model.model.state_dict(), weights)
    theirs = official(mods, model, img_dir, gt_dir)
    plain = objdisc_run(img_dir, gt_dir, weights, work / "plain", "none")
    refined = objdisc_run(img_dir, gt_dir, weights, work / "bs", "bilateral")
    names = sorted(theirs["masks"])
    identical, differ, soft_diff, ours_s = 0, [], 0.0, []
    for name in names:
        ours = np.array(Image.open(work / "plain" / "masks" / f"{Path(name).stem}.png")) > 127
        if np.array_equal(ours, theirs["masks"][name] > 0.5):
            identical += 1
        else:
            differ.append(name)
        rgb = np.array(Image.open(img_dir / name).convert("RGB"))
        start = time.perf_counter()
        soft = bilateral_solve(rgb, theirs["masks"][name])
        ours_s.append(time.perf_counter() - start)
        soft_diff = max(soft_diff, float(np.abs(soft - theirs["softs"][name]).max()))
    gts = [read_mask(gt_dir / f"{Path(n).stem}.png") for n in names]
    on_their_masks = scores([counts(theirs["masks"][n], g) for n, g in zip(names, gts, strict=True)])
    on_their_softs = scores([counts(theirs["softs"][n], g) for n, g in zip(names, gts, strict=True)])
    key = {"F_max": "max_fbeta", "IoU": "iou", "accuracy": "accuracy"}

    def gap(official: dict[str, float], ours: dict[str, float | None]) -> dict[str, float]:
        return {k: abs(official[k] - float(ours[v] or 0.0)) for k, v in key.items()}

    report = {
        "images": len(names),
        "masks_before_solver": {"identical": identical, "differ": differ},
        "solver_max_abs_diff_same_mask": soft_diff,
        "solver_seconds_per_image": {
            "official": theirs["solver_s"],
            "objdisc": float(np.mean(ours_s)),
            "speedup": theirs["solver_s"] / float(np.mean(ours_s)),
        },
        "metrics": {
            "official_tokencut": theirs["metrics"],
            "objdisc_tokencut": plain,
            "official_tokencut_bs": theirs["metrics_bs"],
            "objdisc_tokencut_bs": refined,
        },
        "metric_code_on_official_masks_abs_diff": gap(theirs["metrics"], on_their_masks),
        "metric_code_on_official_softs_abs_diff": gap(theirs["metrics_bs"], on_their_softs),
    }
    print(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances of those images")
    parser.add_argument("--tokencut", type=Path, required=True, help="YangtaoWANG95/TokenCut checkout")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        report = compare(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
