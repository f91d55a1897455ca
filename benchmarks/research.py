"""Per-image time of a full run, a cached LOST re-run, and TokenCut, on real photos.

    python benchmarks/research.py --images ../shared/data/coco128/images [--limit 48] \
        [--backbone dinov2_reg] [--weights FILE] [--workdir DIR]

Runs, in one invocation, over the same images (``--dataset folder``):

1. a full run that also fills a feature cache (decode, backbone, LOST, cache writes);
2. the same full run without a cache (what a user pays without ``--cache``);
3. a LOST re-run with another ``--k-patches`` from the cache (the backbone is never built);
4. a TokenCut run from the cache, whose method step is timed alone (``stage_seconds.method``);
5. TokenCut's own dense generalised ``eigh`` on the same graphs, for comparison.

Without --weights the model is random-init (timing does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from objdisc.commands.run import RunConfig, resolve, run
from objdisc.datasets import load_dataset
from objdisc.engine.feature_cache import FeatureCache
from objdisc.methods.tokencut import second_eigenvector
from objdisc.models.backbones import build_model
from objdisc.models.feature_spec import FeatureSpec
from objdisc.models.specs import get_spec


def timed_run(config: RunConfig) -> tuple[float, dict]:
    start = time.perf_counter()
    result = run(config, progress=False)
    return time.perf_counter() - start, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--backbone", default="dinov2_reg")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="objdisc-research-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = work / "random.safetensors"
        save_file(build_model(get_spec(args.backbone)).state_dict(), str(weights))
    base = {"images": args.images, "limit": args.limit, "workers": args.workers, "device": "cpu", "weights": weights}
    n = args.limit

    def config(out: str, **kw) -> RunConfig:
        return RunConfig.flat(args.backbone, "folder", work / out, **base, **kw)

    full_cache_s, _ = timed_run(config("full-cache", cache=work / "cache"))
    full_s, _ = timed_run(config("full"))
    lost_s, _ = timed_run(config("lost-k50", cache=work / "cache", method_options={"k_patches": 50}))
    tokencut_s, tokencut = timed_run(config("tokencut", cache=work / "cache", method="tokencut"))
    step_s = tokencut["stage_seconds"]["method"]

    # TokenCut's own dense solve on the same graphs
    spec = get_spec(args.backbone)
    identity = resolve(config("x")).cache_identity
    cache = FeatureCache(work / "cache", identity)
    records = load_dataset("folder", images=args.images).records[:n]
    dense, fast, patches = 0.0, 0.0, []
    for record in records:
        entry = cache.get(record.path, FeatureSpec())
        unit = F.normalize(entry.features.float(), dim=-1)
        weights_np = torch.where(unit @ unit.T > 0.2, 1.0, 1e-5).double().numpy()
        patches.append(len(weights_np))
        degree = np.diag(weights_np.sum(1))
        start = time.perf_counter()
        scipy.linalg.eigh(degree - weights_np, degree, subset_by_index=[1, 2])
        dense += time.perf_counter() - start
        start = time.perf_counter()
        second_eigenvector(weights_np)
        fast += time.perf_counter() - start

    print(
        f"{n} images from {args.images}, {spec.name}, CPU, {torch.get_num_threads()} threads, "
        f"{int(np.mean(patches))} patches/image on average"
    )
    print(f"full run, no cache          {1000 * full_s / n:8.1f} ms/image")
    print(f"full run, filling the cache {1000 * full_cache_s / n:8.1f} ms/image")
    print(f"cached LOST re-run (k=50)   {1000 * lost_s / n:8.1f} ms/image  ({full_s / lost_s:.1f}x faster than full)")
    print(f"cached TokenCut run         {1000 * tokencut_s / n:8.1f} ms/image")
    print(f"  TokenCut step alone       {1000 * step_s / n:8.1f} ms/image (graph + eigensolver + component)")
    print(
        f"  eigensolver: deflated Lanczos {1000 * fast / n:.1f} ms/image vs dense eigh {1000 * dense / n:.1f} ms/image"
    )
    print(f"files under {work}")


if __name__ == "__main__":
    main()
