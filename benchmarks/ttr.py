"""What test-time registers cost: `objdisc run` with and without them, and `registers find`.

    python benchmarks/ttr.py --images ../shared/data/coco128/images --limit 32 --find-images 500 \
        [--backbone dinov2_vits14] [--weights FILE] [--device cpu]

With no --weights the backbone is random (saved to a temporary file and loaded as a user's
checkpoint); a random model has no high-norm artifacts, so `registers find` is then given
--threshold (default: the 98th percentile of the last block's token norms on the first 8
images, so that about 2 % of the tokens count as outliers, as in a trained DINOv2).

Prints, for the same images: images/s and s/image of `objdisc run` plain and with a test-time
register (the published neurons for DINOv2 ViT-L/14, else the list `registers find`
returns here), the boxes that changed, and the seconds `registers find` takes on --find-images
images (the folder repeated as needed, as symbolic links).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from objdisc.cli import cli
from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec
from objdisc.models.test_time_registers import PUBLISHED


def objdisc(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(result.output)


def percentile_norm(spec, weights: Path, files: list[Path], q: float = 98.0) -> float:
    """The ``q``-th percentile of every token's norm after the last block, over ``files``."""
    from objdisc.images import load_image, make_batch
    from objdisc.models.backbones import create_backbone

    backbone = create_backbone(spec.name, weights)
    seen: list[torch.Tensor] = []
    handle = backbone.model.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o[0].norm(dim=-1)))
    with torch.inference_mode():
        for path in files:
            image, _ = load_image(path)
            backbone.model.forward_features(make_batch([torch.from_numpy(image)], spec.patch_size, spec.mean, spec.std))
    handle.remove()
    return float(torch.quantile(torch.cat(seen), q / 100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=32, help="images for the timed runs")
    parser.add_argument("--find-images", type=int, default=500)
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threshold", default=None, help="for registers find [default: auto, or see above]")
    args = parser.parse_args()
    spec = get_spec(args.backbone)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            model = build_model(spec)
            weights = work / "random.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        many = work / "many"
        many.mkdir()
        for i in range(args.find_images):
            source = files[i % len(files)]
            (many / f"{i:05d}{source.suffix}").symlink_to(source.resolve())
        common = ["-b", spec.name, "--weights", str(weights), "--device", args.device]
        threshold = args.threshold or ("auto" if args.weights else f"{percentile_norm(spec, weights, files[:8]):.4g}")
        start = time.perf_counter()
        find = ["--images", str(many), "--out", str(work / "neurons.json"), "--threshold", threshold]
        objdisc("registers", "find", *common, *find)
        found_s = time.perf_counter() - start
        found = json.loads((work / "neurons.json").read_text())
        print(
            f"registers find: {found['n_images']} images in {found_s:.1f} s "
            f"({found_s / found['n_images']:.3f} s/image; "
            f"threshold {found['threshold']:.3g} ({found['threshold_source']}), "
            f"{found['n_images_with_outliers']} images with outliers)"
        )
        ttr = "builtin" if spec.name in PUBLISHED else str(work / "neurons.json")
        data = ["-d", "folder", "--images", str(args.images), "--limit", str(args.limit), "--workers", "0"]
        rates = {}
        for label, extra in [("plain", []), ("ttr", ["--test-time-registers", ttr])]:
            out = work / label
            objdisc("run", *common, *data, "--out", str(out), *extra)
            metrics = json.loads((out / "metrics.json").read_text())
            rates[label] = metrics["images_per_s"]
            print(
                f"run {label:5s}: {metrics['n_images']} images, {metrics['images_per_s']:.2f} images/s "
                f"({1 / metrics['images_per_s']:.3f} s/image)"
            )
        plain = json.loads((work / "plain" / "predictions.json").read_text())
        moved = json.loads((work / "ttr" / "predictions.json").read_text())
        changed = sum(a["bbox"] != b["bbox"] for a, b in zip(plain, moved, strict=True))
        which = ttr if ttr == "builtin" else "found list"
        cost = 100 * (rates["plain"] / rates["ttr"] - 1)
        print(f"test-time registers ({which}): {changed}/{len(plain)} boxes changed; {cost:+.1f}% time per image")


if __name__ == "__main__":
    main()
