"""How a run's cost grows with the number of images: peak memory, seconds per image outside the model, outputs.

    python benchmarks/scale.py --work /tmp/objdisc-scale [--sizes 10000,100000] [--methods lost,maskcut]

A synthetic ImageNet-style tree (``train/cNNNN/*.JPEG``, 1,000 images a class, small real-looking
photos: smooth gradients, noise and a bright object, JPEG-compressed) is made once in ``--work``.
Each (size, method) runs in a fresh process on the first ``size / 1000`` class folders
(``--dataset class-folders --classes 0:K``), with a one-block ViT-S/16 (random weights) so that
the model costs little and what is measured is objdisc's own cost per image: decode, method,
post-processing, journal, and the files written at the end. MaskCut runs without its CRF, at a
64-pixel fixed size (4 x 4 patches), with its masks: the RLEs are what make its files large.

Printed per run: peak RSS (MiB, the child's ``ru_maxrss``), seconds, seconds per image and the
part of it outside the model's forward pass, the size of the journal, ``predictions.json``,
``per_image.json`` and ``gt.json``; then, per method, the ratio of the largest run's peak RSS
to the smallest's (the goal: at most 1.2 from 10,000 to 100,000 images).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PER_CLASS = 1000

CHILD = """
import json, sys, time
from objdisc.commands.run import RunConfig, run
if __name__ == "__main__":
    tree, weights, out, classes, method = sys.argv[1:6]
    options = {"crf": False, "fixed_size": 64, "masks": 3} if method == "maskcut" else {}
    config = RunConfig.flat("dino", "class-folders", out, images=tree, classes=classes, weights=weights,
                            model_kwargs={"depth": 1}, workers=1, batch_size=64, method=method,
                            method_options=options, overwrite=True, post_workers=0)
    start = time.perf_counter()
    result = run(config, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "metrics": {
        k: result.metrics[k] for k in ("n_images", "n_objects", "n_skipped", "stage_seconds")}}))
"""


def make_tree(root: Path, n_images: int, seed: int = 0) -> Path:
    """``n_images`` small JPEG photos in class folders of :data:`PER_CLASS` (made once)."""
    import cv2
    import numpy as np

    train = root / "train"
    marker = root / f".made-{n_images}"
    if marker.exists():
        return train
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:72, 0:96].astype(np.float32)
    for i in range(n_images):
        folder = train / f"c{i // PER_CLASS:04d}"
        if i % PER_CLASS == 0:
            folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(-1, 1, 3)
        base = 110 + 40 * (a * xx / 96 + b * yy / 72 + c)
        image = np.repeat(base[..., None], 3, axis=2) + rng.normal(0, 12, (72, 96, 3))
        y0, x0 = rng.integers(4, 36), rng.integers(4, 56)
        image[y0 : y0 + 28, x0 : x0 + 36] += rng.uniform(60, 110, 3)
        cv2.imwrite(str(folder / f"{i:07d}.JPEG"), np.clip(image, 0, 255).astype(np.uint8))
    marker.touch()
    return train


def weights_file(root: Path) -> Path:
    """A one-block ViT-S/16 with random weights."""
    import torch
    from safetensors.torch import save_file

    from objdisc.models.backbones import build_model
    from objdisc.models.specs import get_spec

    path = root / "dino-depth1.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = build_model(get_spec("dino"), depth=1)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def measure(tree: Path, weights: Path, out: Path, n_images: int, method: str) -> dict:
    """One run in a fresh process: its peak RSS, timings and file sizes."""
    script = out.parent / "child.py"
    script.write_text(CHILD)
    classes = f"0:{max(1, n_images // PER_CLASS)}"
    done = subprocess.run([sys.executable, str(script), str(tree), str(weights), str(out), classes, method],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # this process's only child (measure_isolated)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    stages = report["metrics"]["stage_seconds"]
    n = report["metrics"]["n_images"]

    def size(path: Path) -> float:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.is_dir() else (
            path.stat().st_size / 2**20)  # fmt: skip

    return {
        "images": n,
        "method": method,
        "peak_rss_mib": round(peak / 1024, 1),
        "seconds": round(report["seconds"], 1),
        "ms_per_image": round(1000 * report["seconds"] / n, 2),
        "ms_per_image_outside_forward": round(1000 * (report["seconds"] - stages["forward"]) / n, 2),
        "journal_mib": round(size(out / "journal"), 1),
        "predictions_mib": round(size(out / "predictions.json"), 1),
        "per_image_mib": round(size(out / "per_image.json"), 1),
        "gt_mib": round(size(out / "gt.json"), 1),
        "objects": report["metrics"]["n_objects"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="where the tree and the runs go (reused)")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--methods", default="lost,maskcut")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tree = make_tree(args.work, sizes[-1])
    print(f"tree of {sizes[-1]:,} images in {time.perf_counter() - start:.0f} s", flush=True)
    weights = weights_file(args.work)
    rows = []
    for method in args.methods.split(","):
        for n in sizes:
            row = measure_isolated(tree, weights, args.work / f"run-{method}-{n}", n, method)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for method in args.methods.split(","):
        mine = [r for r in rows if r["method"] == method]
        ratio = mine[-1]["peak_rss_mib"] / mine[0]["peak_rss_mib"]
        print(f"{method}: peak RSS {mine[-1]['images']:,} / {mine[0]['images']:,} images = {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def measure_isolated(tree: Path, weights: Path, out: Path, n_images: int, method: str) -> dict:
    """:func:`measure` in a process of its own, so that ``ru_maxrss`` of children is this run's alone."""
    out.parent.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); from scale import measure; from pathlib import Path; "
        f"print(json.dumps(measure(Path({str(tree)!r}), Path({str(weights)!r}), Path({str(out)!r}), {n_images}, "
        f"{method!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
