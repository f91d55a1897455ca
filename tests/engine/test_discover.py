from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import corloc, corloc_value, make_voc, write_image
from pycocotools.coco import COCO

import objdisc.engine.discover as pipeline
from objdisc.commands.run import RunConfig, run
from objdisc.datasets import load_dataset
from objdisc.engine.discover import discover
from objdisc.geometry import iou, xywh_to_xyxy
from objdisc.images import load_image, make_batch
from objdisc.methods import Lost, TokenCut
from objdisc.methods.lost import lost
from objdisc.models.backbones import create_backbone
from objdisc.models.features import FeatureExtractor, FeatureSpec


@pytest.fixture(scope="module")
def backbone(weights_file):
    return create_backbone("dinov2_reg", weights_file("dinov2_reg"))


def folder_of_mixed_sizes(root: Path) -> Path:
    # Sizes chosen so that several share a padded size for patch 14 (84 x 112) and some do not.
    sizes = [(75, 100), (80, 110), (84, 112), (71, 99), (100, 75), (61, 83), (75, 100), (30, 20)]
    for i, hw in enumerate(sizes):
        h, w = hw
        write_image(root / f"im{i}.jpg", hw, (w // 4, h // 4, 3 * w // 4, 3 * h // 4), seed=i)
    return root


def boxes_by_id(results) -> dict[int, tuple]:
    return {
        r.record.image_id: (r.objects.boxes.tolist(), r.objects.seeds.tolist(), r.objects.masks.tobytes())
        for r in results
    }


@pytest.mark.parametrize("batch_size", [2, pytest.param(3, marks=pytest.mark.slow), 8])
def test_any_batch_size_gives_the_boxes_of_batch_size_one(backbone, tmp_path: Path, batch_size: int):
    records = load_dataset("folder", images=folder_of_mixed_sizes(tmp_path)).records
    forwards = []
    handle = backbone.model.patch_embed.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    try:
        single = boxes_by_id(discover(backbone, records, method=Lost(), batch_size=1, workers=0))
        forwards.clear()
        batched = boxes_by_id(discover(backbone, records, method=Lost(), batch_size=batch_size, workers=0))
    finally:
        handle.remove()
    assert max(forwards) > 1  # real multi-image batches ran
    assert batched == single and len(single) == len(records)


@pytest.mark.parametrize(("batch_tokens", "most"), [(48, 1), (96, 2), pytest.param(10_000, 5, marks=pytest.mark.slow)])
def test_a_token_budget_caps_batches_and_changes_no_box(backbone, tmp_path: Path, batch_tokens: int, most: int):
    records = load_dataset("folder", images=folder_of_mixed_sizes(tmp_path)).records
    forwards = []
    handle = backbone.model.patch_embed.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape))
    try:
        single = boxes_by_id(discover(backbone, records, method=Lost(), batch_size=1, workers=0))
        forwards.clear()
        capped = boxes_by_id(
            discover(backbone, records, method=Lost(), batch_size=8, batch_tokens=batch_tokens, workers=0)
        )
    finally:
        handle.remove()
    # 84 x 112 pixels at patch 14 is 48 patches: the padded size 5 of these images share.
    assert max(shape[0] for shape in forwards if tuple(shape[2:]) == (84, 112)) == most
    assert capped == single


@pytest.mark.slow
def test_decode_workers_change_nothing(backbone, tmp_path: Path):
    records = load_dataset("folder", images=folder_of_mixed_sizes(tmp_path)).records
    forked = boxes_by_id(discover(backbone, records, method=Lost(), workers=2))
    assert forked == boxes_by_id(discover(backbone, records, method=Lost(), workers=0))


def voc_with_bad_images(root: Path) -> None:
    make_voc(root)
    images = root / "VOCdevkit/VOC2007/JPEGImages"
    (images / "000007.jpg").write_bytes(b"")  # zero bytes
    (images / "000009.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage" * 10)  # corrupt
    gray = (np.random.default_rng(0).integers(0, 255, size=(61, 83))).astype(np.uint8)
    import cv2

    cv2.imwrite(str(images / "000012.jpg"), gray)  # grayscale JPEG


def test_bad_images_are_skipped_named_and_count_as_misses(backbone, tmp_path: Path):
    voc_with_bad_images(tmp_path)
    config = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "out", data_root=tmp_path, workers=0)
    result = run(config, backbone=backbone)
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["n_images"] == 4 and metrics["n_skipped"] == 2 and metrics["n_objects"] == 2
    reasons = {s["image_id"]: s["reason"] for s in metrics["skipped"]}
    assert "000007.jpg" in reasons[7] and "empty" in reasons[7]
    assert "000009.jpg" in reasons[9] and "truncated JPEG" in reasons[9]
    predicted = {p["image_id"] for p in json.loads((tmp_path / "out/predictions.json").read_text())}
    assert predicted == {5, 12}  # the grayscale image got its box
    block = corloc(metrics)
    assert block["n_hits"] <= 2 and block["values"]["corloc"] == pytest.approx(100 * block["n_hits"] / 4)
    assert block["n_skipped"] == 2 and block["n_scored"] == 4


@pytest.mark.parametrize("stage", ["launch", "finish"])
def test_a_failing_batch_is_retried_image_by_image(
    backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
):
    """A failure when the batch is queued, or when its results are read back (where CUDA
    reports asynchronous errors), costs only the bad image."""
    records = load_dataset("folder", images=folder_of_mixed_sizes(tmp_path)).records
    real = getattr(pipeline._BatchStep, stage)

    def flaky(self, work):
        batch = work if stage == "launch" else work.batch
        if any(records[i].file_name == "im2.jpg" for i, *_ in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, work)

    monkeypatch.setattr(pipeline._BatchStep, stage, flaky)
    results = list(discover(backbone, records, method=Lost(), batch_size=4, workers=0))
    failed = [r for r in results if r.objects is None]
    assert [r.record.file_name for r in failed] == ["im2.jpg"]
    assert "im2.jpg" in failed[0].error and "out of memory" in failed[0].error
    assert len(results) == len(records)


def test_outputs_load_in_pycocotools_and_agree_with_metrics(backbone, tmp_path: Path):
    make_voc(tmp_path)
    out = tmp_path / "out"
    run(RunConfig.flat("dinov2_reg", "voc07", out, data_root=tmp_path, batch_size=3, workers=0), backbone=backbone)
    gt = COCO(str(out / "gt.json"))
    predictions = gt.loadRes(str(out / "predictions.json"))
    assert sorted(gt.getImgIds()) == [5, 7, 9, 12]
    assert sorted(predictions.getImgIds()) == [5, 7, 9, 12]
    assert gt.imgs[5] == {"id": 5, "file_name": "000005.jpg", "width": 100, "height": 75}
    assert len(gt.getAnnIds(imgIds=[7])) == 2  # the difficult object is ground truth
    hits = 0
    for image_id in gt.getImgIds():
        (pred,) = predictions.loadAnns(predictions.getAnnIds(imgIds=[image_id]))
        gt_boxes = np.array([xywh_to_xyxy(a["bbox"]) for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))])
        assert pred["category_id"] == 1 and pred["score"] == 1.0
        x, y, w, h = pred["bbox"]
        assert 0 <= x and 0 <= y and x + w <= gt.imgs[image_id]["width"] and y + h <= gt.imgs[image_id]["height"]
        hits += bool((iou(xywh_to_xyxy(pred["bbox"]), gt_boxes) >= 0.5).any())
    metrics = json.loads((out / "metrics.json").read_text())
    assert corloc(metrics)["n_hits"] == hits and corloc_value(metrics) == pytest.approx(100 * hits / 4)

    info = json.loads((out / "run.json").read_text())
    producer = info["producer"]
    assert info["status"] == "finished"
    assert producer["backbone"] == "dinov2_reg_vits14"
    assert producer["timm_model"] == "vit_small_patch14_reg4_dinov2.lvd142m"
    assert len(producer["weights"]["sha256"]) == 64 and producer["weights"]["source"] == "local"
    assert set(producer["versions"]) >= {"objdisc", "torch", "timm"}
    assert producer["device"] == "cpu" and producer["precision"] == "fp32"
    assert info["options"]["method_options"] == {} and info["options"]["batch_size"] == 3
    assert producer["discovery"] == {"features": "k", "layer": -1, "method": "lost", "k_patches": 100, "gram_bias": 0.0}
    for name in ("metrics.json", "per_image.json"):
        assert json.loads((out / name).read_text())["producer"] == producer
    assert json.loads((out / "gt.json").read_text())["info"]["producer"] == producer
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_limit_runs_the_first_images(backbone, tmp_path: Path):
    make_voc(tmp_path)
    config = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "o", data_root=tmp_path, limit=2, workers=0)
    result = run(config, backbone)
    assert result.metrics["n_images"] == 2
    assert [i["id"] for i in json.loads((tmp_path / "o/gt.json").read_text())["images"]] == [5, 7]


def test_k_patches_and_gram_bias_reach_lost(backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import objdisc.methods.lost as lost_module

    make_voc(tmp_path)
    seen = []
    real = lost_module.lost_device
    monkeypatch.setattr(lost_module, "lost_device", lambda *a: seen.append(a[-2:]) or real(*a))
    options = {"k_patches": 7, "gram_bias": 0.25}
    config = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "o", data_root=tmp_path, method_options=options)
    run(dataclasses.replace(config, workers=0), backbone)
    assert seen and set(seen) == {(7, 0.25)}


def reference_boxes(backbone, records, spec: FeatureSpec, gram_bias: float = 0.0) -> dict[int, list]:
    """Image by image: decode, one forward, features of ``spec``, plain ``lost()``."""
    out = {}
    with FeatureExtractor(backbone.model, [spec]) as extractor, torch.no_grad():
        for record in records:
            image, _ = load_image(record.path, patch_size=14)
            x = make_batch([torch.from_numpy(image)], 14, backbone.spec.mean, backbone.spec.std, "cpu")
            grid = (x.shape[-2] // 14, x.shape[-1] // 14)
            found = lost(extractor(x)[0], grid, 14, image.shape[:2], gram_bias=gram_bias)
            out[record.image_id] = found.boxes.tolist()
    return out


@pytest.mark.parametrize(
    ("spec", "gram_bias"),
    [(FeatureSpec("k", -1), 0.0), (FeatureSpec("q", -1), 0.0), (FeatureSpec("v", -2), 0.0), (FeatureSpec("k", 3), 2.5)],
)
def test_each_feature_option_gives_lost_on_exactly_those_features(backbone, tmp_path: Path, spec, gram_bias):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records
    got = {
        r.record.image_id: r.objects.boxes.tolist()
        for r in discover(backbone, records, features=spec, method=Lost(100, gram_bias), workers=0)
    }
    assert got == reference_boxes(backbone, records, spec, gram_bias)


def test_gram_bias_changes_the_degrees_it_should(backbone, tmp_path: Path):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records[:1]
    plain = next(iter(discover(backbone, records, method=Lost(), workers=0))).objects
    biased = next(iter(discover(backbone, records, method=Lost(100, 1e9), workers=0))).objects
    # A bias above every affinity leaves no positive pair: every degree is 0, the seed is patch 0.
    assert plain.score_map.max() > 0 and biased.score_map.max() == 0 and biased.seeds[0] == 0


def test_tokencut_runs_through_the_engine(backbone, tmp_path: Path):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records
    results = list(discover(backbone, records, method=TokenCut(), workers=0))
    assert len(results) == 4 and all(r.objects is not None for r in results)
    for r in results:
        assert r.objects.masks[0].flat[r.objects.seeds[0]]  # the seed is in its own component
