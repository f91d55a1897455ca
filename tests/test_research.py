"""Issue 4's toolkit end to end: feature options, TokenCut, the cache, sweep, eval, tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_voc

import objdisc.models.backbones as backbones_module
from objdisc.cli import cli
from objdisc.datasets import load_dataset
from objdisc.engine.discover import discover
from objdisc.engine.feature_cache import FeatureCache
from objdisc.engine.images import load_image, make_batch
from objdisc.engine.runner import RunConfig, run
from objdisc.methods import Lost, TokenCut
from objdisc.methods.lost import lost
from objdisc.models.backbones import create_backbone
from objdisc.models.features import FeatureExtractor, FeatureSpec
from objdisc.reports.table import build_rows, read_run, render


@pytest.fixture(scope="module")
def backbone(weights_file):
    return create_backbone("dinov2_reg", weights_file("dinov2_reg"))


def reference_boxes(backbone, records, spec: FeatureSpec, gram_bias: float = 0.0) -> dict[int, tuple]:
    """Image by image: decode, one forward, features of ``spec``, plain ``lost()``."""
    out = {}
    with FeatureExtractor(backbone.model, [spec]) as extractor, torch.no_grad():
        for record in records:
            image, _ = load_image(record.path, patch_size=14)
            x = make_batch([torch.from_numpy(image)], 14, backbone.spec.mean, backbone.spec.std, "cpu")
            grid = (x.shape[-2] // 14, x.shape[-1] // 14)
            out[record.image_id] = lost(extractor(x)[0], grid, 14, image.shape[:2], gram_bias=gram_bias).box
    return out


@pytest.mark.parametrize(
    ("spec", "gram_bias"),
    [(FeatureSpec("k", -1), 0.0), (FeatureSpec("q", -1), 0.0), (FeatureSpec("v", -2), 0.0), (FeatureSpec("k", 3), 2.5)],
)
def test_each_feature_option_gives_lost_on_exactly_those_features(backbone, tmp_path: Path, spec, gram_bias):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records
    got = {
        r.record.image_id: r.found.box
        for r in discover(backbone, records, features=spec, method=Lost(100, gram_bias), workers=0)
    }
    assert got == reference_boxes(backbone, records, spec, gram_bias)


def test_gram_bias_changes_the_degrees_it_should(backbone, tmp_path: Path):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records[:1]
    plain = next(iter(discover(backbone, records, workers=0))).found
    biased = next(iter(discover(backbone, records, method=Lost(100, 1e9), workers=0))).found
    # A bias above every affinity leaves no positive pair: every degree is 0, the seed is patch 0.
    assert plain.score_map.max() > 0 and biased.score_map.max() == 0 and biased.seed == 0


def voc_run(tmp_path: Path, out: str, **options) -> RunConfig:
    return RunConfig("dinov2_reg", "voc07", tmp_path / out, data_root=tmp_path, workers=0, **options)


def predictions(out: Path) -> list:
    return json.loads((out / "predictions.json").read_text())


def test_cached_rerun_skips_the_model_and_gives_identical_boxes(backbone, tmp_path, monkeypatch, weights_file):
    make_voc(tmp_path)
    cache = tmp_path / "cache"
    weights = weights_file("dinov2_reg")
    first = run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == first.metrics["n_images"] == 4

    def never(*args, **kwargs):
        raise AssertionError("the backbone was built on a cached run")

    monkeypatch.setattr("objdisc.engine.runner.create_backbone", never)
    calls = []
    handle = backbone.model.register_forward_pre_hook(lambda *a: calls.append(1))
    again = run(voc_run(tmp_path, "b", cache=cache, weights=weights))
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert again.metrics["corloc"] == first.metrics["corloc"]
    # other LOST / TokenCut options read the same cache
    run(voc_run(tmp_path, "c", cache=cache, weights=weights, k_patches=3, gram_bias=0.5))
    run(voc_run(tmp_path, "d", cache=cache, weights=weights, method="tokencut"))
    handle.remove()
    assert calls == []
    tokencut = json.loads((tmp_path / "d/metrics.json").read_text())
    assert tokencut["producer"]["discovery"] == {
        "features": "k",
        "layer": -1,
        "method": "tokencut",
        "tau": 0.2,
        "eps": 1e-05,
    }


def test_changed_settings_miss_the_cache(backbone, tmp_path: Path, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    cache = tmp_path / "cache"
    run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    record = load_dataset("voc07", tmp_path).records[0]
    identity = {
        "timm_model": backbone.spec.timm_name,
        "weights_sha256": backbone.weights.sha256,
        "precision": "fp32",
        "max_side": None,
        "model_kwargs": {},
    }
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is not None
    for changed in ({"precision": "bf16"}, {"weights_sha256": "0" * 64}, {"max_side": 64}):
        assert FeatureCache(cache, {**identity, **changed}).get(record.path, FeatureSpec()) is None
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec("q")) is None
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec("k", -2)) is None
    # an entry copied under another image's name is refused by its metadata
    good = FeatureCache(cache, identity)
    other = load_dataset("voc07", tmp_path).records[1]
    good.path(other.path, FeatureSpec()).write_bytes(good.path(record.path, FeatureSpec()).read_bytes())
    assert good.get(other.path, FeatureSpec()) is None
    # a changed image is a miss: its bytes are the key
    record.path.write_bytes(record.path.read_bytes() + b"\0")
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is None


def test_a_torn_cache_entry_goes_back_to_the_model(backbone, tmp_path: Path, monkeypatch, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    cache = tmp_path / "cache"
    run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    torn = sorted(cache.rglob("*.safetensors"))[1]
    torn.write_bytes(torn.read_bytes()[:100])
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.engine.runner.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
    result = run(voc_run(tmp_path, "b", cache=cache, weights=weights))
    assert built == [1] and result.metrics["n_skipped"] == 0
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert len(torn.read_bytes()) > 100  # rewritten whole


def test_a_run_with_another_layer_builds_the_model(backbone, tmp_path: Path, monkeypatch, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    run(voc_run(tmp_path, "a", cache=tmp_path / "cache", weights=weights), backbone)
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.engine.runner.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
    run(voc_run(tmp_path, "b", cache=tmp_path / "cache", weights=weights, layer=-2))
    assert built == [1]


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_sweep_makes_one_run_per_point_with_one_forward_pass(tmp_path: Path, weights_file, monkeypatch):
    make_voc(tmp_path)
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.engine.runner.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
    out = tmp_path / "sweep"
    result = invoke(
        "sweep", "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(tmp_path), "--weights",
        str(weights_file("dinov2_reg")), "--workers", "0", "--out", str(out),
        "--features", "k,q", "--layer", "-1,-2", "--gram-bias", "0,0.5", "--method", "lost,tokencut",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {f"lost_{f}_l{layer}_gb{b}" for f in "kq" for layer in (-1, -2) for b in ("0", "0.5")}
    expected |= {f"tokencut_{f}_l{layer}" for f in "kq" for layer in (-1, -2)}
    runs = {p.name for p in out.iterdir() if (p / "metrics.json").exists()}
    assert runs == expected
    assert built == [1]  # the first point filled the cache for every (features, layer)
    summary = json.loads((out / "summary.json").read_text())["points"]
    assert len(summary) == 12
    for row in summary:
        metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["corloc"] == metrics["corloc"]
        options = json.loads((out / row["run"] / "run.json").read_text())["options"]
        assert (options["method"], options["features"], options["layer"]) == (
            row["method"],
            row["features"],
            row["layer"],
        )
    assert len((out / "summary.csv").read_text().splitlines()) == 13
    assert (out / "summary.md").exists()


def test_sweep_refuses_a_bad_grid_before_running(tmp_path: Path):
    result = invoke(
        "sweep",
        "-b",
        "dinov2_reg",
        "-d",
        "voc07",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "s"),
        "--features",
        "k,x",
    )
    assert result.exit_code != 0 and "unknown features 'x'" in result.output


def write_voc_gt(tmp_path: Path) -> dict:
    """The synthetic VOC set, with its GT boxes by image id (xyxy, LOST's convention)."""
    make_voc(tmp_path)
    return {r.image_id: r.gt_boxes for r in load_dataset("voc07", tmp_path).records}


def test_eval_scores_a_hand_written_predictions_file(tmp_path: Path):
    gt = write_voc_gt(tmp_path)
    ids = sorted(gt)
    assert len(ids) == 4
    x1, y1, x2, y2 = (float(v) for v in gt[ids[0]][0])
    preds = [
        # image 0: a low-score miss and a high-score exact hit -> hit (the best-scoring box counts)
        {"image_id": ids[0], "bbox": [0, 0, 1, 1], "score": 0.1},
        {"image_id": ids[0], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9},
        # image 1: a high-score miss beats a low-score hit -> miss
        {"image_id": ids[1], "bbox": [0, 0, 1, 1], "score": 0.8},
        {"image_id": ids[1], "bbox": _xywh(gt[ids[1]][0]), "score": 0.2},
        # image 2: a box covering the GT with IoU exactly 0.5 -> hit (threshold is >=)
        {"image_id": ids[2], "bbox": _half_iou_box(gt[ids[2]][0]), "score": 1},
        # image 3: no prediction -> miss; and one prediction for an unknown image
        {"image_id": 999999, "bbox": [0, 0, 5, 5], "score": 1},
    ]
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    result = invoke(
        "eval",
        "-p",
        str(tmp_path / "preds.json"),
        "-d",
        "voc07",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "ev"),
        "--name",
        "other-tool",
    )
    assert result.exit_code == 0, result.output
    assert (
        "CorLoc 50.00%  (2/4 hits, 1 images without a prediction, 1 predictions for images not scored)" in result.output
    )
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert metrics["corloc"] == 50.0 and metrics["producer"]["backbone"] == "other-tool"


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _half_iou_box(box: np.ndarray) -> list[float]:
    """A box of twice the GT's width, same height, GT on its left: IoU = 0.5 exactly."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, 2 * (x2 - x1), y2 - y1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"a": 1}', "expected a list of COCO results"),
        ('[{"image_id": 1}]', "entry 0: needs 'image_id' and 'bbox'"),
        ('[{"image_id": 1, "bbox": [0, 0, 1]}]', "entry 0: bbox must be 4 finite numbers"),
        ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]', "entry 0: score must be a finite number"),
    ],
)
def test_eval_names_the_file_and_entry_of_bad_predictions(tmp_path: Path, content: str, message: str):
    write_voc_gt(tmp_path)
    (tmp_path / "p.json").write_text(content)
    result = invoke("eval", "-p", str(tmp_path / "p.json"), "-d", "voc07", "--data-root", str(tmp_path))
    assert result.exit_code != 0 and message in result.output and "p.json" in result.output


def fake_run(
    folder: Path, backbone: str, dataset: str, corloc: float, speed: float = 10.0, ttr: dict | None = None, **options
) -> Path:
    """A finished run folder as `objdisc run` writes it (only the fields tables read)."""
    folder.mkdir(parents=True)
    discovery = {"features": "k", "layer": -1, "method": "lost", "k_patches": 100, "gram_bias": 0.0, **options}
    producer = {"backbone": backbone, "discovery": discovery, **({"test_time_registers": ttr} if ttr else {})}
    (folder / "metrics.json").write_text(
        json.dumps({"producer": producer, "dataset": f"{dataset}/trainval", "corloc": corloc, "images_per_s": speed})
    )
    (folder / "run.json").write_text(json.dumps({"producer": producer, "status": "finished", "options": discovery}))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        fake_run(tmp_path / "1", "dinov2_vitl14", "voc07", 35.3),
        fake_run(tmp_path / "2", "dinov2_vitl14", "voc12", 40.2),
        fake_run(tmp_path / "3", "dinov2_reg_vitl14", "voc07", 55.4, speed=30.0),
        fake_run(tmp_path / "4", "dinov2_reg_vitl14", "voc12", 60.0, speed=20.0),
        fake_run(tmp_path / "5", "dinov2_reg_vitl14", "coco20k", 42.0, speed=40.0),
        fake_run(tmp_path / "6", "dino_vits16", "voc07", 61.9, features="v", layer=-2, gram_bias=0.1),
    ]


def test_markdown_table_matches_the_run_files(runs):
    result = invoke("table", *map(str, runs), "--speed")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "| backbone | VOC07 | VOC12 | COCO20k | +reg | images/s |"
    assert lines[2] == "| dinov2_vitl14 | 35.3 | 40.2 |  |  | 10.0 |"
    assert lines[3] == "| dinov2_reg_vitl14 | 55.4 | **60.0** | **42.0** | +20.1 / +19.8 / -- | 30.0 |"
    assert lines[4] == "| dino_vits16 (features=v, layer=-2, gram_bias=0.1) | **61.9** |  |  |  | 10.0 |"


def test_test_time_register_rows_get_a_ttr_column(runs, tmp_path: Path):
    from objdisc.registers.test_time import RegisterNeurons, load_register_neurons

    builtin = load_register_neurons("builtin", "dinov2_vitl14").describe()
    found = RegisterNeurons(((14, 3), (15, 8)), "neurons.json").describe()
    more = [
        fake_run(tmp_path / "7", "dinov2_vitl14", "voc07", 50.1, ttr=builtin),
        fake_run(tmp_path / "8", "dinov2_vitl14", "voc12", 52.0, ttr=builtin),
        fake_run(tmp_path / "9", "dinov2_vitl14", "voc07", 45.0, ttr=found),
    ]
    result = invoke("table", *map(str, runs + more))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "| backbone | VOC07 | VOC12 | COCO20k | +reg | +ttr |"
    assert lines[2] == "| dinov2_vitl14 | 35.3 | 40.2 |  |  |  |"
    assert lines[5] == "| dinov2_vitl14 +ttr:builtin | 50.1 | 52.0 |  |  | +14.8 / +11.8 / -- |"
    sha = RegisterNeurons.from_record(found).sha256[:6]
    assert lines[6] == f"| dinov2_vitl14 +ttr:2n {sha} | 45.0 |  |  |  | +9.7 / -- / -- |"


def test_csv_table_round_trips(runs):
    import csv
    import io

    text = invoke("table", *map(str, runs), "--format", "csv").output
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["backbone"] for r in rows] == [
        "dinov2_vitl14",
        "dinov2_reg_vitl14",
        "dino_vits16 (features=v, layer=-2, gram_bias=0.1)",
    ]
    assert float(rows[1]["COCO20k"]) == 42.0 and rows[0]["COCO20k"] == ""


def test_latex_table_is_booktabs_with_the_best_per_column_bold(runs):
    text = invoke("table", *map(str, runs), "--format", "latex").output
    lines = text.strip().splitlines()
    spec = re.fullmatch(r"\\begin\{tabular\}\{([lrc]+)\}", lines[0]).group(1)
    assert (
        lines[1] == r"\toprule"
        and lines[3] == r"\midrule"
        and lines[-2] == r"\bottomrule"
        and lines[-1] == r"\end{tabular}"
    )
    body = [lines[2], *lines[4:-2]]
    for line in body:  # every row has exactly as many cells as the column spec, and ends the row
        assert line.endswith(r" \\") and len(line[:-3].split(" & ")) == len(spec)
    assert r"\textbf{61.9}" in text and r"\textbf{60.0}" in text and r"\textbf{42.0}" in text
    assert r"\textbf{55.4}" not in text
    assert r"dinov2\_reg\_vitl14" in text and "$+20.1$" in text
    assert text.count("{") == text.count("}") and text.count("$") % 2 == 0


def test_table_refuses_an_unfinished_run(tmp_path: Path):
    folder = fake_run(tmp_path / "r", "dino_vits16", "voc07", 1.0)
    (folder / "run.json").write_text(json.dumps({"status": "running"}))
    result = invoke("table", str(folder))
    assert result.exit_code != 0 and "not finished" in result.output


def test_table_rows_from_real_runs(backbone, tmp_path: Path):
    make_voc(tmp_path)
    a = run(voc_run(tmp_path, "a"), backbone)
    b = run(voc_run(tmp_path, "b", method="tokencut"), backbone)
    rows, datasets = build_rows([read_run(a.out), read_run(b.out)])
    tag = f"[local {backbone.weights.sha256[:8]}]"  # not the pretrained model: the label says so
    assert datasets == ["voc07"] and [r.label for r in rows] == [
        f"dinov2_reg_vits14 {tag}",
        f"dinov2_reg_vits14 {tag} (method=tokencut)",
    ]
    assert rows[0].cells["voc07"] == a.metrics["corloc"] and rows[1].cells["voc07"] == b.metrics["corloc"]
    assert "dinov2_reg_vits14" in render(rows, datasets, "md")


def test_tokencut_runs_through_the_engine(backbone, tmp_path: Path):
    make_voc(tmp_path)
    records = load_dataset("voc07", tmp_path).records
    results = list(discover(backbone, records, method=TokenCut(), workers=0))
    assert len(results) == 4 and all(r.found is not None for r in results)
    for r in results:
        assert r.found.mask.flat[r.found.seed]  # the seed is in its own component


def load_reproduce():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_commands_cover_the_matrix_and_parse(capsys):
    reproduce = load_reproduce()
    assert reproduce.main(["--dry-run", "--data-root", "/data", "--out", "/runs"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # eight backbones with LOST, DINO ViT-S/16 with TokenCut, DINOv2 ViT-L/14 with test-time registers
    assert len(lines) == (8 + 1 + 1) * 3
    import shlex

    from objdisc.models.backbones import get_spec

    cells, ttr = set(), set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["objdisc", "run"]
        ctx = cli.commands["run"].make_context("run", argv[2:])  # every option exists and parses
        get_spec(ctx.params["backbone"])
        cells.add((ctx.params["backbone"], ctx.params["method"], ctx.params["dataset"]))
        if ctx.params["test_time_registers"] is not None:
            assert ctx.params["test_time_registers"] == "builtin" and ctx.params["backbone"] == "dinov2_vitl14"
            ttr.add(ctx.params["dataset"])
    assert set(reproduce.PUBLISHED) <= cells
    assert ttr == {"voc07", "voc12", "coco20k"}


def test_reproduce_comparison_puts_measured_next_to_published(tmp_path: Path):
    reproduce = load_reproduce()
    fake_run(tmp_path / "dino_vits16-voc07", "dino_vits16", "voc07", 60.5)
    fake_run(tmp_path / "dino_vits16-tokencut-voc07", "dino_vits16", "voc07", 67.0, method="tokencut")
    cells = [("dino_vits16", "lost", "voc07"), ("dino_vits16", "lost", "voc12"), ("dino_vits16", "tokencut", "voc07")]
    text = reproduce.comparison(tmp_path, cells)
    assert "| dino_vits16 | lost | voc07 | 60.5 | 61.9 | LOST README |" in text
    assert "| dino_vits16 | lost | voc12 |  | 64.0 | LOST README |" in text
    assert "| dino_vits16 | tokencut | voc07 | 67.0 | 68.8 | TokenCut paper |" in text
