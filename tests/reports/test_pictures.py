"""Issue 5: token-norm diagnostics, per-image pictures, the gallery (and Chromium rendering it)."""

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
import torch
from click.testing import CliRunner
from conftest import make_voc

from objdisc.cli import cli
from objdisc.datasets import load_dataset
from objdisc.engine.images import load_image, make_batch
from objdisc.models.backbones import build_model, create_backbone, get_spec
from objdisc.models.token_probe import TokenProbe, neighbour_cosine
from objdisc.registers.norm_diagnostics import ImageNorms, NormSummary, find_threshold, run_norms
from objdisc.reports.panels import PANEL_HEIGHT, figure


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def on_voc(command: str, root: Path, weights_file, *extra: str):
    """``objdisc <command>`` on the synthetic VOC07 under ``root`` with random-init DINOv2+reg weights."""
    weights = str(weights_file("dinov2_reg"))
    return invoke(command, "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(root), "--weights", weights, *extra)


# --- norms ---------------------------------------------------------------------------------


def test_token_probe_splits_cls_registers_and_patches():
    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    x = torch.randn(2, 3, 28, 42)
    blocks = []
    handles = [b.register_forward_hook(lambda m, i, o: blocks.append(o)) for b in model.blocks]
    with torch.no_grad():
        model.forward_features(x)
    for h in handles:
        h.remove()
    with TokenProbe(model, num_registers=4, class_token=True) as probe:
        (norms, _) = probe(x)
    assert norms.patch.shape == (2, 2, 3) and norms.registers.shape == (2, 4) and norms.cls.shape == (2,)
    expected = blocks[-1][0].norm(dim=-1)
    torch.testing.assert_close(norms.cls[-1], expected[0])
    torch.testing.assert_close(norms.registers[-1], expected[1:5])
    torch.testing.assert_close(norms.patch[-1].flatten(), expected[5:])


def test_probe_reads_a_pass_run_by_a_feature_extractor_and_hooks_once():
    from objdisc.models.features import FeatureExtractor, FeatureSpec

    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    x = torch.randn(1, 3, 28, 42)
    hooks = [len(b._forward_hooks) for b in model.blocks]
    with TokenProbe(model, 4) as probe, FeatureExtractor(model, [FeatureSpec()], stop=False) as extractor:
        assert [len(b._forward_hooks) for b in model.blocks] == [n + 1 for n in hooks]
        alone = probe(x)[0]
        with torch.no_grad():
            extractor(x)
        (shared,) = probe.read(x.shape)
        with pytest.raises(RuntimeError, match="exactly one complete forward pass"):
            probe.read(x.shape)  # read consumes the pass
    assert [len(b._forward_hooks) for b in model.blocks] == hooks
    torch.testing.assert_close(shared.patch, alone.patch)
    torch.testing.assert_close(shared.neighbour_cos, alone.neighbour_cos)


def test_gap_model_has_registers_and_no_cls():
    model = build_model(get_spec("timm_reg_vitm16"), depth=1).eval()
    with TokenProbe(model, num_registers=4, class_token=False) as probe:
        (norms,) = probe(torch.randn(1, 3, 32, 48))
    assert norms.registers.shape == (1, 4) and norms.cls.shape == (1, 0) and norms.patch.shape == (1, 2, 3)


def test_neighbour_cosine_by_hand():
    grid = torch.zeros(1, 2, 2, 2)
    grid[0, 0, 0] = torch.tensor([1.0, 0.0])
    grid[0, 0, 1] = torch.tensor([1.0, 0.0])
    grid[0, 1, 0] = torch.tensor([0.0, 1.0])
    grid[0, 1, 1] = torch.tensor([1.0, 1.0])
    cos = neighbour_cosine(grid)[0]
    s = 2**-0.5
    torch.testing.assert_close(cos, torch.tensor([[(1 + 0) / 2, (1 + s) / 2], [(0 + s) / 2, (s + s) / 2]]))


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
    summary = run_norms(backbone, records, tmp_path / "norms", threshold=12.0, all_layers=True)
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


# --- pictures and gallery -------------------------------------------------------------------


def test_figure_keeps_the_aspect_ratio_and_draws_the_boxes():
    rgb = np.zeros((100, 150, 3), np.uint8)
    mask = np.zeros((8, 11), bool)
    mask[2:5, 3:7] = True
    picture = figure(
        rgb,
        (42, 28, 98, 70),
        [(0, 0, 50, 50)],
        2 * 11 + 3,
        mask,
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
    from objdisc.engine.runner import RunConfig, run

    root = tmp_path_factory.mktemp("vis")
    make_voc(root)
    runs = []
    for name in ("dinov2", "dinov2_reg"):
        config = RunConfig(name, "voc07", root / name, data_root=root, weights=weights_file(name), workers=0)
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
    assert "recomputed box" not in page.read_text()  # the redraw reproduced every box of the run


def test_visualize_only_misses(two_runs):
    _, run_a, _ = two_runs
    images = json.loads((run_a / "per_image.json").read_text())["images"]
    misses = [e["file_name"] for e in images if not e["hit"]]
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
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


def test_a_second_mode_close_to_the_main_one_is_not_an_artifact():
    """A dip near the main mode (a sparse histogram of a narrow distribution) is no high-norm mode."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(14.7, 0.2, 400), rng.normal(16.5, 0.05, 60)])
    assert find_threshold(values)[0] is None
    threshold, details = find_threshold(values, min_ratio=1.05)
    assert details["bimodal"] and 15 < threshold < 16.4
