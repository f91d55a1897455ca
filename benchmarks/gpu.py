"""GPU throughput, host-sync check and profile of the box engine (needs a CUDA GPU).

    python benchmarks/gpu.py --images VOCdevkit/VOC2007/JPEGImages --limit 4000 \
        [--backbone dinov2_reg] [--batch-size 64] [--workers 16] [--precision bf16] [--profile]

1. Sync check: one pass over 64 images with ``torch.cuda.set_sync_debug_mode("error")`` around
   the batch loop's launch step (features + LOST for a batch); any host sync there raises.
2. Throughput: end-to-end images/s of ``discover`` (decode workers, pinned memory, size
   buckets, autocast, LOST on the GPU, one read-back per batch, one batch late), and the
   seconds the main process spent waiting for decoded images, launching, and reading back.
3. ``--profile``: a torch.profiler table of the top CUDA and CPU ops over 16 batches, to see
   whether decode (waiting on workers), transfer (memcpy HtoD) or compute (attention, matmul)
   limits the rate.
4. Every method on the GPU against the CPU (``--compare N``, default 16 images; 0 skips): LOST,
   TokenCut, DINO-seg, MaskCut and ProMerge (no CRF) and FOUND at fp32 on the same model and images; per method the
   images whose boxes are identical, the smallest IoU of the others, and seconds per image on
   each device. fp32 matmuls on the GPU (TF32 off) differ from the CPU's in the last bits, so a
   near-tie may flip; a method that fails on the GPU shows its error.
5. MaskCut as CutLER labels ImageNet (``--maskcut N``, default 64 images; 0 skips): DINO ViT-S/16
   and ViT-B/8 (random weights) at 480 x 480, three masks, the CRF in ``--post-workers`` processes
   on the host (default: the CPU's cores less one and the decode workers), through the real
   ``objdisc run`` (decode workers, journal, files): images/s, and the main process's seconds
   waiting for decoded images, in the forward pass, in the cuts (graphs and eigen-solves on the
   GPU, ``--eigen device``; ViT-B/8 again with the eigen-solves on the host) and waiting for the
   CRF workers; the first is a lower bound the GPU could reach, the last says whether the CPUs
   keep up with it; then how many images the two eigen-solvers give identical boxes and masks.
   Sized to finish within five minutes.

Without --weights the model is random-init: speed does not depend on the weights' values.
The issue's target is 1000 images/s for ViT-S/14 on VOC-sized images on an H100.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from objdisc.datasets import load_dataset
from objdisc.engine.discover import StageTimes, _BatchStep, discover
from objdisc.methods import Lost
from objdisc.models.backbones import Backbone, build_model, create_backbone
from objdisc.models.specs import get_spec
from objdisc.models.weights import WeightsInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--backbone", default="dinov2_reg")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compare", type=int, default=16, help="images for the GPU-against-CPU check (0: skip)")
    parser.add_argument("--maskcut", type=int, default=64, help="images for the MaskCut section (0: skip)")
    parser.add_argument("--post-workers", type=int, default=None, help="MaskCut: CRF processes [default: free cores]")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures the GPU path")

    device = torch.device("cuda")
    spec = get_spec(args.backbone)
    if args.weights:
        backbone = create_backbone(args.backbone, args.weights, device)
    else:
        torch.manual_seed(0)
        backbone = Backbone(
            spec, build_model(spec).eval().requires_grad_(False).to(device), WeightsInfo("-", "none", "-")
        )
    records = load_dataset("folder", images=args.images).records[: args.limit]
    options = {
        "batch_size": args.batch_size,
        "batch_tokens": args.batch_tokens,
        "workers": args.workers,
        "device": device,
        "precision": args.precision,
    }

    # 1. sync check on the launch step
    real_launch = _BatchStep.launch

    def strict_launch(self, batch):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real_launch(self, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    _BatchStep.launch = strict_launch  # type: ignore[method-assign]
    try:
        checked = list(discover(backbone, records[:64], method=Lost(), **options))
    finally:
        _BatchStep.launch = real_launch  # type: ignore[method-assign]
    errors = [r.error for r in checked if r.error]
    print("sync check:", "no host sync in the launch step" if not errors else f"FAILED: {errors[0]}")

    # 2. throughput
    list(discover(backbone, records[: 2 * args.batch_size], method=Lost(), **options))  # warm-up: cuDNN, allocator
    times = StageTimes()
    torch.cuda.synchronize()
    start = time.perf_counter()
    results = list(discover(backbone, records, method=Lost(), times=times, **options))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n = sum(r.objects is not None for r in results)
    print(f"{n}/{len(records)} images in {seconds:.2f} s: {n / seconds:.1f} images/s end to end")
    gpu = torch.cuda.get_device_name()
    print(f"{spec.name}, {args.precision}, batch {args.batch_size}, {args.workers} workers, {gpu}")
    print(
        f"main process: waiting for decode {times.wait_decode:.2f} s, launching {times.forward:.2f} s, "
        f"LOST launch + read-back {times.method:.2f} s"
    )
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    # 3. profile
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            list(discover(backbone, records[: 16 * args.batch_size], method=Lost(), **options))
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))

    # 4. every method, GPU against CPU
    if args.compare:
        compare_methods(backbone, records[: args.compare])

    # 5. MaskCut with the CRF pool, as CutLER labels ImageNet
    if args.maskcut:
        maskcut_rates(args.images, args.maskcut, args.workers, args.post_workers)


def maskcut_rates(images: Path, limit: int, workers: int, post_workers: int | None, device: str = "cuda") -> None:
    """Section 5 of the module docstring (``device``: where the model runs; the CPU for a dry run)."""
    import json
    import tempfile

    from safetensors.torch import save_file

    from objdisc.commands.run import RunConfig, run

    with tempfile.TemporaryDirectory() as tmp:
        predictions: dict[str, list[dict]] = {}
        for name, eigen in (("dino_vits16", "device"), ("dino_vitb8", "device"), ("dino_vitb8", "host")):
            torch.manual_seed(0)
            weights = Path(tmp) / f"{name}.safetensors"
            if not weights.exists():
                state = build_model(get_spec(name)).state_dict()
                save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
            out = Path(tmp) / f"{name}-{eigen}"
            config = RunConfig.flat(name, "folder", out, images=images, weights=weights, limit=limit, device=device,
                                    workers=workers, method="maskcut", method_options={"eigen": eigen},
                                    post_workers=post_workers, batch_size=16)  # fmt: skip
            start = time.perf_counter()
            try:
                result = run(config, progress=False)
            except Exception as exc:  # report it and go on
                print(f"maskcut {name} eigen {eigen}: FAILED {type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - start
            stages = result.metrics["stage_seconds"]
            print(
                f"maskcut {name} at 480, CRF on, eigen-solves on the {eigen}, {result.metrics['n_images']} images: "
                f"{result.metrics['n_images'] / seconds:.2f} images/s end to end; main process: waiting for decode "
                f"{stages['wait_decode']:.1f} s, forward {stages['forward']:.1f} s, cuts {stages['method']:.1f} s, "
                f"waiting for the CRF workers {stages['post']:.1f} s (post workers: "
                f"{result.metrics['post_workers']})"
            )
            predictions[f"{name}-{eigen}"] = json.loads((out / "predictions.json").read_text())
        if {"dino_vitb8-device", "dino_vitb8-host"} <= predictions.keys():
            by_image = [
                {p["image_id"]: [] for p in predictions[key]} for key in ("dino_vitb8-device", "dino_vitb8-host")
            ]
            for table, key in zip(by_image, ("dino_vitb8-device", "dino_vitb8-host"), strict=True):
                for p in predictions[key]:
                    table[p["image_id"]].append((p["bbox"], p.get("segmentation", {}).get("counts")))
            ids = by_image[0].keys() | by_image[1].keys()
            same = sum(by_image[0].get(i) == by_image[1].get(i) for i in ids)
            print(f"maskcut dino_vitb8: eigen-solves on the device against the host: {same}/{len(ids)} images with "
                  "identical boxes and masks")  # fmt: skip


def box_iou(a: list[int], b: list[int]) -> float:
    """IoU of two x1, y1, x2, y2 boxes (x2/y2 exclusive)."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 1.0


def compare_methods(backbone: Backbone, records: list, device: str = "cuda") -> None:
    """Section 4 of the module docstring (``device``: the one compared with the CPU)."""
    from objdisc.commands.run import RunConfig, resolve_discovery

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_backbone = Backbone(backbone.spec, copy.deepcopy(backbone.model).cpu(), backbone.weights)
    methods = (("lost", {}), ("tokencut", {}), ("dinoseg", {}), ("maskcut", {"crf": False}),
               ("promerge", {"crf": False}), ("found", {}))  # fmt: skip
    for name, options in methods:
        config = RunConfig.flat(
            backbone=backbone.spec.name, dataset="folder", out=Path("-"), method=name, method_options=options
        )
        discovery = resolve_discovery(config, backbone.spec)
        runs: list[tuple[dict[int, object], float]] = []  # (boxes or error per image id, seconds per image)
        for where, model in ((device, backbone), ("cpu", cpu_backbone)):
            start = time.perf_counter()
            try:
                results = list(
                    discover(model, records, features=discovery.features, method=discovery.method, batch_size=8,
                             workers=0, device=where, precision="fp32")
                )  # fmt: skip
            except Exception as exc:  # report it and go on to the next method
                print(f"{name} on {where}: FAILED {type(exc).__name__}: {exc}")
                break
            if where == "cuda":
                torch.cuda.synchronize()
            boxes = {r.record.image_id: r.objects.boxes.tolist() if r.objects is not None else r.error for r in results}
            runs.append((boxes, (time.perf_counter() - start) / len(records)))
        if len(runs) < 2:
            continue
        (theirs, t_device), (cpu, t_cpu) = runs
        differ = [i for i in cpu if cpu[i] != theirs[i]]
        ious = [
            min((box_iou(a, b) for a, b in zip(cpu[i], theirs[i], strict=False)), default=0.0)
            if isinstance(cpu[i], list) and isinstance(theirs[i], list) and len(cpu[i]) == len(theirs[i])
            else 0.0
            for i in differ
        ]
        print(
            f"{name}: {len(cpu) - len(differ)}/{len(cpu)} images with identical boxes on {device} and cpu"
            + (f" (smallest IoU of the others {min(ious):.3f}: ids {differ[:5]})" if differ else "")
            + f"; {t_device:.3f} s/img {device}, {t_cpu:.3f} s/img cpu"
        )


if __name__ == "__main__":
    main()
