"""`objdisc` end to end through click's CliRunner, one test per dataset kind."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_coco, make_coco20k, make_voc, write_image
from pycocotools.coco import COCO

from objdisc.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def check_outputs(out: Path, n_images: int, scored: bool = True) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == n_images
    assert ("corloc" in metrics["metrics"]) == scored
    gt = COCO(str(out / "gt.json"))
    predictions = gt.loadRes(str(out / "predictions.json"))
    assert len(predictions.getImgIds()) == metrics["n_objects"]
    return metrics


def test_backbones_table():
    result = invoke("backbones")
    assert result.exit_code == 0
    for name in ("dino_vits16", "dinov2_vitg14", "dinov2_reg_vits14", "vit_small_patch14_reg4_dinov2.lvd142m"):
        assert name in result.output
    assert "dinov2_reg -> dinov2_reg_vits14" in result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert rows["dinov3_vits16"][2:5] == ["16", "4", "yes"]  # patch, registers, CLS
    assert rows["timm_reg_vitm16"][2:5] == ["16", "4", "no"]
    assert rows["dinov2_vits14"][2:5] == ["14", "0", "yes"]


def run_on(backbone: str, dataset: str, weights_file, out: Path, *extra: str):
    """`objdisc run` with a random-init local weights file, no decode workers."""
    weights = str(weights_file(backbone))
    return invoke("run", "-b", backbone, "-d", dataset, "--weights", weights, "-o", str(out), "--workers", "0", *extra)


@pytest.mark.parametrize("kind", ["voc07", "voc12"])
def test_run_voc(tmp_path: Path, weights_file, kind: str):
    make_voc(tmp_path, "2007" if kind == "voc07" else "2012")
    result = run_on("dinov2_reg", kind, weights_file, tmp_path / "out", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "CorLoc" in result.output and "dinov2_reg_vits14" in result.output
    check_outputs(tmp_path / "out", 4)


def test_run_voc_no_hard(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    extra = ("--data-root", str(tmp_path), "--no-hard", "--k-patches", "5")
    result = run_on("dino", "voc07", weights_file, tmp_path / "out", *extra)
    assert result.exit_code == 0, result.output
    assert check_outputs(tmp_path / "out", 3)["n_excluded"] == 1


def test_run_coco20k(tmp_path: Path, weights_file):
    make_coco20k(tmp_path, [9, 25, 30], listed=[25, 9])
    out = tmp_path / "out"
    result = run_on("dinov2", "coco20k", weights_file, out, "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    check_outputs(out, 2)
    assert [p["image_id"] for p in json.loads((out / "predictions.json").read_text())] == [25, 9]


def test_run_coco(tmp_path: Path, weights_file):
    images, annotations, _ = make_coco(tmp_path, [9, 25, 30, 34])
    extra = ("--images", str(images), "--annotations", str(annotations))
    result = run_on("dinov2", "coco", weights_file, tmp_path / "out", *extra)
    assert result.exit_code == 0, result.output
    check_outputs(tmp_path / "out", 4)


def test_run_folder_gives_boxes_only(tmp_path: Path, weights_file):
    for i, hw in enumerate([(40, 50), (33, 71)]):
        write_image(tmp_path / "imgs" / f"photo{i}.png", hw, (5, 5, 20, 20), seed=i)
    out = tmp_path / "out"
    result = run_on("dinov2_reg", "folder", weights_file, out, "--images", str(tmp_path / "imgs"))
    assert result.exit_code == 0, result.output
    assert "CorLoc" not in result.output
    check_outputs(out, 2, scored=False)
    gt = json.loads((out / "gt.json").read_text())
    sizes = [(i["id"], i["file_name"], i["height"], i["width"]) for i in gt["images"]]
    assert sizes == [(1, "photo0.png", 40, 50), (2, "photo1.png", 33, 71)]
    assert gt["annotations"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-b", "dinov2", "-d", "voc07", "--data-root", "/nonexistent/data"], "/nonexistent/data/VOCdevkit/VOC2007"),
        (["-b", "dinov2", "-d", "coco"], "--dataset coco needs --images DIR (the image folder)"),
        (["-b", "dinov9", "-d", "folder", "--images", "."], "unknown backbone 'dinov9'"),
        (
            ["-b", "dino", "-d", "folder", "--images", ".", "--weights", "/nope.pth"],
            "/nope.pth: weights file not found",
        ),
        (["-b", "dino", "-d", "folder", "--images", ".", "--method", "tokencut", "--gram-bias", "1"], "--gram-bias is"),
        (["-b", "dino", "-d", "folder", "--images", ".", "--tau", "0.3"], "--tau is an option of tokencut"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("OBJDISC_DATA_ROOT", raising=False)
    write_image(tmp_path / "a.jpg", (20, 20), (2, 2, 8, 8))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", *args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_run_feature_options_reach_the_run_files(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    extra = ["--features", "q", "--layer", "-2", "--gram-bias", "0.5", "--k-patches", "7"]
    result = run_on("dinov2_reg", "voc07", weights_file, tmp_path / "o", "--data-root", str(tmp_path), *extra)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "o/run.json").read_text())
    options = info["options"]
    assert (options["features"], options["layer"]) == ("q", -2)
    assert options["method_options"] == {"k_patches": 7, "gram_bias": 0.5}
    discovery = json.loads((tmp_path / "o/metrics.json").read_text())["producer"]["discovery"]
    assert discovery == {"features": "q", "layer": -2, "method": "lost", "k_patches": 7, "gram_bias": 0.5}


def test_cli_precisions_are_the_pipelines():
    from objdisc import cli as cli_module
    from objdisc.utils.device import PRECISIONS

    assert tuple(PRECISIONS) == cli_module.PRECISIONS


def test_help_and_backbones_do_not_import_torch():
    script = textwrap.dedent("""
        import sys
        from click.testing import CliRunner
        from objdisc.cli import cli
        assert CliRunner().invoke(cli, ["backbones"]).exit_code == 0
        assert CliRunner().invoke(cli, ["run", "--help"]).exit_code == 0
        for command in ("sweep", "eval", "table"):
            assert CliRunner().invoke(cli, [command, "--help"]).exit_code == 0
        # tables, scoring, neuron lists read JSON only
        import objdisc.reports.table, objdisc.evaluation.score_file, objdisc.models.test_time_registers
        assert CliRunner().invoke(cli, ["data", "status", "--data-root", "."]).exit_code == 0
        print("torch" in sys.modules, "timm" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "objdisc", "--help"], capture_output=True, text=True, check=True)
    assert "backbones" in result.stdout and "run" in result.stdout


def test_every_public_name_resolves():
    import objdisc

    for name in objdisc.__all__:
        assert getattr(objdisc, name) is not None
    assert set(objdisc.__all__) == {*objdisc._EXPORTS, "__version__"}


def test_from_objdisc_import_lost_is_the_function_after_every_module_loaded():
    import importlib
    import pkgutil

    import objdisc

    for info in pkgutil.walk_packages(objdisc.__path__, "objdisc."):
        if info.name not in ("objdisc.__main__",):
            importlib.import_module(info.name)
    from objdisc import lost

    assert callable(lost) and lost.__name__ == "lost"


def test_the_top_help_names_every_method_and_command():
    from objdisc.methods import METHODS

    text = " ".join(invoke("--help").output.split())  # click wraps lines
    for cls in METHODS.values():
        assert " ".join(cls.title.split(":")[0].split()) in text, cls.name
    for command in ("run", "sweep", "table", "visualize", "reproduce", "train-head", "merge", "submit"):
        assert f" {command} " in text
