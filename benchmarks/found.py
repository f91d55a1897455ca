"""FOUND: objdisc against valeo.ai's FOUND on the same random ViT-S/8, its released head and real photos.

    python benchmarks/found.py --images ../shared/data/coco128/images \
        --annotations ../shared/data/coco128/annotations/instances_train2017.json \
        --found ~/src/FOUND --dino ~/src/dino [--limit 20] [--unfused] [--json out.json]

Needs checkouts of valeo.ai/FOUND (``model.py``, ``bkg_seg.py``, ``misc.py``, ``evaluation/``,
``data/weights/decoder_weights.pt``) and facebookresearch/dino (its ``vision_transformer.py``,
FOUND's ``dino`` submodule). objdisc ships none of their code: it is imported from the folders,
with ``.cuda()`` as the identity (no GPU here). FOUND's ``FoundModel`` is assembled as its
constructor does, around DINO's ViT-S/8 with every parameter random (position embeddings and
tokens non-smooth, :func:`fidelity.randomise`) instead of the downloaded weights, and FOUND's
released ``decoder_weights.pt``; objdisc loads the same weights and the same head file.

Per photo, at its full size padded to a multiple of 8 (FOUND's evaluation):

1. **Background masks** (grid): FOUND's ``compute_background_batch`` against objdisc's
   :func:`objdisc.methods.found.background`, counted identical;
2. **Head output**: FOUND's decoder logits against objdisc's (``--method found --found-head``),
   the largest absolute difference (the keys of the two ViTs differ by ~3e-6 with PyTorch's fused
   attention; ``--unfused`` makes objdisc's attention DINO's explicit softmax);
3. **Pixel masks**: FOUND's "single" mode (``evaluation/saliency.py``: upsampled logits, the
   largest component that is not the background) against objdisc's final mask, counted identical;
4. **Metrics**: FOUND's metric files (``evaluation/metrics``: IoU, pixel accuracy, F-max, MAE,
   S-measure) against objdisc's (:mod:`objdisc.evaluation.saliency`), on the single-mode mask and
   on the soft map (``sigmoid`` of the upsampled logits, FOUND's "multi" mode; objdisc's from
   ``--found-mode multi``'s :meth:`~objdisc.methods.found.Found.saliency_map`), with the union of
   each photo's COCO masks as the ground truth; the largest difference of each dataset average;
5. **Multi-mode pixel masks**: FOUND's ``sigmoid(up) > 0.5`` (every component) against objdisc's
   ``--found-mode multi`` mask, counted identical.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fidelity import randomise  # benchmarks/ is on the path when a script here runs

from objdisc.evaluation.saliency import counts, scores
from objdisc.images import load_image, make_batch
from objdisc.methods.found import Found, background, pixel_object, split
from objdisc.models.backbones import create_backbone
from objdisc.models.feature_spec import FeatureSpec
from objdisc.models.features import FeatureExtractor

PATCH = 8


def import_found(found: Path, dino: Path) -> dict[str, Any]:
    """FOUND's modules (``dino`` resolving to the DINO checkout)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    sys.path.insert(0, str(dino.parent))
    if dino.name != "dino":
        raise SystemExit(f"--dino {dino}: the checkout's folder must be called dino (FOUND imports dino.*)")
    sys.path.insert(0, str(found))
    sys.path.append(str(dino))  # DINO's vision_transformer.py imports its own utils
    names = ("model", "bkg_seg", "evaluation.metrics.f_measure", "evaluation.metrics.iou", "evaluation.metrics.mae",
             "evaluation.metrics.pixel_acc", "evaluation.metrics.s_measure")  # fmt: skip
    return {name: importlib.import_module(name) for name in names}


def found_model(mods: dict[str, Any], head: Path) -> torch.nn.Module:
    """FOUND's ``FoundModel`` as its constructor builds it, with random ViT-S/8 weights and ``head``."""
    vits = importlib.import_module("dino.vision_transformer")
    model_module = mods["model"]
    model = model_module.FoundModel.__new__(model_module.FoundModel)
    torch.nn.Module.__init__(model)
    encoder = vits.vit_small(patch_size=PATCH, num_classes=0)
    randomise(encoder, seed=0)
    encoder.eval().requires_grad_(False)
    hook: dict[str, torch.Tensor] = {}
    encoder.blocks[-1].attn.qkv.register_forward_hook(lambda module, inputs, output: hook.__setitem__("qkv", output))
    model.vit_encoder, model.initial_dim, model.hook_features = encoder, 384, hook
    model.vit_patch_size, model.enc_type_feats, model.bkg_type_feats, model.bkg_th = PATCH, "k", "k", 0.3
    model.previous_dim = 384
    model.decoder = torch.nn.Conv2d(384, 1, (1, 1))
    model.decoder.load_state_dict(torch.load(head, map_location="cpu", weights_only=True)["decoder"])
    return model.eval()


def single_mode(preds_up: torch.Tensor) -> torch.Tensor:
    """FOUND's single-mode selection (``evaluation/saliency.py``), on a ``(1, 1, H, W)`` 0/1 map."""
    from scipy import ndimage

    labeled, nr_objects = ndimage.label(preds_up.squeeze().numpy())
    if nr_objects == 0:
        return preds_up.squeeze()
    nb_pixel = [np.sum(labeled == i) for i in range(nr_objects + 1)]
    pixel_order = np.argsort(nb_pixel)
    cc = torch.stack([torch.Tensor(labeled == i) for i in pixel_order])
    cc_background = ((((~(preds_up[None].bool())).float() + cc[:, None, :, :]) > 1).sum(-1).sum(-1).argmax())
    pixel_order = np.delete(pixel_order, int(cc_background))
    return torch.Tensor(labeled == pixel_order[-1])


def found_metrics(mods: dict[str, Any], pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """FOUND's ``eval_batch`` averages over ``(prediction, ground truth)`` pairs, fractions."""
    f_measure = mods["evaluation.metrics.f_measure"].FMeasure()
    out: dict[str, list[float]] = {"iou": [], "accuracy": [], "fmax_found": [], "mae": [], "s_measure": []}
    for pred, gt in pairs:
        binary = (pred > 0.5).float()
        out["iou"].append(float(mods["evaluation.metrics.iou"].compute_iou(binary, gt)))
        out["accuracy"].append(float(mods["evaluation.metrics.pixel_acc"].compute_pixel_accuracy(binary, gt)))
        out["fmax_found"].append(float(f_measure(pred, gt)["f_max"]))
        out["mae"].append(float(mods["evaluation.metrics.mae"].compute_mae(binary, gt)))
        s_measure = mods["evaluation.metrics.s_measure"].SMeasure()
        s_measure.cuda = False
        out["s_measure"].append(float(s_measure(pred_mask=pred, gt_mask=gt.clone().float())))
    return {k: float(np.mean(v)) for k, v in out.items()}


def coco_truth(annotations: Path) -> dict[str, np.ndarray]:
    """file name -> the union of its COCO masks (bool)."""
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    out = {}
    for image_id, info in coco.imgs.items():
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            mask |= coco.annToMask(ann).astype(bool)
        out[info["file_name"]] = mask
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances json of the photos")
    parser.add_argument("--found", type=Path, required=True, help="valeo.ai/FOUND checkout")
    parser.add_argument("--dino", type=Path, required=True, help="facebookresearch/dino checkout (folder named dino)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--unfused", action="store_true", help="objdisc's attention unfused (explicit softmax)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from torchvision import transforms

    mods = import_found(args.found, args.dino)
    head = args.found / "data" / "weights" / "decoder_weights.pt"
    model = found_model(mods, head)
    truths = coco_truth(args.annotations)
    files = sorted(p for p in args.images.iterdir() if p.name in truths)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "dino_vits8.pth"
        torch.save(model.vit_encoder.state_dict(), weights)
        backbone = create_backbone("dino_vits8", weights)
    if args.unfused:
        for block in backbone.model.blocks:
            block.attn.fused_attn = False
    method = Found(found_head=str(head))
    multi = Found(found_head=str(head), found_mode="multi")
    normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    to_tensor = transforms.Compose([transforms.ToTensor(), normalize])
    report: dict[str, Any] = {"images": len(files), "unfused": args.unfused, "background_identical": 0,
                              "head_max_abs_diff": 0.0, "pixel_identical": 0, "pixel_differ": [],
                              "multi_pixel_identical": 0, "multi_pixel_differ": []}  # fmt: skip
    theirs_single, theirs_soft, ours_single, ours_soft = [], [], [], []
    from PIL import Image

    for path in files:
        image, hw = load_image(path)
        batch = model.make_input_divisible(to_tensor(Image.open(path).convert("RGB"))[None])
        preds, _, shape_f, att = model.forward_step(batch, for_eval=True)
        their_bkg = model.compute_background_batch(att, shape_f)[0].bool()
        x = make_batch([torch.from_numpy(image)], PATCH, backbone.spec.mean, backbone.spec.std)
        grid = (x.shape[2] // PATCH, x.shape[3] // PATCH)
        with FeatureExtractor(backbone.model, [FeatureSpec("kattn", -1)]) as fx:
            feats = fx(x)
        keys, attention = split(feats, 0)
        our_bkg = background(keys, attention, 0.3)[0].reshape(grid)
        report["background_identical"] += int(torch.equal(their_bkg, our_bkg))
        found = method(feats, grid, PATCH, torch.tensor([hw]))
        logits = found.score_map[0]
        report["head_max_abs_diff"] = max(report["head_max_abs_diff"], float((logits - preds[0, 0]).abs().max()))
        report["head_max_abs_logit"] = max(report.get("head_max_abs_logit", 0.0), float(preds.abs().max()))
        their_keys = model.extract_feats(att.shape, "k")[:, 1:].reshape(1, -1, 384)
        report["keys_max_abs_diff"] = max(report.get("keys_max_abs_diff", 0.0), float((their_keys - keys).abs().max()))
        h, w = hw
        up = F.interpolate(preds, scale_factor=PATCH, mode="bilinear", align_corners=False)[..., :h, :w]
        theirs = single_mode((torch.sigmoid(up) > 0.5).float())
        (objects,) = found.to_host(PATCH, [hw])
        final = pixel_object(objects, hw, 0.0)
        ours = final.pixel_masks()[0] if len(final) else np.zeros(hw, dtype=bool)
        if np.array_equal(theirs.numpy() > 0.5, ours):
            report["pixel_identical"] += 1
        else:
            report["pixel_differ"].append(path.name)
        gt = torch.from_numpy(truths[path.name])
        theirs_single.append((theirs, gt))
        theirs_soft.append((torch.sigmoid(up)[0, 0], gt))
        ours_single.append(counts(ours.astype(np.float64), truths[path.name]))
        # multi mode: every component (FOUND's sigmoid > 0.5) and the soft map it scores
        theirs_multi = (torch.sigmoid(up) > 0.5)[0, 0].numpy()
        (multi_objects,) = multi(feats, grid, PATCH, torch.tensor([hw])).to_host(PATCH, [hw])
        multi_final = multi.finalize(multi_objects, lambda image=image: image, hw)
        ours_multi = multi_final.pixel_masks()[0] if len(multi_final) else np.zeros(hw, dtype=bool)
        if np.array_equal(theirs_multi, ours_multi):
            report["multi_pixel_identical"] += 1
        else:
            report["multi_pixel_differ"].append(path.name)
        soft = multi.saliency_map(multi_final, hw)
        ours_soft.append(counts(soft, truths[path.name]))
    for name, theirs, ours in (("single", theirs_single, ours_single), ("soft", theirs_soft, ours_soft)):
        expected, got = found_metrics(mods, theirs), scores(ours)
        report[f"metrics_{name}"] = {k: {"found": expected[k], "objdisc": got[k], "abs_diff": abs(expected[k] - got[k])}
                                     for k in expected}  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
