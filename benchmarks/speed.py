"""Images/s of objdisc's pipeline and of each stage, against a naive per-image LOST loop.

    python benchmarks/speed.py --images ../shared/data/coco128/images --backbone dinov2_reg \
        [--weights FILE] [--batch-size 8] [--workers 2] [--device cpu] [--limit 64]

The naive loop is how LOST is usually run: batch 1, a forward hook registered and removed
per image, unfused attention, the whole forward pass, PIL decode in the main thread. Both
paths must give identical boxes; the script says so, or fails. Without --weights the model
is random-init (speed does not depend on the weights' values; no download needed).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from objdisc import create_backbone, lost
from objdisc.datasets import load_dataset
from objdisc.engine.discover import StageTimes, discover
from objdisc.engine.limits import batch_tokens_for
from objdisc.images import decode_image, make_batch, padded_size
from objdisc.methods import Lost
from objdisc.methods.lost import lost_batch
from objdisc.models.backbones import Backbone, build_model
from objdisc.models.features import KeyExtractor
from objdisc.models.specs import get_spec
from objdisc.models.weights import WeightsInfo


def random_backbone(name: str) -> Backbone:
    """Random-init backbone, for timing without a download."""
    spec = get_spec(name)
    torch.manual_seed(0)
    return Backbone(spec, build_model(spec).eval().requires_grad_(False), WeightsInfo("random-init", "none", "-"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_loop(backbone: Backbone, paths: list[Path], device: torch.device) -> dict[str, tuple]:
    """LOST as usually written: per image, PIL decode, hook, full unfused forward, LOST."""
    model = copy.deepcopy(backbone.model).to(device)
    for block in model.blocks:
        block.attn.fused_attn = False
    mean = torch.tensor(backbone.spec.mean).view(3, 1, 1)
    std = torch.tensor(backbone.spec.std).view(3, 1, 1)
    patch, prefix = backbone.patch_size, backbone.num_prefix_tokens
    attn = model.blocks[-1].attn
    boxes = {}
    for path in paths:
        image = np.array(Image.open(path).convert("RGB"))
        x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
        hp, wp = padded_size(x.shape[1:], patch)
        padded = torch.zeros(1, 3, hp, wp)
        padded[0, :, : x.shape[1], : x.shape[2]] = x
        captured: dict[str, torch.Tensor] = {}
        handle = attn.qkv.register_forward_hook(lambda m, i, o, store=captured: store.setdefault("qkv", o))
        with torch.no_grad():
            model.forward_features(padded.to(device))
        handle.remove()
        qkv = captured["qkv"]
        t = qkv.shape[1]
        keys = qkv.reshape(1, t, 3, attn.num_heads, attn.head_dim)[0, :, 1].reshape(t, -1)[prefix:]
        result = lost(keys, (hp // patch, wp // patch), patch, image.shape[:2])
        boxes[path.name] = tuple(result.boxes[0].tolist())
    sync(device)
    return boxes


def stage_rates(
    backbone: Backbone, paths: list[Path], batch_size: int, batch_tokens: int, device: torch.device
) -> dict[str, float]:
    """Images/s of decode (one thread), forward to keys, and LOST, each alone."""
    start = time.perf_counter()
    images = [torch.from_numpy(decode_image(p)) for p in paths]
    decode_s = time.perf_counter() - start
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for image in images:
        groups.setdefault(padded_size(image.shape[:2], backbone.patch_size), []).append(image)
    batches = []
    for (hp, wp), group in groups.items():  # the pipeline's rule: <= batch_size images, <= batch_tokens patches
        size = max(1, min(batch_size, batch_tokens // ((hp // backbone.patch_size) * (wp // backbone.patch_size))))
        batches += [group[i : i + size] for i in range(0, len(group), size)]
    forward_s = lost_s = 0.0
    with KeyExtractor(backbone.model) as extractor, torch.inference_mode():
        for batch in batches:
            sync(device)
            t0 = time.perf_counter()
            x = make_batch(batch, backbone.patch_size, backbone.spec.mean, backbone.spec.std, device)
            keys = extractor(x)
            sync(device)
            t1 = time.perf_counter()
            grid = (x.shape[-2] // backbone.patch_size, x.shape[-1] // backbone.patch_size)
            lost_batch(keys, grid, backbone.patch_size, [tuple(b.shape[:2]) for b in batch])
            t2 = time.perf_counter()
            forward_s += t1 - t0
            lost_s += t2 - t1
    n = len(paths)
    return {
        "decode": n / decode_s,
        "forward": n / forward_s,
        "lost": n / lost_s,
        "lost_share": lost_s / (forward_s + lost_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of real photos")
    parser.add_argument("--backbone", default="dinov2_reg")
    parser.add_argument("--weights", type=Path, default=None, help="local weights (default: random init)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=None, help="patches per batch (default: per device)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    device = torch.device(args.device)
    tokens = args.batch_tokens or batch_tokens_for(device.type)
    backbone = create_backbone(args.backbone, args.weights, device) if args.weights else random_backbone(args.backbone)
    backbone.model.to(device)
    records = load_dataset("folder", images=args.images).records[: args.limit]
    paths = [r.path for r in records]
    print(
        f"{len(paths)} images from {args.images}, {backbone.spec.name}, batch {args.batch_size}, {device}, "
        f"{torch.get_num_threads()} threads"
    )

    list(discover(backbone, records[:2], method=Lost(), batch_size=2, workers=0, device=device))  # warm-up
    times = StageTimes()
    start = time.perf_counter()
    results = list(
        discover(
            backbone,
            records,
            method=Lost(),
            batch_size=args.batch_size,
            batch_tokens=tokens,
            workers=args.workers,
            device=device,
            times=times,
        )
    )
    pipeline_s = time.perf_counter() - start
    fast = {r.record.path.name: tuple(r.objects.boxes[0].tolist()) for r in results}
    figures = {
        "images": len(paths),
        "backbone": backbone.spec.name,
        "batch_size": args.batch_size,
        "device": str(device),
        "pipeline_images_per_s": len(paths) / pipeline_s,
        "pipeline_stage_seconds": vars(times),
        "batch_tokens": tokens,
        "stage_images_per_s": stage_rates(backbone, paths, args.batch_size, tokens, device),
    }
    if not args.skip_naive:
        naive_loop(backbone, paths[:2], device)  # warm-up
        start = time.perf_counter()
        naive = naive_loop(backbone, paths, device)
        naive_s = time.perf_counter() - start
        figures["naive_images_per_s"] = len(paths) / naive_s
        figures["speedup"] = figures["pipeline_images_per_s"] / figures["naive_images_per_s"]
        figures["identical_boxes"] = naive == fast
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if figures.get("identical_boxes") is False:
        different = sum(naive[k] != fast[k] for k in fast)
        raise SystemExit(f"{different} of {len(fast)} boxes differ between the naive loop and the pipeline")


if __name__ == "__main__":
    main()
