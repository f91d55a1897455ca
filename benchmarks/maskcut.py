"""MaskCut: objdisc against CutLER's maskcut.py on the same random weights and real photos, masks and seconds.

    python benchmarks/maskcut.py --images ../shared/data/coco128/images --limit 10 \
        --cutler ~/src/CutLER --tokencut ~/src/TokenCut [--models dino_vits16,dino_vitb8] [--no-crf]

Needs checkouts of facebookresearch/CutLER (``maskcut/``: maskcut.py, crf.py, dino.py) and
YangtaoWANG95/TokenCut (maskcut.py imports its ``unsupervised_saliency_detection`` as CutLER's
``third_party/TokenCut`` submodule), pydensecrf (``pip install 'objdisc[crf]'``) and scikit-image
none. objdisc ships none of their code: they are imported from the given folders.

Per model: CutLER's ``dino.ViTFeat`` model (DINO's release code) is built with every parameter
random (position embeddings and tokens non-smooth), saved in the release layout and loaded by
objdisc with ``create_backbone``. Per image (``tau`` 0.15, N = 3, fixed size 480, CPU):

- official: ``maskcut()`` (PIL Lanczos to 480 x 480, ``resize_pil``, ``ViTFeat``,
  ``maskcut_forward`` with its dense ``scipy.linalg.eigh`` per mask), then maskcut.py's main loop
  (``densecrf``, hole filling, the IoU filter, the resize to the original size,
  ``create_annotation_info``'s threshold);
- objdisc: ``objdisc run --method maskcut`` on the same files, once per ``--post-workers`` count
  (0: the CRF in the main process; N: in N processes beside the model), whose predictions must
  be identical.

Compared: the masks before the CRF (official ``bipartitions`` against objdisc's
``unrefined_masks``, at 480 x 480), counted identical, differing where the official code's
reversal depended on LAPACK's eigenvector sign (its corner and seed rules disagree: objdisc gives
the corner rule precedence, see :mod:`objdisc.methods.maskcut`), or differing otherwise; the
final masks (after the CRF, at the original size) the same way; seconds per image end to end
and for the eigen-solves alone (the reference's dense ``eigh`` against objdisc's Lanczos on the
same graphs).
"""

from __future__ import annotations

import argparse
import importlib
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
from objdisc.images import fixed_model_input, load_image, make_batch
from objdisc.methods.eigen import lanczos_batch, second_eigenpair
from objdisc.methods.maskcut import maskcut_batch, orient
from objdisc.models.backbones import create_backbone
from objdisc.models.features import KeyExtractor
from objdisc.models.specs import get_spec
from objdisc.objects import Objects
from objdisc.refinement.pixel_chain import unrefined_masks

TAU, N, FIXED = 0.15, 3, 480


def import_official(cutler: Path, tokencut: Path, work: Path) -> Any:
    """maskcut.py as a module, with TokenCut where it looks for its submodule."""
    third = work / "third_party"
    third.mkdir(exist_ok=True)
    if not (third / "TokenCut").exists():
        (third / "TokenCut").symlink_to(tokencut.resolve())
    for path in (str(cutler / "maskcut"), str(third)):
        sys.path.insert(0, path)
    return importlib.import_module("maskcut")


def official_backbone(mc: Any, name: str) -> torch.nn.Module:
    """CutLER's ViTFeat around a random DINO model (its constructor downloads; this one does not)."""
    dino = sys.modules["dino"]
    arch = "base" if "vitb" in name else "small"
    patch = get_spec(name).patch_size
    feat = dino.ViTFeat.__new__(dino.ViTFeat)
    torch.nn.Module.__init__(feat)
    feat.model = (dino.vit_base if arch == "base" else dino.vit_small)(patch_size=patch, num_classes=0)
    feat.feat_dim, feat.vit_feat, feat.patch_size = feat.model.embed_dim, "k", patch
    return feat.eval()


def official_image(mc: Any, backbone: Any, path: Path, patch: int, crf: bool) -> tuple[list, list, float]:
    """``(pre-CRF masks at 480, final masks at the original size, seconds)`` as maskcut.py makes them."""
    from PIL import Image

    start = time.perf_counter()
    bipartitions, _, image_new = mc.maskcut(str(path), backbone, patch, TAU, N=N, fixed_size=FIXED, cpu=True)
    width, height = Image.open(path).convert("RGB").size
    finals = []
    for bipartition in bipartitions:
        if crf:
            pseudo = mc.densecrf(np.array(image_new), bipartition)
            pseudo = mc.ndimage.binary_fill_holes(pseudo >= 0.5)
            if mc.metric.IoU(torch.from_numpy(bipartition), torch.from_numpy(pseudo)) < 0.5:
                pseudo = pseudo * -1
        else:
            pseudo = bipartition.astype(float)
        pseudo = np.asarray(pseudo, dtype=float)
        pseudo[pseudo < 0] = 0
        pseudo = np.asarray(Image.fromarray(np.uint8(pseudo * 255)).resize((width, height)))
        info = mc.create_annotation_info(1, 1, {"id": 1}, pseudo.astype(np.uint8), None)
        if info is not None:
            finals.append(mc.mask.decode(_rle(info["segmentation"])).astype(bool))
    return bipartitions, finals, time.perf_counter() - start


def _rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}


def sign_ambiguous(mc: Any, backbone: Any, path: Path, patch: int) -> bool:
    """Whether some round of the official cut had its corner and seed rules disagree (its answer
    then hangs on LAPACK's sign)."""
    from PIL import Image

    image = Image.open(path).convert("RGB").resize((FIXED, FIXED), Image.LANCZOS)
    resized, _, _, fw, fh = mc.utils.resize_pil(image, patch)
    feats = backbone(mc.ToTensor(resized).unsqueeze(0))[0]
    dims, painting, current = [fh, fw], None, None
    for i in range(N):
        if i == 0:
            painting = torch.zeros(dims, dtype=torch.float64)
        else:
            feats, painting = mc.get_masked_affinity_matrix(painting, feats, current, fh)
        a, d = mc.get_affinity_matrix(feats, TAU)
        _, vec = mc.second_smallest_eigenvector(a, d)
        bipartition = mc.get_salient_areas(vec)
        corners = mc.check_num_fg_corners(bipartition, dims)
        seed = int(np.argmax(np.abs(vec)))
        if (corners >= 3 and bipartition[seed]) or (corners <= 1 and not bipartition[seed]):
            return True
        reverse = corners >= 3 or not bipartition[seed]
        bipartition = np.logical_not(bipartition) if reverse else bipartition
        seed = int(np.argmax(-vec if reverse else vec))
        _, _, _, cc = mc.detect_box(bipartition.reshape(dims).astype(float), seed, dims, scales=[patch, patch],
                                    initial_im_size=[FIXED, FIXED])  # fmt: skip
        current = torch.zeros(dims, dtype=torch.float64)
        current[cc[0], cc[1]] = 1
    return False


def compare(name: str, files: list[Path], args: argparse.Namespace, mc: Any, work: Path) -> dict[str, Any]:
    official = official_backbone(mc, name)
    randomise(official.model, seed=0)
    weights = work / f"{name}.pth"
    torch.save(official.model.state_dict(), weights)
    backbone = create_backbone(name, weights)
    if args.unfused:  # explicit softmax attention, as the DINO release: keys bit-identical, not 2e-6 apart
        for block in backbone.model.blocks:
            block.attn.fused_attn = False
    patch = backbone.patch_size
    counts: dict[str, Any] = {"model": name, "images": len(files), "pre_crf": {}, "final": {}}
    for stage in ("pre_crf", "final"):
        counts[stage] = {"identical": 0, "differ_by_sign": [], "differ": []}
    official_s: list[float] = []
    for path in files:
        pre, finals, seconds = official_image(mc, official, path, patch, not args.no_crf)
        official_s.append(seconds)
        ours_pre, ours_final = objdisc_image(backbone, path, patch, not args.no_crf)
        ambiguous = None
        for stage, theirs, ours in (("pre_crf", [p > 0.5 for p in pre], ours_pre), ("final", finals, ours_final)):
            theirs = [m for m in theirs if m.any()]
            if len(theirs) == len(ours) and all(np.array_equal(a, b) for a, b in zip(theirs, ours, strict=True)):
                counts[stage]["identical"] += 1
                continue
            ambiguous = sign_ambiguous(mc, official, path, patch) if ambiguous is None else ambiguous
            counts[stage]["differ_by_sign" if ambiguous else "differ"].append(path.name)
    # objdisc end to end, through the real run (decode workers, journal, files)
    folder = work / f"images_{name}"
    folder.mkdir(exist_ok=True)
    for i, path in enumerate(files):
        link = folder / f"{i:05d}{path.suffix}"
        if not link.exists():
            link.symlink_to(path.resolve())
    options = {"crf": not args.no_crf, "tau": TAU, "masks": N, "fixed_size": FIXED}
    seconds: dict[str, float] = {"official": float(np.mean(official_s))}
    outputs = []
    for workers in [int(w) for w in args.post_workers.split(",")]:
        config = RunConfig.flat(name, "folder", work / f"run_{name}_{workers}", weights=weights, images=folder,
                                overwrite=True, method="maskcut", method_options=options, workers=0,
                                post_workers=workers)  # fmt: skip
        start = time.perf_counter()
        run(config, progress=False)
        seconds[f"objdisc_post_workers_{workers}"] = (time.perf_counter() - start) / len(files)
        outputs.append((work / f"run_{name}_{workers}" / "predictions.json").read_bytes())
    counts["seconds_per_image"] = seconds
    counts["same_predictions_for_every_post_workers"] = all(o == outputs[0] for o in outputs)
    best = min(v for k, v in seconds.items() if k != "official")
    counts["speedup"] = seconds["official"] / best
    if "objdisc_post_workers_1" in seconds and "objdisc_post_workers_2" in seconds:
        counts["pool_speedup_1_to_2_workers"] = seconds["objdisc_post_workers_1"] / seconds["objdisc_post_workers_2"]
    counts["eigen"] = eigen_seconds(backbone, files[: min(3, len(files))], patch)
    print(json.dumps(counts, indent=2))
    return counts


def objdisc_image(backbone: Any, path: Path, patch: int, crf: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """objdisc's masks of one image before the CRF (at 480) and final (original size)."""
    from objdisc.refinement.pixel_chain import finalize_masks

    original, hw = load_image(path)
    image = fixed_model_input(original, FIXED, patch)
    x = make_batch([torch.from_numpy(np.ascontiguousarray(image))], patch, backbone.spec.mean, backbone.spec.std)
    with KeyExtractor(backbone.model) as keys, torch.inference_mode():
        feats = keys(x)
    grid = (x.shape[2] // patch, x.shape[3] // patch)
    (found,) = maskcut_batch(feats, grid, patch, torch.tensor([image.shape[:2]]), N, TAU).to_host(
        patch, [image.shape[:2]]
    )
    pre = [m > 0.5 for m in unrefined_masks(found, (FIXED, FIXED), FIXED, hw)]
    final: Objects = finalize_masks(found, lambda: original, hw, FIXED, crf)
    return [m for m in pre if m.any()], list(final.pixel_masks())


def eigen_seconds(backbone: Any, files: list[Path], patch: int) -> dict[str, Any]:
    """The eigen-solves alone, on the first round's graph: dense generalised eigh against objdisc's
    host solver and its batched torch Lanczos (``--eigen device``, here on the CPU), whose first
    cut is checked against the host's."""
    import scipy.linalg

    dense, ours, lanczos, same = [], [], [], 0
    for path in files:
        original, _ = load_image(path)
        image = fixed_model_input(original, FIXED, patch)
        x = make_batch([torch.from_numpy(np.ascontiguousarray(image))], patch, backbone.spec.mean, backbone.spec.std)
        with KeyExtractor(backbone.model) as keys, torch.inference_mode():
            feats = keys(x)[0]
        unit = torch.nn.functional.normalize(feats.float(), dim=-1)
        weights = torch.where(unit @ unit.T > TAU, 1.0, 1e-5).double().numpy()
        degree = np.diag(weights.sum(1))
        start = time.perf_counter()
        scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 2])
        dense.append(time.perf_counter() - start)
        start = time.perf_counter()
        host_vec, _ = second_eigenpair(weights)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        (found,) = lanczos_batch(torch.from_numpy(weights)[None])
        lanczos.append(time.perf_counter() - start)
        if found is not None:
            grid = (round(FIXED / patch),) * 2
            same += int(np.array_equal(orient(found[0], grid)[0], orient(host_vec, grid)[0]))
    n = round(FIXED / patch) ** 2
    return {"patches": n, "dense_eigh_s": float(np.mean(dense)), "objdisc_s": float(np.mean(ours)),
            "ratio": float(np.mean(dense) / np.mean(ours)), "device_lanczos_on_cpu_s": float(np.mean(lanczos)),
            "first_cut_same_host_device": f"{same}/{len(files)}"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--cutler", type=Path, required=True, help="facebookresearch/CutLER checkout")
    parser.add_argument("--tokencut", type=Path, required=True, help="YangtaoWANG95/TokenCut checkout")
    parser.add_argument("--models", default="dino_vits16")
    parser.add_argument("--no-crf", action="store_true", help="compare without the CRF (no pydensecrf needed)")
    parser.add_argument("--unfused", action="store_true", help="objdisc's attention unfused (explicit softmax)")
    parser.add_argument(
        "--post-workers", default="0,1,2", help="objdisc end to end with each of these --post-workers (comma list)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        mc = import_official(args.cutler, args.tokencut, Path(tmp))
        reports = [compare(name, files, args, mc, Path(tmp)) for name in args.models.split(",")]
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
