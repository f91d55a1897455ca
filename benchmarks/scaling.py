"""images/s of one process against torchrun with N processes, same images, same files.

    python benchmarks/scaling.py --images ../shared/data/coco128/images --limit 24 --nproc 2 [--device cpu]

Both runs use a random-init model saved as a local weights file (no download). On CPU the
cores are split between the processes (OMP_NUM_THREADS = cores / N), so the figure shows the
cost of sharding rather than extra compute; on a multi-GPU machine use --device cuda.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--backbone", default="dinov2_reg")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scaling-bench-"))
    torch.manual_seed(0)
    save_file(build_model(get_spec(args.backbone)).state_dict(), str(work / "w.safetensors"))
    common = [
        "-b",
        args.backbone,
        "-d",
        "folder",
        "--images",
        str(args.images),
        "--weights",
        str(work / "w.safetensors"),
        "--limit",
        str(args.limit),
        "--device",
        args.device,
        "--workers",
        "1",
    ]
    cores = os.cpu_count() or 1
    figures = {}
    for label, prefix, threads in [
        ("1 process", [sys.executable, "-m", "objdisc", "run"], cores),
        (
            f"torchrun {args.nproc}",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={args.nproc}",
                "-m",
                "objdisc",
                "run",
            ],
            max(1, cores // args.nproc),
        ),
    ]:
        out = work / label.replace(" ", "_")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run([*prefix, *common, "-o", str(out)], check=True, env=env, capture_output=True)
        wall = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
        figures[label] = {
            "threads_per_process": threads,
            "wall_s": round(wall, 1),
            "images_per_s_in_loop": metrics["images_per_s"],
            "images_per_s_wall": round(args.limit / wall, 3),
        }
    same = all(
        (work / "1_process" / f).read_bytes() == (work / f"torchrun_{args.nproc}" / f).read_bytes()
        for f in ("predictions.json", "gt.json", "per_image.json")
    )
    print(json.dumps({"images": args.limit, "device": args.device, "runs": figures, "identical_files": same}, indent=2))


if __name__ == "__main__":
    main()
