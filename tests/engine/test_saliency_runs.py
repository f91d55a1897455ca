"""Saliency runs through the real CLI: the PNGs, the metrics from them, the solver's soft maps
scored at full precision, TokenCut's input size, resume, bad masks, and eval of other tools' maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, make_saliency, refused, snapshot
from PIL import Image

from objdisc.evaluation.saliency import counts, read_mask, scores
from objdisc.images import load_image
from objdisc.objects import Objects
from objdisc.refinement.bilateral import bilateral_solve


@pytest.fixture
def sal(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    truths = make_saliency(tmp_path / "img", tmp_path / "gt", n=3)
    return tmp_path / "img", tmp_path / "gt", truths


def sal_run(weights_file, images: Path, masks: Path, out: Path, *extra: str):
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "saliency", "--images", images]
    return invoke(*args, "--annotations", masks, "--workers", "0", "--method", "tokencut", "--out", out, *extra)


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_masks_are_written_and_scored(tmp_path: Path, weights_file, sal):
    images, masks, truths = sal
    result = sal_run(weights_file, images, masks, tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "saliency   maxFβ" in result.output
    out = tmp_path / "o"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"saliency"}
    predictions = json.loads((out / "predictions.json").read_text())
    written = []
    for i, truth in enumerate(truths):
        mask = png(out / "masks" / f"im{i:02d}.png")
        assert set(np.unique(mask)) <= {0, 255} and mask.shape == truth.shape
        (entry,) = [p for p in predictions if p["image_id"] == i + 1]  # one object: its RLE is the map
        rle = Objects.from_json({"boxes": [[0, 0, 1, 1]], "scores": [1.0], "segmentation": [entry["segmentation"]]})
        assert (rle.pixel_masks()[0] == (mask > 0)).all()
        written.append(counts(mask / 255.0, truth))
    expected = scores(written)
    assert metrics["metrics"]["saliency"]["values"] == {k: round(100 * v, 4) for k, v in expected.items()}
    assert not (out / "soft").exists()
    assert json.loads((out / "run.json").read_text())["producer"]["discovery"]["patch_resize"] is True


def test_the_solver_output_is_scored_at_full_precision(tmp_path: Path, weights_file, sal):
    images, masks, truths = sal
    result = sal_run(weights_file, images, masks, tmp_path / "o", "--refine", "bilateral")
    assert result.exit_code == 0, result.output
    out = tmp_path / "o"
    plain = sal_run(weights_file, images, masks, tmp_path / "p")
    assert plain.exit_code == 0, plain.output
    soft_counts = []
    for i, truth in enumerate(truths):
        unrefined = png(tmp_path / "p" / "masks" / f"im{i:02d}.png") / 255.0  # the same objects, before the solver
        soft = bilateral_solve(load_image(images / f"im{i:02d}.jpg")[0], unrefined)
        assert np.abs(png(out / "soft" / f"im{i:02d}.png") - np.clip(soft, 0, 1) * 255).max() <= 0.5 + 1e-9
        soft_counts.append(counts(soft, truth))
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["saliency"]["values"]
    assert metrics == {k: round(100 * v, 4) for k, v in scores(soft_counts).items()}
    label = json.loads((out / "run.json").read_text())["producer"]["discovery"]["refine"]
    assert label == "bilateral"
    table = invoke("table", str(out), str(tmp_path / "p"))
    assert "refine=bilateral" in table.output, table.output


def test_images_are_resized_to_a_patch_multiple_and_masks_come_back_as_torch_nearest(tmp_path: Path, weights_file):
    from objdisc.datasets import load_dataset
    from objdisc.engine.discover import discover
    from objdisc.methods import TokenCut
    from objdisc.models.backbones import create_backbone

    make_saliency(tmp_path / "img", tmp_path / "gt", n=1, sizes=((70, 84),))  # 70 x 84 -> 64 x 80: grid 4 x 5
    (record,) = load_dataset("saliency", images=tmp_path / "img", annotations=tmp_path / "gt").records
    backbone = create_backbone("dino", weights_file("dino"))
    (result,) = discover(backbone, [record], method=TokenCut(), workers=0, patch_resize=True)
    geometry = result.objects.geometry
    assert geometry.grid_hw == (4, 5) and geometry.model_hw == (64, 80) and geometry.sampling == "nearest"
    grid = torch.from_numpy(result.objects.masks[0].astype(np.float64))[None, None]
    expected = torch.nn.functional.interpolate(grid, size=(70, 84), mode="nearest")[0, 0].numpy() > 0.5
    assert (result.objects.pixel_masks()[0] == expected).all()


@pytest.mark.slow
def test_a_resumed_run_scores_what_an_uninterrupted_one_does(tmp_path: Path, weights_file, sal):
    images, masks, _ = sal
    whole = sal_run(weights_file, images, masks, tmp_path / "whole", "--refine", "bilateral")
    first = sal_run(weights_file, images, masks, tmp_path / "parts", "--refine", "bilateral", "--limit", "1")
    rest = sal_run(weights_file, images, masks, tmp_path / "parts", "--refine", "bilateral")
    assert whole.exit_code == first.exit_code == rest.exit_code == 0, rest.output
    assert "1 resumed from the journal" in rest.output
    read = lambda run: json.loads((tmp_path / run / "metrics.json").read_text())["metrics"]  # noqa: E731
    assert read("whole") == read("parts")
    assert snapshot(tmp_path / "whole" / "soft") == snapshot(tmp_path / "parts" / "soft")
    again = sal_run(weights_file, images, masks, tmp_path / "parts", "--overwrite")  # clears the old maps
    assert again.exit_code == 0 and not (tmp_path / "parts" / "soft").exists()


def test_bad_ground_truth_skips_the_image_naming_the_file(tmp_path: Path, weights_file, sal):
    images, masks, _ = sal
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(masks / "im01.png")  # another size
    (masks / "im02.png").write_bytes(b"broken")
    result = sal_run(weights_file, images, masks, tmp_path / "o")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    skipped = {s["file_name"]: s["reason"] for s in metrics["skipped"]}
    block = metrics["metrics"]["saliency"]
    # a skipped image predicts nothing (a miss); one whose ground truth cannot be read is left out, listed
    assert block["n_scored"] == 2 and [u["file_name"] for u in block["unscorable"]] == ["im02.jpg"]
    assert "1 left out: ground truth unusable" in result.output
    assert "gt/im01.png: the prediction is 64x96 pixels, the ground truth 5x5" in skipped["im01.jpg"]
    assert "gt/im02.png: cannot read the mask" in skipped["im02.jpg"]


def test_patch_resize_conflicts_are_refused(tmp_path: Path, weights_file, sal):
    images, masks, _ = sal
    result = sal_run(weights_file, images, masks, tmp_path / "a", "--patch-resize", "--max-side", "64")
    refused(result, "--patch-resize and --max-side")
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", images]
    result = invoke(*args, "--method", "maskcut", "--patch-resize", "--out", tmp_path / "b")
    refused(result, "--patch-resize: maskcut resizes every image itself", "--fixed-size 0")


def test_two_images_whose_maps_would_share_a_png_are_refused_before_any_work(tmp_path: Path, weights_file, sal):
    images, _, _ = sal
    (images / "im00.png").write_bytes((images / "im01.jpg").read_bytes())  # im00.jpg and im00.png -> im00.png
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", images]
    result = invoke(*args, "--refine", "bilateral", "--out", tmp_path / "o")
    refused(result, "im00.jpg and im00.png would both write their saliency map to masks/im00.png")
    assert not (tmp_path / "o").exists()
    result = invoke(*args, "--out", tmp_path / "o")  # no maps written: nothing to collide
    assert result.exit_code == 0, result.output


def test_eval_scores_a_folder_of_another_tools_maps(tmp_path: Path, weights_file, sal):
    images, masks, truths = sal
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    rng = np.random.default_rng(5)
    maps = [np.clip(t * 200 + rng.integers(0, 60, t.shape), 0, 255).astype(np.uint8) for t in truths]
    for i, m in enumerate(maps):
        Image.fromarray(m).save(theirs / f"im{i:02d}.png")
    data = ["-d", "saliency", "--images", images, "--annotations", masks]
    result = invoke("eval", "-p", theirs, *data, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["saliency"]["values"]
    expected = scores([counts(m / 255.0, read_mask(masks / f"im{i:02d}.png")) for i, m in enumerate(maps)])
    assert found == {k: round(100 * v, 4) for k, v in expected.items()}
    Image.fromarray(maps[1][:10]).save(theirs / "im01.png")
    refused(invoke("eval", "-p", theirs, *data), str(theirs / "im01.png"), "the ground truth 64x96")
    (theirs / "im01.png").unlink()
    refused(invoke("eval", "-p", theirs, *data), str(theirs / "im01.png"), "no predicted mask")
    coco = ["-d", "folder", "--images", images]
    refused(invoke("eval", "-p", theirs, *coco), "no ground truth")


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("lost", []),
        ("dinoseg", []),
        ("maskcut", ["--no-crf", "--fixed-size", "64", "--masks", "2"]),
        ("promerge", ["--no-crf", "--fixed-size", "64", "--stride", "1"]),
    ],
)
def test_every_method_gives_a_map_the_union_of_its_masks(tmp_path: Path, weights_file, sal, method, extra):
    images, masks, truths = sal
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "saliency", "--images", images]
    result = invoke(
        *args, "--annotations", masks, "--workers", "0", "--method", method, *extra, "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    predictions = json.loads((tmp_path / "o" / "predictions.json").read_text())
    for i, truth in enumerate(truths):
        mine = [p for p in predictions if p["image_id"] == i + 1]
        objects = Objects.from_json(
            {
                "boxes": [[0, 0, 1, 1]] * len(mine),
                "scores": [1.0] * len(mine),
                "segmentation": [p["segmentation"] for p in mine],
            }
        )
        union = objects.pixel_masks().any(axis=0) if mine else np.zeros(truth.shape, dtype=bool)
        assert ((png(tmp_path / "o" / "masks" / f"im{i:02d}.png") > 0) == union).all()
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]["saliency"]["n_scored"] == 3
