"""`objdisc visualize`: per-image pictures of any method, the gallery (and Chromium rendering it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import invoke, make_voc, refused, tokencut_saliency_run

from objdisc.reports.panels import PANEL_HEIGHT, figure


def on_voc(command: str, root: Path, weights_file, *extra: str):
    """``objdisc <command>`` on the synthetic VOC07 under ``root`` with random-init DINOv2+reg weights."""
    weights = str(weights_file("dinov2_reg"))
    return invoke(command, "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(root), "--weights", weights, *extra)


# --- norms ---------------------------------------------------------------------------------


# --- pictures and gallery -------------------------------------------------------------------


def test_figure_keeps_the_aspect_ratio_and_draws_the_boxes():
    rgb = np.zeros((100, 150, 3), np.uint8)
    mask = np.zeros((8, 11), bool)
    mask[2:5, 3:7] = True
    picture = figure(
        rgb,
        [(42, 28, 98, 70)],
        [(0, 0, 50, 50)],
        [2 * 11 + 3],
        mask[None],
        np.random.rand(8, 11),
        np.random.rand(8, 11),
        14,
        (100, 150),
        "inverse degree",
        "x",
    )
    width = round(150 * PANEL_HEIGHT / 100)
    assert picture.shape == (PANEL_HEIGHT + 60, 3 * width + 16, 3)
    left = picture[60:, :width]
    orange = np.all(left == (0, 159, 230), axis=-1)
    blue = np.all(left == (178, 114, 0), axis=-1)
    assert orange[:, int(42 * PANEL_HEIGHT / 100)].any() and blue[:, 1].any()


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.links.append(attrs["src"])
        if tag == "tr":
            self.rows += 1


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, weights_file) -> tuple[Path, Path, Path]:
    from objdisc.commands.run import RunConfig, run

    root = tmp_path_factory.mktemp("vis")
    make_voc(root)
    runs = []
    for name in ("dinov2", "dinov2_reg"):
        config = RunConfig.flat(name, "voc07", root / name, data_root=root, weights=weights_file(name), workers=0)
        runs.append(run(config).out)
    return root, runs[0], runs[1]


def test_visualize_one_run_lists_every_image_and_links_resolve(two_runs):
    _, run_a, _ = two_runs
    result = invoke("visualize", str(run_a), "--device", "cpu")
    assert result.exit_code == 0, result.output
    page = run_a / "vis/index.html"
    parser = Links()
    parser.feed(page.read_text())
    names = [e["file_name"] for e in json.loads((run_a / "per_image.json").read_text())["images"]]
    assert parser.rows == 1 + len(names)
    for name in names:
        assert name in page.read_text()
    assert len(parser.links) == 2 * len(names)
    for link in parser.links:
        target = page.parent / link
        assert target.is_file(), link
        assert cv2.imread(str(target)) is not None, link
    assert "differ from the run" not in page.read_text()  # the redraw reproduced every box of the run


def test_visualize_only_misses(two_runs):
    _, run_a, _ = two_runs
    images = json.loads((run_a / "per_image.json").read_text())["images"]
    misses = [e["file_name"] for e in images if not e["corloc"]["hit"]]
    if not misses:
        pytest.fail("the synthetic run has no miss to select; change the fixture")
    out = run_a.parent / "only-misses"
    assert invoke("visualize", str(run_a), "--only", "misses", "--out", str(out)).exit_code == 0
    parser = Links()
    parser.feed((out / "index.html").read_text())
    assert parser.rows == 1 + len(misses)


def test_two_runs_side_by_side(two_runs):
    root, run_a, run_b = two_runs
    out = root / "compare"
    result = invoke("visualize", str(run_a), str(run_b), "--out", str(out), "--limit", "3")
    assert result.exit_code == 0, result.output
    text = (out / "index.html").read_text()
    assert "IoU dinov2_reg minus dinov2" in text
    parser = Links()
    parser.feed(text)
    assert parser.rows == 4 and len(parser.links) == 3 * 2 * 2
    assert all((out / link).is_file() for link in parser.links)
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"dinov2", "dinov2_reg"}


def test_run_visualize_draws_the_first_n(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    result = on_voc("run", tmp_path, weights_file, "-o", str(tmp_path / "o"), "--workers", "0", "--visualize", "2")
    assert result.exit_code == 0, result.output
    pictures = sorted((tmp_path / "o/vis/o").glob("*.png"))
    assert len(pictures) == 2
    for picture in pictures:
        image = cv2.imread(str(picture))
        assert image is not None and image.shape[0] == PANEL_HEIGHT + 60


def test_dinoseg_pictures_show_the_heads_cls_attention(tmp_path: Path, weights_file, monkeypatch):
    """visualize draws DINO-seg's map: the CLS attention of its head, the registers paper's map."""
    import torch

    import objdisc.reports.pictures as pictures
    from objdisc.datasets import load_dataset
    from objdisc.images import load_image, make_batch
    from objdisc.methods import DinoSeg
    from objdisc.models.backbones import create_backbone
    from objdisc.models.feature_spec import FeatureSpec
    from objdisc.models.features import FeatureExtractor

    make_voc(tmp_path)
    result = on_voc("run", tmp_path, weights_file, "-o", str(tmp_path / "o"), "--workers", "0", "--method", "dinoseg")
    assert result.exit_code == 0, result.output
    drawn = []
    real = pictures.figure
    monkeypatch.setattr(pictures, "figure", lambda *a: drawn.append(a) or real(*a))
    assert invoke("visualize", str(tmp_path / "o"), "--limit", "1").exit_code == 0
    (args,) = drawn
    seeds, score_map, label = args[3], args[5], args[9]
    assert label == DinoSeg.map_label and seeds == [-1]
    backbone = create_backbone("dinov2_reg", weights_file("dinov2_reg"))
    image, _ = load_image(load_dataset("voc07", tmp_path).records[0].path)
    x = make_batch([torch.from_numpy(image)], 14, backbone.spec.mean, backbone.spec.std)
    with FeatureExtractor(backbone.model, [FeatureSpec("attn")]) as extract, torch.no_grad():
        attention = extract(x)[0, :, 4].reshape(x.shape[2] // 14, x.shape[3] // 14)
    np.testing.assert_allclose(score_map, attention.numpy(), rtol=1e-5, atol=1e-7)
    assert "differ from the run" not in (tmp_path / "o/vis/index.html").read_text()


@pytest.mark.parametrize("method", ["maskcut", "promerge"])
def test_many_object_pictures_are_remade_as_the_run_made_them(
    tmp_path: Path, weights_file, two_images, caplog, method: str
):
    """visualize gives MaskCut and ProMerge their own input size and pixel chain (CRF included):
    the boxes it recomputes are the run's, for every image."""
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", two_images]
    extra = ["--stride", "1"] if method == "promerge" else []
    result = invoke(*args, "--method", method, *extra, "--fixed-size", "64", "--workers", "0", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "o" / "per_image.json").read_text())["images"]
    assert sum(len(entry["objects"]) for entry in runs) >= 2
    assert invoke("visualize", str(tmp_path / "o")).exit_code == 0
    assert "differ from the run" not in (tmp_path / "o/vis/index.html").read_text()
    assert "differ from the run" not in caplog.text


def test_saliency_pictures_show_mask_refined_mask_and_ground_truth(tmp_path: Path, weights_file, monkeypatch, caplog):
    import objdisc.reports.pictures as pictures
    from objdisc.evaluation.saliency import read_mask

    truths = tokencut_saliency_run(weights_file("dino"), tmp_path, n=2)
    drawn = []
    real = pictures.figure
    monkeypatch.setattr(pictures, "figure", lambda *a: drawn.append(a) or real(*a))
    assert invoke("visualize", str(tmp_path / "o")).exit_code == 0
    assert len(drawn) == 2 and "differ from the run" not in caplog.text  # TokenCut's input size, redone
    extra = drawn[0][11]
    labels = [label for _, label in extra]
    assert labels == ["mask", "refined mask (bilateral solver)", "solver output (soft, scored)", "ground truth"]
    assert (extra[3][0] == truths[0]).all()
    assert (extra[1][0] > 0.5).tolist() == (read_mask(tmp_path / "o" / "masks" / "im00.png")).tolist()
    image = cv2.imread(str(next((tmp_path / "o" / "vis").glob("*/im00.png"))))
    assert image.shape[1] > 4 * PANEL_HEIGHT * 84 / 70  # seven panels side by side


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
@pytest.mark.slow
def test_chromium_renders_the_gallery_without_console_errors(two_runs, tmp_path: Path):
    root, run_a, run_b = two_runs
    out = root / "chromium"
    assert invoke("visualize", str(run_a), str(run_b), "--out", str(out)).exit_code == 0
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=3000",
    ]  # fmt: skip
    done = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", (out / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    n_images = len(json.loads((run_a / "per_image.json").read_text())["images"])
    # the inline script ran to its end (it sorts the table, then marks the body)
    assert re.search(rf'<body[^>]*data-ready="{n_images}"', done.stdout), done.stdout[:500]
    assert 'aria-sort="ascending"' in done.stdout
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []


@pytest.mark.slow
def test_visualize_draws_the_others_when_an_image_is_gone_and_takes_moved_weights(tmp_path: Path, weights_file):
    from objdisc.commands.run import RunConfig, run

    make_voc(tmp_path / "data")
    moved = tmp_path / "w.safetensors"
    shutil.copy(weights_file("dinov2_reg"), moved)
    data = tmp_path / "data"
    config = RunConfig.flat("dinov2_reg", "voc07", tmp_path / "r", data_root=data, weights=moved, workers=0)
    run(config)
    gone = tmp_path / "data/VOCdevkit/VOC2007/JPEGImages/000007.jpg"
    gone.unlink()
    elsewhere = tmp_path / "elsewhere.safetensors"
    moved.rename(elsewhere)
    message = refused(invoke("visualize", tmp_path / "r"), str(moved), "pass visualize --weights FILE")
    assert "is gone" in message
    wrong = tmp_path / "other.safetensors"
    shutil.copy(weights_file("dinov2"), wrong)
    refused(invoke("visualize", tmp_path / "r", "--weights", wrong), "none of --weights", "is the run's weights file")
    result = invoke("visualize", tmp_path / "r", "--weights", wrong, "--weights", elsewhere)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r/vis/index.html").read_text()
    assert "missing" in page and "000007.jpg" in page and str(gone) in page
    assert len(list((tmp_path / "r/vis/r").glob("*.png"))) == 3
