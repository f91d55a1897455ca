"""A dataset kind is one loader plus one registry entry: a throwaway kind registered in DATASETS
alone is run and scored like the others, with no other file changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image

from objdisc.commands.run import RunConfig, run
from objdisc.datasets import DATASETS, DatasetArgs, DatasetKind
from objdisc.datasets.base import Dataset, DatasetError, ImageRecord


def load_listed(images: Path) -> Dataset:
    """A text file of ``name x1 y1 x2 y2`` lines next to the images (one box each)."""
    listing = Path(images) / "boxes.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: not found; write one line per image: name x1 y1 x2 y2")
    records = []
    for n, line in enumerate(listing.read_text().splitlines()):
        name, *box = line.split()
        records.append(
            ImageRecord(n + 1, Path(images) / name, name, np.asarray([[int(v) for v in box]], dtype=np.int64))
        )
    return Dataset("listed", Path(images), records, has_gt=True)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    kind = DatasetKind(lambda a, _: load_listed(Path(a.images)), frozenset({"images"}), "images with a boxes.txt")
    monkeypatch.setitem(DATASETS, "listed", kind)


def test_a_dataset_kind_registered_alone_is_run_and_scored(registered, tmp_path: Path, weights_file):
    images = tmp_path / "images"
    lines = []
    for i in range(3):
        write_image(images / f"{i}.jpg", (70, 84), (10, 10, 60, 50), seed=i)
        lines.append(f"{i}.jpg 10 10 60 50")
    (images / "boxes.txt").write_text("\n".join(lines) + "\n")
    config = RunConfig.flat("dinov2_reg", "listed", tmp_path / "o", images=images, weights=weights_file("dinov2_reg"),
                            workers=0)  # fmt: skip
    result = run(config)
    assert result.metrics["dataset"] == "listed" and result.metrics["n_images"] == 3
    assert result.metrics["metrics"]["corloc"]["n_scored"] == 3  # the kind's boxes are scored
    gt = json.loads((tmp_path / "o" / "gt.json").read_text())
    assert [a["bbox"] for a in gt["annotations"]] == [[10, 10, 50, 40]] * 3
    with pytest.raises(DatasetError, match="does not take --annotations"):
        DatasetArgs("listed", images=images, annotations=tmp_path / "x.json").load()
