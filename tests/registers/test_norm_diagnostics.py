"""``objdisc norms``: the threshold, the counts, the files, progress; with test-time registers,
where the high norms went."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import invoke, make_voc
from planted_model import BLOCK, N_FLAT, UNIT

from objdisc.cli import cli
from objdisc.datasets import load_dataset
from objdisc.images import load_image, make_batch
from objdisc.models.backbones import create_backbone
from objdisc.models.token_probe import TokenProbe
from objdisc.registers.norm_diagnostics import ImageNorms, NormSummary, find_threshold, norm_summary
from objdisc.reports.norm_figures import write_norm_files


def on_voc(command: str, root: Path, weights_file, *extra: str):
    """``objdisc <command>`` on the synthetic VOC07 under ``root`` with random-init DINOv2+reg weights."""
    weights = str(weights_file("dinov2_reg"))
    return invoke(command, "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(root), "--weights", weights, *extra)


def test_norms_shows_progress(coco, weights_file, tmp_path: Path):
    images, annotations, _ = coco
    result = invoke(
        "norms", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
        "--images", str(images), "--annotations", str(annotations), "--out", str(tmp_path / "n"), "--progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "norms: 100%" in result.stderr and "5/5" in result.stderr


def test_norms_reports_where_the_high_norms_went(planted, flat_images, tmp_path: Path):
    neurons = tmp_path / "neurons.json"
    neurons.write_text(json.dumps({"ranked": [{"block": BLOCK, "neuron": UNIT}]}))
    args = ["norms", "-b", "dinov2_vits14", "--weights", str(planted), "-d", "folder", "--images", str(flat_images)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "n"), "--test-time-registers", str(neurons)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "n" / "norms.json").read_text())
    ttr = summary["test_time_registers"]
    assert ttr["n_high_before"] == N_FLAT and ttr["n_high_after"] == 0
    assert ttr["share_high_after"] == 0 and ttr["extra_token_norm"]["max"] > ttr["threshold"]
    assert summary["threshold_source"] == "bimodal gap (without test-time registers)"
    assert summary["producer"]["test_time_registers"]["neurons"] == {str(BLOCK): [UNIT]}
    assert f"high-norm patch tokens {N_FLAT} (" in result.output and "-> 0 (0.00%)" in result.output


def planted(seed: int = 0) -> tuple[list[ImageNorms], dict[str, list[tuple[int, int]]]]:
    """Three hand-made images: norms ~ 10 with three planted tokens of norm 200 at known places,
    whose patch embeddings are redundant with their neighbours (cosine 0.95 vs 0.2)."""
    rng = np.random.default_rng(seed)
    places = {"a.jpg": [(1, 2)], "b.jpg": [(0, 0), (3, 4)], "c.jpg": []}
    images = []
    for name, spots in places.items():
        last = rng.normal(10, 1, size=(4, 5)).astype(np.float32)
        cos = np.full((4, 5), 0.2, np.float32)
        for r, c in spots:
            last[r, c] = 200
            cos[r, c] = 0.95
        patch = np.stack([last / 2, last])  # two blocks
        images.append(ImageNorms(name, patch, np.full((2, 4), 30, np.float32), np.array([1.0, 2.0]), cos))
    return images, places


def test_a_planted_high_norm_token_is_found_and_located():
    images, places = planted()
    acc = NormSummary()
    for im in images:
        acc.update(im)
    summary = acc.compute()
    assert summary["threshold_source"] == "bimodal gap" and 14 < summary["threshold"] < 190
    assert summary["n_patch_tokens"] == 3 * 20 and summary["n_high"] == 3
    assert summary["share_high"] == pytest.approx(3 / 60)
    for item in summary["images"]:
        assert [tuple(p) for p in item["high_positions"]] == places[item["file_name"]]  # row-major on ties
    assert summary["neighbour_cosine"] == {"high_norm_mean": pytest.approx(0.95), "other_mean": pytest.approx(0.2)}
    assert summary["layers"][0]["patch_max"] == pytest.approx(summary["layers"][1]["patch_max"] / 2)
    assert summary["register_output_norm"]["mean"] == pytest.approx(30)


def test_unimodal_norms_have_no_threshold():
    values = np.random.default_rng(0).lognormal(2, 0.3, 50_000)
    threshold, details = find_threshold(values)
    assert threshold is None and not details["bimodal"]


def test_a_given_threshold_is_used_as_given():
    images, _ = planted()
    acc = NormSummary(images)
    summary = acc.compute(threshold=11.0)
    direct = np.concatenate([im.patch[-1].ravel() for im in images])
    assert summary["threshold_source"] == "given" and summary["share_high"] == pytest.approx((direct > 11).mean())


def test_norms_on_a_dataset_count_every_patch_token_once(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    backbone = create_backbone("dinov2_reg", weights_file("dinov2_reg"))
    records = load_dataset("voc07", tmp_path).records
    summary, norms = norm_summary(backbone, records, threshold=12.0)
    write_norm_files(tmp_path / "norms", summary, norms, backbone.spec.name, all_layers=True)
    direct = []
    with TokenProbe(backbone.model, 4) as probe:
        for record in records:
            image, _ = load_image(record.path, patch_size=14)
            x = make_batch([torch.from_numpy(image)], 14, backbone.spec.mean, backbone.spec.std, "cpu")
            direct.append(probe(x)[0].patch[-1].numpy().ravel())
    direct = np.concatenate(direct)
    expected_tokens = sum(-(-h // 14) * -(-w // 14) for h, w in (load_image(r.path)[1] for r in records))
    assert summary["n_patch_tokens"] == len(direct) == expected_tokens
    assert summary["share_high"] == pytest.approx(float((direct > 12.0).mean()))
    assert summary["output_norm"]["max"] == pytest.approx(float(direct.max()))
    saved = json.loads((tmp_path / "norms/norms.json").read_text())
    assert saved["n_patch_tokens"] == expected_tokens and len(saved["layers"]) == 12
    for name, shape in [
        ("histogram.png", (420, 720)),
        ("layers.png", (420, 720)),
        ("histogram_layers.png", (420, 720)),
    ]:
        picture = cv2.imread(str(tmp_path / "norms" / name))
        assert picture is not None and picture.shape[:2] == shape, name
    lines = (tmp_path / "norms/layers.csv").read_text().splitlines()
    assert lines[0].startswith("block,patch_mean") and len(lines) == 13


def test_norms_command(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    result = on_voc("norms", tmp_path, weights_file, "--out", str(tmp_path / "n"), "--limit", "2", "--threshold", "5")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "n/norms.json").read_text())
    assert summary["n_images"] == 2 and summary["producer"]["backbone"] == "dinov2_reg_vits14"
    assert f"{summary['n_patch_tokens']:,} patch tokens; threshold 5.00 (given)" in result.output


def test_a_second_mode_close_to_the_main_one_is_not_an_artifact():
    """A dip near the main mode (a sparse histogram of a narrow distribution) is no high-norm mode."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(14.7, 0.2, 400), rng.normal(16.5, 0.05, 60)])
    assert find_threshold(values)[0] is None
    threshold, details = find_threshold(values, min_ratio=1.05)
    assert details["bimodal"] and 15 < threshold < 16.4
