"""objdisc against the official release code: same random weights, same real photos.

    python benchmarks/fidelity.py --images ../shared/data/coco128/images --limit 50 \
        --dino ~/src/dino --dinov2 ~/src/dinov2 --lost ~/src/LOST [--tokencut ~/src/TokenCut] \
        [--models dino_vits16,dinov2_vits14,dinov2_reg_vits14] [--sizes native,224,trained]

Needs checkouts of the official repositories (objdisc ships none of their code):
facebookresearch/dino, facebookresearch/dinov2, valeoai/LOST (whose ``datasets.py`` imports
scikit-image) and, for ``--tokencut``, YangtaoWANG95/TokenCut. They are imported from the
given folders.

For every model: the official model is built as its hub / LOST code builds it, every
parameter randomised (position embeddings and tokens non-smooth), and its state dict saved
in the release layout (``.pth``). objdisc loads that file with ``create_backbone``, the way
a user loads a downloaded checkpoint. Then, per image and size (native, 224 x 224, the
trained size):

- keys: the official model's last-block keys, read as LOST reads them (a forward hook on
  ``blocks[-1].attn.qkv``, heads concatenated, CLS and registers dropped), against objdisc's
  ``KeyExtractor``; max |dk| and max |k|;
- boxes (native size): official LOST on the official keys (the image decoded and normalised
  as LOST's driver does: PIL + torchvision ``ToTensor`` / ``Normalize``, zero-padded) against
  ``objdisc run --dataset folder`` on the same files; an image whose boxes differ is checked
  again with official LOST's ``torch.argsort`` made stable, to tell its tie-breaking apart
  from a real difference;
- TokenCut (``--tokencut``, native size): official ``ncut`` against objdisc's TokenCut;
- DINO-seg (``--lost``, DINO models, native size): the official model's last-block attention
  (``get_last_selfattention``) against objdisc's ``attn`` features (max |da|), and official
  ``dino_seg`` (LOST's ``--dinoseg``, head 4) on the official attention against
  ``objdisc run --method dinoseg --dataset folder`` (which, as the official code, does not clip
  the box to the image); the images whose official box reaches past the image are counted (where
  ``--clip`` would change the box), and official crashes (a component covering every patch).

Test-time registers (``--ttr`` with a nickjiang2378/test-time-registers checkout, model
``dinov2_vitl14+ttr``): the authors' ``dinov2_vitl14_tt_reg`` hub model (their DINOv2 fork with
one zero token appended and their ``activate_on_registers`` hooks on the published neurons)
against objdisc's ``dinov2_vitl14`` with ``--test-time-registers builtin``, keys and boxes as
above (their hook acts on the first image of a batch only, so everything runs at batch size 1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from objdisc.commands.run import RunConfig, run
from objdisc.images import load_image, make_batch
from objdisc.methods import TokenCut
from objdisc.methods.lost import lost
from objdisc.models.backbones import create_backbone
from objdisc.models.features import KeyExtractor
from objdisc.models.specs import get_spec
from objdisc.models.test_time_registers import load_register_neurons


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random; position embeddings and tokens non-smooth (unit-scale noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "pos_embed" in name or "token" in name:
                p.copy_(0.5 * noise)
            elif p.ndim == 1 and (("norm" in name and name.endswith("weight")) or "gamma" in name):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:  # biases: small, or every key shares one direction and every A > 0
                p.copy_(0.002 * noise)
            else:
                p.add_(0.02 * noise)


def official_model(
    name: str, dino: Path | None, dinov2: Path | None, dinov3: Path | None = None, ttr: Path | None = None
) -> tuple[torch.nn.Module, int]:
    """(official model, number of prefix tokens) for an objdisc backbone name (``NAME+ttr``:
    the test-time-register model of the authors' DINOv2 fork)."""
    if name.endswith("+ttr"):
        if name != "dinov2_vitl14+ttr" or ttr is None:
            raise SystemExit("test-time registers: only dinov2_vitl14+ttr, with --ttr CHECKOUT")
        for module in [m for m in sys.modules if m == "dinov2" or m.startswith("dinov2.")]:
            del sys.modules[module]  # their fork has the package name of facebookresearch/dinov2
        sys.path.insert(0, str(ttr / "dinov2"))
        hub = importlib.import_module("dinov2.hub.backbones")
        sys.path.remove(str(ttr / "dinov2"))
        return hub.dinov2_vitl14_tt_reg(pretrained=False), 1
    spec = get_spec(name)
    if spec.family == "dino":
        sys.path.insert(0, str(dino))
        vits = importlib.import_module("vision_transformer")
        arch = "vit_small" if "vits" in name else "vit_base"
        return vits.__dict__[arch](patch_size=spec.patch_size, num_classes=0), 1
    if spec.family in ("dinov2", "dinov2_reg"):
        sys.path.insert(0, str(dinov2))
        hub = importlib.import_module("dinov2.hub.backbones")
        size = name.rsplit("_", 1)[1]  # vits14 ...
        fn = getattr(hub, f"dinov2_{size}" + ("_reg" if spec.family == "dinov2_reg" else ""))
        return fn(pretrained=False), 1 + spec.num_registers
    if spec.family == "dinov3":
        sys.path.insert(0, str(dinov3))
        hub = importlib.import_module("dinov3.hub.backbones")
        model = getattr(hub, f"dinov3_{name.rsplit('_', 1)[1]}")(pretrained=False)
        for block in model.blocks:  # the release sets the k third of the qkv bias mask to 0, the rest to 1
            mask = block.attn.qkv.bias_mask
            mask.fill_(1.0)
            mask[mask.numel() // 3 : 2 * mask.numel() // 3] = 0.0
        periods = model.rope_embed.periods  # the released files store them rounded to bfloat16
        periods.copy_(periods.bfloat16().float())
        return model, 1 + spec.num_registers
    raise SystemExit(f"no official code wired for {name}")


class OfficialKeys:
    """The official model's last-block keys, read as LOST's driver reads them."""

    def __init__(self, model: torch.nn.Module, num_prefix: int, num_suffix: int = 0) -> None:
        self.model, self.num_prefix, self.num_suffix, self.out = model, num_prefix, num_suffix, {}
        model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: self.out.__setitem__("qkv", o))
        self.heads = model.blocks[-1].attn.num_heads

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` padded image -> ``(N, C)`` patch keys."""
        self.model(image)
        qkv = self.out["qkv"]
        b, t, _ = qkv.shape
        qkv = qkv.reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        k = qkv[1].transpose(1, 2).reshape(b, t, -1)
        return k[0, self.num_prefix : t - self.num_suffix]


def official_input(path: Path, mean: tuple, std: tuple, patch: int) -> torch.Tensor:
    """LOST's driver: PIL RGB, ToTensor, Normalize, zero-padded bottom/right to a patch multiple."""
    from PIL import Image
    from torchvision import transforms

    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    x = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])(img)
    hp, wp = (int(np.ceil(s / patch) * patch) for s in x.shape[1:])
    padded = torch.zeros((3, hp, wp))
    padded[:, : x.shape[1], : x.shape[2]] = x
    return padded[None]


@contextlib.contextmanager
def stable_argsort() -> Iterator[None]:
    """Make ``torch.argsort`` stable (official LOST sorts degrees with the default, unstable one)."""
    original = torch.argsort
    torch.argsort = lambda *a, **k: original(*a, **{**k, "stable": True})  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.argsort = original  # type: ignore[assignment]


def compare_model(name: str, files: list[Path], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model, num_prefix = official_model(name, args.dino, args.dinov2, args.dinov3, args.ttr)
    randomise(model, seed=0)
    model.eval()
    weights = work / f"{name}_release.pth"
    torch.save(model.state_dict(), weights)
    base, ttr = name.removesuffix("+ttr"), name.endswith("+ttr")
    backbone = create_backbone(
        base, weights, test_time_registers=load_register_neurons("builtin", base) if ttr else None
    )
    spec, patch = backbone.spec, backbone.patch_size
    if args.unfused:  # explicit softmax attention, as the DINO release and the test-time-register fork run it
        for block in backbone.model.blocks:
            block.attn.fused_attn = False
    trained = int(backbone.model.patch_embed.grid_size[0]) * patch
    official = OfficialKeys(model, num_prefix, num_suffix=int(ttr))
    report: dict[str, Any] = {"model": name, "pos_embed": spec.pos_embed, "sizes": {}}
    with KeyExtractor(backbone.model) as ours, torch.inference_mode():
        for size in args.sizes:
            worst, key_max, n_exact, grids = 0.0, 0.0, 0, set()
            for path in files:
                image, _ = load_image(path)
                if size != "native":
                    side = trained if size == "trained" else int(size)
                    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
                x = make_batch([torch.from_numpy(image)], patch, spec.mean, spec.std)
                if size == "native":  # the official side decodes as LOST's driver does
                    x_off = official_input(path, spec.mean, spec.std, patch)
                    report.setdefault("input_max_abs_diff", 0.0)
                    report["input_max_abs_diff"] = max(report["input_max_abs_diff"], float((x - x_off).abs().max()))
                else:
                    x_off = x
                k_off, k_ours = official(x_off), ours(x)[0]
                d = float((k_off - k_ours).abs().max())
                worst, key_max = max(worst, d), max(key_max, float(k_off.abs().max()))
                n_exact += d == 0.0
                grids.add((x.shape[2] // patch, x.shape[3] // patch))
            report["sizes"][str(size)] = {
                "max_abs_dk": worst,
                "max_abs_k": key_max,
                "bit_identical": f"{n_exact}/{len(files)}",
                "grids": len(grids),
            }
            print(f"{name} {size}: max|dk| {worst:.3g} (max|k| {key_max:.3g}), bit-identical {n_exact}/{len(files)}")
    if ttr:  # the check's sensitivity: the same weights without the intervention, on two images
        plain = create_backbone(base, weights)
        with KeyExtractor(plain.model) as keys, torch.inference_mode():
            gaps = []
            for path in files[:2]:
                image, _ = load_image(path)
                x = make_batch([torch.from_numpy(image)], patch, spec.mean, spec.std)
                k_plain = keys(x)[0]
                gaps.append(float((official(official_input(path, spec.mean, spec.std, patch)) - k_plain).abs().max()))
        report["without_intervention_max_abs_dk"] = max(gaps)
        print(f"{name}: objdisc without test-time registers vs the official test-time-register model: {max(gaps):.3g}")
    if args.lost:
        report["lost"] = compare_boxes(name, files, backbone, official, weights, args, work)
        if spec.family == "dino":  # LOST's dino_seg reads DINO's get_last_selfattention
            report["dinoseg"] = compare_dinoseg(name, files, backbone, model, weights, args, work)
    return report


def compare_dinoseg(
    name: str, files: list[Path], backbone: Any, model: torch.nn.Module, weights: Path, args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """Official ``dino_seg`` on the official attention against ``objdisc run --method dinoseg``."""
    from objdisc.models.features import FeatureExtractor, FeatureSpec

    sys.path.insert(0, str(args.lost))
    od = importlib.import_module("object_discovery")
    folder = work / f"images_{name}"  # made by compare_boxes: 1-based ids in sorted order
    out = work / f"run_{name}_dinoseg"
    config = RunConfig.flat(
        backbone=name, dataset="folder", images=folder, out=out, weights=weights, overwrite=True, method="dinoseg"
    )
    run(config, progress=False)
    ours = {p["image_id"]: p["bbox"] for p in json.loads((out / "predictions.json").read_text())}
    spec, patch = backbone.spec, backbone.patch_size
    counts: dict[str, Any] = {
        "images": len(files), "same_box": 0, "box_past_the_image": 0, "differ": [], "official_failed": [],
        "max_abs_da": 0.0, "bit_identical_attention": 0,
    }  # fmt: skip
    with FeatureExtractor(backbone.model, [FeatureSpec("attn", -1)]) as extract, torch.inference_mode():
        for i, path in enumerate(files):
            x = official_input(path, spec.mean, spec.std, patch)
            h_img, w_img = image_hw_of(path)
            attentions = model.get_last_selfattention(x)  # (1, heads, T, T)
            image, _ = load_image(path)
            a_ours = extract(make_batch([torch.from_numpy(image)], patch, spec.mean, spec.std))[0]  # (N, heads)
            da = float((attentions[0, :, 0, 1:].T - a_ours).abs().max())
            counts["max_abs_da"] = max(counts["max_abs_da"], da)
            counts["bit_identical_attention"] += da == 0.0
            dims = (x.shape[2] // patch, x.shape[3] // patch)
            x1, y1, w, h = ours[i + 1]
            ours_box = [x1, y1, x1 + w, y1 + h]
            try:
                pred = [int(v) for v in od.dino_seg(attentions, dims, patch, head=4)]
            except ValueError as exc:  # min() of an empty array: the component covers every patch
                counts["official_failed"].append(f"{path.name}: {exc}")
                continue
            counts["box_past_the_image"] += pred[2] > w_img or pred[3] > h_img
            if pred == ours_box:
                counts["same_box"] += 1
            else:
                counts["differ"].append(path.name)
                print(f"  DINO-seg {path.name}: official {pred} objdisc {ours_box}")
    print(f"{name} DINO-seg end to end: {counts}")
    return counts


def compare_boxes(
    name: str,
    files: list[Path],
    backbone: Any,
    official: OfficialKeys,
    weights: Path,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """Official LOST driver against ``objdisc run --dataset folder`` on the same files (native size)."""
    sys.path.insert(0, str(args.lost))
    od = importlib.import_module("object_discovery")
    folder = work / f"images_{name}"
    folder.mkdir(exist_ok=True)
    for i, path in enumerate(files):  # folder ids are 1-based positions in sorted order
        link = folder / f"{i:05d}{path.suffix}"
        if not link.exists():
            link.symlink_to(path.resolve())
    out = work / f"run_{name}"
    base = name.removesuffix("+ttr")
    ttr = "builtin" if name.endswith("+ttr") else None
    config = RunConfig.flat(
        backbone=base,
        dataset="folder",
        images=folder,
        out=out,
        weights=weights,
        overwrite=True,
        test_time_registers=ttr,
    )
    run(config, progress=False)
    ours = {p["image_id"]: p["bbox"] for p in json.loads((out / "predictions.json").read_text())}
    spec, patch = backbone.spec, backbone.patch_size
    counts = {
        "images": len(files),
        "same_box": 0,
        "same_seed": 0,
        "differ": 0,
        "differ_by_unstable_sort": 0,
        "lost_step_equal": 0,
    }
    tokencut_counts: dict[str, Any] = {"same_box": 0, "differ": []}
    with KeyExtractor(backbone.model) as keys, torch.inference_mode():
        for i, path in enumerate(files):
            x = official_input(path, spec.mean, spec.std, patch)
            h_img, w_img = image_hw_of(path)
            k = official(x)[None]
            dims = [x.shape[2] // patch, x.shape[3] // patch]
            pred, _, _, seed = od.lost(k, dims, [patch, patch], (3, h_img, w_img), k_patches=100)
            x1, y1, w, h = ours[i + 1]
            ours_box = [x1, y1, x1 + w, y1 + h]
            same = [int(v) for v in pred] == ours_box
            image, _ = load_image(path)
            ours_k = keys(make_batch([torch.from_numpy(image)], patch, spec.mean, spec.std))[0]
            ours_res = lost(ours_k, tuple(dims), patch, (h_img, w_img))
            counts["same_seed"] += int(seed) == int(ours_res.seeds[0])
            with stable_argsort():  # the LOST step alone: both on the official keys
                pred_s, _, _, _ = od.lost(k, dims, [patch, patch], (3, h_img, w_img), k_patches=100)
            step = lost(k[0], tuple(dims), patch, (h_img, w_img))
            counts["lost_step_equal"] += [int(v) for v in pred_s] == step.boxes[0].tolist()
            if same:
                counts["same_box"] += 1
            else:
                if [int(v) for v in pred_s] == ours_box:
                    counts["differ_by_unstable_sort"] += 1
                else:
                    counts["differ"] += 1
                    print(f"  {path.name}: official {[int(v) for v in pred]} objdisc {ours_box}")
            if args.tokencut and spec.family == "dino":  # TokenCut's code reads DINO's CLS + patches
                tokencut_counts_update(tokencut_counts, args, k, ours_k, dims, patch, (h_img, w_img), path)
    print(f"{name} LOST end to end: {counts}")
    if args.tokencut:
        print(
            f"{name} TokenCut: same box {tokencut_counts['same_box']}/{len(files)}; differ: {tokencut_counts['differ']}"
        )
        counts["tokencut"] = tokencut_counts
    return counts


def image_hw_of(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def tokencut_counts_update(
    counts: dict,
    args: argparse.Namespace,
    k_off: torch.Tensor,
    k_ours: torch.Tensor,
    dims: list,
    patch: int,
    hw: tuple,
    path: Path,
) -> None:
    """Official TokenCut ``ncut`` on the official keys against objdisc's TokenCut on objdisc's."""
    tc_dir = str(args.tokencut)
    saved = {m: sys.modules.pop(m) for m in ("object_discovery", "datasets") if m in sys.modules}
    sys.path.insert(0, tc_dir)
    try:
        tc = importlib.import_module("object_discovery")
        feats = torch.cat([torch.zeros_like(k_off[:, :1]), k_off], dim=1)  # ncut drops row 0 (CLS)
        pred, *_ = tc.ncut(feats, dims, [patch, patch], (3, *hw), 0.2, 1e-5, path.name, no_binary_graph=False)
    finally:
        sys.path.remove(tc_dir)
        for m in ("object_discovery", "datasets"):
            sys.modules.pop(m, None)
        sys.modules.update(saved)
    boxes = TokenCut(tau=0.2)(k_ours[None], tuple(dims), patch, torch.tensor([hw]))
    host = boxes.to_host(patch, [hw])[0]
    if [int(v) for v in pred] == host.boxes[0].tolist():
        counts["same_box"] += 1
    else:
        counts["differ"].append(path.name)
        print(f"  TokenCut {path.name}: official {[int(v) for v in pred]} objdisc {host.boxes[0].tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--dino", type=Path, help="facebookresearch/dino checkout")
    parser.add_argument("--dinov2", type=Path, help="facebookresearch/dinov2 checkout")
    parser.add_argument("--dinov3", type=Path, help="facebookresearch/dinov3 checkout")
    parser.add_argument("--lost", type=Path, help="valeoai/LOST checkout (boxes end to end)")
    parser.add_argument("--tokencut", type=Path, help="YangtaoWANG95/TokenCut checkout")
    parser.add_argument("--ttr", type=Path, help="nickjiang2378/test-time-registers checkout (dinov2_vitl14+ttr)")
    parser.add_argument("--models", default="dino_vits16,dinov2_vits14,dinov2_reg_vits14")
    parser.add_argument("--sizes", default="native,224,trained")
    parser.add_argument(
        "--unfused",
        action="store_true",
        help="keys: run objdisc's attention unfused (explicit softmax), to tell SDPA rounding from real differences",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    torch.set_grad_enabled(False)
    torch.manual_seed(0)  # the official models' own initialisation, before randomise(): the same weights every run
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    reports, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            reports.append(compare_model(name, files, args, Path(tmp)))
    print(f"{len(files)} images, {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
