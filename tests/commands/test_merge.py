"""Shards and class subsets merged into one run; the pseudo-labels CutLER's detector reads."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import invoke, refused, snapshot, write_image
from safetensors.torch import save_file

from objdisc.commands.merge import MergeConfig
from objdisc.commands.merge import run as merge
from objdisc.commands.run import RunConfig, run
from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec

SAME = ("predictions.json", "gt.json", "per_image.json")
MASKCUT = ("--method", "maskcut", "--no-crf", "--fixed-size", "48")


def tree(root: Path, classes: int = 3, per_class: int = 4, hw: tuple[int, int] = (44, 52)) -> Path:
    for c in range(classes):
        for i in range(per_class):
            write_image(root / f"n{c:04d}" / f"n{c:04d}_{i}.JPEG", hw, (6, 6, 34, 30), seed=1000 * c + i)
    return root


def tree_run(weights: Path, images: Path, out: Path, *extra: str):
    return invoke("run", "-b", "dino", "--weights", weights, "-d", "class-folders", "--images", images,
                  "--out", out, "--workers", "0", *MASKCUT, *extra)  # fmt: skip


def same_run(a: Path, b: Path) -> None:
    for name in SAME:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["metrics"] == mb["metrics"] and ma["image_set"] == mb["image_set"] and ma["n_objects"] == mb["n_objects"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, weights_file) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tree")
    images = tree(root / "train")
    result = tree_run(weights_file("dino"), images, root / "whole", "--pseudo-labels", root / "whole.json")
    assert result.exit_code == 0, result.output
    return images, root / "whole", root / "whole.json"


def test_shards_merged_equal_the_whole_run(whole, tmp_path: Path, weights_file):
    images, full, labels = whole
    for i in range(3):
        assert tree_run(weights_file("dino"), images, tmp_path / f"s{i}", "--shard", f"{i}/3").exit_code == 0
    parts = [tmp_path / f"s{i}" for i in (2, 0, 1)]  # in any order
    result = invoke("merge", *parts, "--out", tmp_path / "merged", "--pseudo-labels", tmp_path / "merged.json")
    assert result.exit_code == 0, result.output
    same_run(full, tmp_path / "merged")
    assert (tmp_path / "merged.json").read_bytes() == labels.read_bytes()  # the one file a detector trains on
    info = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert info["merged_from"] == [str(p) for p in parts] and info["status"] == "finished"
    again = tree_run(weights_file("dino"), images, tmp_path / "merged")  # a merged folder is a finished run
    assert again.exit_code == 0 and json.loads((tmp_path / "merged/metrics.json").read_text())["n_resumed"] == 12


def test_runs_over_class_subsets_merge_into_the_whole_run(whole, tmp_path: Path, weights_file):
    images, full, _ = whole
    assert tree_run(weights_file("dino"), images, tmp_path / "a", "--classes", "n0000,n0002").exit_code == 0
    assert tree_run(weights_file("dino"), images, tmp_path / "b", "--classes", "1:2").exit_code == 0
    assert invoke("merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m").exit_code == 0
    same_run(full, tmp_path / "m")


def test_merge_refuses_parts_that_do_not_make_one_run(whole, tmp_path: Path, weights_file):
    images, full, _ = whole
    assert tree_run(weights_file("dino"), images, tmp_path / "s0", "--shard", "0/2").exit_code == 0
    assert tree_run(weights_file("dino"), images, tmp_path / "t1", "--shard", "1/2", "--tau", "0.3").exit_code == 0
    refused(invoke("merge", tmp_path / "s0", tmp_path / "t1", "--out", tmp_path / "m"),
            "other settings", "tau: 0.15 in", "0.3 in")  # fmt: skip
    refused(invoke("merge", tmp_path / "s0", full, "--out", tmp_path / "m"), "is in both", "must not overlap")
    running = tmp_path / "running"
    shutil.copytree(tmp_path / "s0", running)
    info = json.loads((running / "run.json").read_text())
    (running / "run.json").write_text(json.dumps({**info, "status": "running"}))
    refused(invoke("merge", running, "--out", tmp_path / "m"), "not finished", "rerun its command")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    refused(invoke("merge", tmp_path / "s0", "--out", mine), "did not write")
    refused(invoke("merge", tmp_path / "s0", "--out", full), "holds an objdisc run (not a merge)")
    assert snapshot(mine) == {"notes.txt": b"x"} and not (tmp_path / "m").exists()


def detectron2_dicts(json_file: Path, image_root: Path) -> list[dict]:
    """What detectron2's ``load_coco_json`` (CutLER's copy) makes of a file, with its checks:
    unique annotation ids, each annotation's image id its image's, no ``ignore``, a 4-number bbox,
    RLE segmentations (string counts kept, list counts converted), categories mapped to 0..K-1."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    api = COCO(str(json_file))
    category_ids = sorted(api.getCatIds())
    to_contiguous = {c: i for i, c in enumerate(category_ids)}
    ids = [a["id"] for a in api.dataset["annotations"]]
    assert len(set(ids)) == len(ids), "annotation ids are not unique"
    out = []
    for image in api.loadImgs(sorted(api.imgs)):
        record = {"file_name": os.path.join(image_root, image["file_name"]), "height": image["height"],
                  "width": image["width"], "image_id": image["id"], "annotations": []}  # fmt: skip
        for ann in api.imgToAnns[image["id"]]:
            assert ann["image_id"] == image["id"] and ann.get("ignore", 0) == 0 and len(ann["bbox"]) == 4
            segm = ann["segmentation"]
            assert isinstance(segm, dict) and isinstance(segm["counts"], str)  # compressed RLE, as CutLER writes
            mask = mask_util.decode({"size": segm["size"], "counts": segm["counts"].encode()})
            assert mask.shape == (image["height"], image["width"]) and mask.any()
            category = to_contiguous[ann["category_id"]]
            record["annotations"].append(
                {"bbox": ann["bbox"], "bbox_mode": "XYWH_ABS", "category_id": category, "iscrowd": ann["iscrowd"]}
            )
        out.append(record)
    return out


def test_the_merged_pseudo_labels_load_as_cutlers_detector_reads_them(whole):
    import cv2

    images, _, labels = whole
    data = json.loads(labels.read_text())
    assert data["categories"] == [{"id": 1, "name": "fg", "supercategory": "fg"}]
    dicts = detectron2_dicts(labels, images)
    assert len(dicts) == 12 and sum(len(d["annotations"]) for d in dicts) > 0
    for record in dicts:
        pixels = cv2.imread(record["file_name"])  # the file the data loader opens, at the size said
        assert pixels is not None and pixels.shape[:2] == (record["height"], record["width"])
        assert all(a["category_id"] == 0 and a["iscrowd"] == 0 for a in record["annotations"])


@pytest.mark.slow
def test_a_2000_image_tree_in_3_shards_merges_into_the_whole_run(tmp_path: Path):
    """The issue's check at its size: 2,000 images (5 classes of 400), MaskCut on a one-block ViT."""
    images = tree(tmp_path / "train", classes=5, per_class=400, hw=(40, 48))
    torch.manual_seed(0)
    weights = tmp_path / "dino-depth1.safetensors"
    model = build_model(get_spec("dino"), depth=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    def config(out: str, **kw) -> RunConfig:
        return RunConfig.flat("dino", "class-folders", tmp_path / out, images=images, weights=weights, workers=0,
                              model_kwargs={"depth": 1}, method="maskcut", batch_size=32,
                              method_options={"crf": False, "fixed_size": 48}, **kw)  # fmt: skip

    full = run(config("whole", pseudo_labels=tmp_path / "whole.json"))
    assert full.metrics["n_images"] == 2000 and full.metrics["n_objects"] > 2000
    for i in range(3):
        run(config(f"s{i}", shard=f"{i}/3"))
    merged = merge(MergeConfig([tmp_path / f"s{i}" for i in range(3)], tmp_path / "m", tmp_path / "m.json"))
    assert merged["n_images"] == 2000
    same_run(tmp_path / "whole", tmp_path / "m")
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
