"""Time to rerun a finished 20k-image run into the same --out (everything comes from the journal).

    python benchmarks/resume.py [--images 19817] [--workdir DIR]

Builds a COCO-format dataset of N image entries (the files need not exist: a finished run
decodes nothing), a random-init weights file, and a journal holding every image, then times
``objdisc.run`` on it: dataset load, weights hash, journal read, final files. The model is
never built.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from objdisc.commands.run import RunConfig, resolve, run
from objdisc.engine.journal import Journal
from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=19_817)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="resume-bench-"))
    (work / "images").mkdir(parents=True, exist_ok=True)
    ids = range(1, args.images + 1)
    instances = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in ids],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 20, 300, 200], "area": 60000, "iscrowd": 0}
            for i in ids
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    (work / "instances.json").write_text(json.dumps(instances))
    spec = get_spec("dinov2_reg")
    torch.manual_seed(0)
    save_file(build_model(spec).state_dict(), str(work / "weights.safetensors"))
    config = RunConfig.flat(
        "dinov2_reg",
        "coco",
        work / "out",
        weights=work / "weights.safetensors",
        images=work / "images",
        annotations=work / "instances.json",
        device="cpu",
    )
    with Journal(work / "out" / "journal", 0, resolve(config).settings) as journal:
        for i in ids:
            journal.append(
                {
                    "image_id": i,
                    "file_name": f"{i:012d}.jpg",
                    "hw": [480, 640],
                    "objects": {"boxes": [[14, 28, 322, 224]], "scores": [1.0], "seeds": [5]},
                    "error": None,
                }
            )
    start = time.perf_counter()
    result = run(config, progress=False)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": args.images,
                "resume_seconds": round(seconds, 2),
                "n_resumed": result.metrics["n_resumed"],
                "corloc": result.metrics["metrics"]["corloc"]["values"]["corloc"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
