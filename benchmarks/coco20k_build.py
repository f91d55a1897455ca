"""Time the COCO20k builder on a synthetic instances file the size of COCO train2014.

    python benchmarks/coco20k_build.py [--list ../shared/data/coco_20k_filenames.txt] [--workdir DIR]

The synthetic file has the real counts (82,783 images, 604,907 annotations, 80 categories) and
segmentation polygons of COCO-like length, so the JSON is about as large as the real one. With
--list the real LOST list is used (its ids are among the synthetic images); otherwise 19,817
ids are drawn. Only the build (read, select, write) is timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from objdisc.datasets.download.coco20k import build_coco20k, read_list

N_IMAGES, N_ANNOTATIONS, N_SELECTED = 82_783, 604_907, 19_817


def synthetic_instances(listed: list[int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(rng.choice(600_000, size=N_IMAGES * 2, replace=False), listed)[: N_IMAGES - len(listed)]
    ids = np.concatenate([np.asarray(listed), others])
    rng.shuffle(ids)
    images = [
        {
            "license": 1,
            "file_name": f"COCO_train2014_{i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/train2014/COCO_train2014_{i:012d}.jpg",
            "height": 480,
            "width": 640,
            "date_captured": "2013-11-14 16:28:13",
            "flickr_url": "http://farm.example/x.jpg",
            "id": int(i),
        }
        for i in ids
    ]
    owners = rng.choice(ids, size=N_ANNOTATIONS)
    points = rng.integers(8, 40, size=N_ANNOTATIONS)
    annotations = []
    for k in range(N_ANNOTATIONS):
        polygon = np.round(rng.uniform(0, 640, size=2 * int(points[k])), 2).tolist()
        annotations.append(
            {
                "segmentation": [polygon],
                "area": float(np.round(rng.uniform(10, 50000), 4)),
                "iscrowd": int(k % 100 == 0),
                "image_id": int(owners[k]),
                "bbox": np.round(rng.uniform(0, 300, size=4), 2).tolist(),
                "category_id": int(rng.integers(1, 91)),
                "id": k + 1,
            }
        )
    categories = [{"supercategory": "thing", "id": c, "name": f"class{c}"} for c in range(1, 81)]
    return {"info": {}, "images": images, "licenses": [], "annotations": annotations, "categories": categories}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, default=None, help="LOST's coco_20k_filenames.txt")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="coco20k-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.list:
        list_path, listed = args.list, read_list(args.list)
    else:
        listed = [int(i) for i in np.random.default_rng(1).choice(600_000, size=N_SELECTED, replace=False)]
        list_path = work / "coco_20k_filenames.txt"
        list_path.write_text("".join(f"train2014/COCO_train2014_{i:012d}.jpg\n" for i in listed))
    instances_path = work / "instances_train2014.json"
    if not instances_path.exists():
        start = time.perf_counter()
        instances_path.write_text(json.dumps(synthetic_instances(listed)))
        print(f"wrote synthetic {instances_path} in {time.perf_counter() - start:.1f} s")
    size_mb = instances_path.stat().st_size / 1e6
    start = time.perf_counter()
    counts = build_coco20k(instances_path, list_path, work / "instances_train2014_sel20k.json")
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "instances_mb": round(size_mb, 1),
                "images": N_IMAGES,
                "annotations": N_ANNOTATIONS,
                "selected": counts,
                "build_seconds": round(seconds, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
