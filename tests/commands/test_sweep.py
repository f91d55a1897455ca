"""``objdisc sweep``: the grid from the methods' own options, one forward pass, the summary, and
a bad grid refused before any point runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import corloc_value, make_coco, make_voc, refused

import objdisc.models.backbones as backbones_module
from objdisc.cli import cli
from objdisc.commands.sweep import SweepPoint, grid
from objdisc.errors import OptionError


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_sweep_makes_one_run_per_point_with_one_forward_pass(tmp_path: Path, weights_file, monkeypatch):
    make_voc(tmp_path)
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.models.backbones.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
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
        assert row["corloc"] == corloc_value(metrics)
        options = json.loads((out / row["run"] / "run.json").read_text())["options"]
        assert (options["method"], options["features"], options["layer"]) == (
            row["method"],
            row["features"],
            row["layer"],
        )
        assert options["method_options"] == ({"gram_bias": row["gram_bias"]} if row["method"] == "lost" else {})
    assert len((out / "summary.csv").read_text().splitlines()) == 13
    import pandas

    frame = pandas.read_csv(out / "summary.csv")  # typed columns, as a researcher reads it
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes["layer"] == "int64" and dtypes["n_images"] == "int64" and dtypes["corloc"] == "float64"
    assert dtypes["gram_bias"] == "float64"  # LOST's option; empty (NaN) on the TokenCut points
    assert pandas.api.types.is_string_dtype(frame["run"]) and pandas.api.types.is_string_dtype(frame["method"])
    assert frame["gram_bias"].isna().sum() == 4 and list(frame["corloc"]) == [row["corloc"] for row in summary]
    table = (out / "summary.md").read_text()
    assert table.startswith("| backbone | VOC07 CorLoc | VOC07 AP50 (box) | VOC07 AR100 (box) |")
    assert "method=tokencut, features=q, layer=-2" in table


def test_the_grid_comes_from_each_methods_own_options():
    points = grid(["lost", "tokencut", "dinoseg"], None, [-1], {"k_patches": [10, 20], "tau": [0.1]})
    assert points == [
        SweepPoint("lost", "k", -1, (("k_patches", 10),)),
        SweepPoint("lost", "k", -1, (("k_patches", 20),)),
        SweepPoint("tokencut", "k", -1, (("tau", 0.1),)),
        SweepPoint("dinoseg", "attn", -1, ()),
    ]
    assert [p.slug for p in points] == ["lost_k_l-1_k10", "lost_k_l-1_k20", "tokencut_k_l-1_tau0.1", "dinoseg_attn_l-1"]
    # asked kinds a method does not read are left out for it; its own kind when none fits is an error
    assert [p.features for p in grid(["lost", "tokencut"], ["k", "v"], [-1])] == ["k", "v", "k", "v"]


@pytest.mark.parametrize(
    ("methods", "features", "layers", "options", "message"),
    [
        ([], None, [-1], {}, "--method: no method given"),
        (["lost"], [], [-1], {}, "--features: no feature kind given"),
        (["lost"], None, [], {}, "--layer: no layer given"),
        (["lost"], None, [-1], {"k_patches": []}, "--k-patches: no value given"),
        (["lost"], None, [-1], {"tau": [0.1]}, "--tau is an option of tokencut, maskcut, promerge, none of which is"),
        (["dinoseg"], ["k"], [-1], {}, "--features k: dinoseg reads attn"),
        (["lost"], None, [-1], {"k_patches": [0]}, "--k-patches must be at least 1"),
        (["ncut"], None, [-1], {}, "unknown method 'ncut'"),
    ],
)
def test_an_empty_or_bad_grid_is_an_error(methods, features, layers, options, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        grid(methods, features, layers, options)


def test_sweep_refuses_a_bad_grid_before_running(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    base = ["sweep", "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(tmp_path), "--workers", "0"]
    result = invoke(*base, "--out", str(tmp_path / "s"), "--features", "k,x")
    refused(result, "unknown features 'x'")
    for flag, value in (("--features", ""), ("--layer", ","), ("--gram-bias", " ")):
        refused(invoke(*base, "--out", str(tmp_path / "e"), flag, value), "the grid would be empty")
    weights = str(weights_file("dinov2_reg"))
    late = invoke(*base, "--weights", weights, "--out", str(tmp_path / "l"), "--layer", "-1,99")
    refused(late, "--layer 99 does not exist in a model of 12 blocks")
    assert not (tmp_path / "s").exists() and not (tmp_path / "e").exists() and not (tmp_path / "l").exists()


def test_sweep_progress_names_the_grid_point(weights_file, tmp_path: Path):
    images, annotations, _ = make_coco(tmp_path / "coco", [11, 12])
    result = invoke(
        "sweep", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
        "--images", str(images), "--annotations", str(annotations), "--out", str(tmp_path / "s"),
        "--workers", "0", "--gram-bias", "0,0.5", "--progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1/2 lost_k_l-1_gb0: 100%" in result.stderr and "2/2 lost_k_l-1_gb0.5: 100%" in result.stderr


def test_a_boolean_option_is_an_axis_and_no_flag_is_its_false(tmp_path: Path, weights_file, two_images):
    base = ["sweep", "-b", "dino", "--weights", str(weights_file("dino")), "-d", "folder", "--images", str(two_images),
            "--workers", "0", "--method", "maskcut", "--fixed-size", "64"]  # fmt: skip
    result = invoke(*base, "--no-crf", "--masks", "1,2", "--out", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    runs = sorted(p.parent for p in (tmp_path / "s").glob("*/run.json"))
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "run.json").read_text())["producer"]["discovery"]["crf"] is False
    import pandas

    frame = pandas.read_csv(tmp_path / "s" / "summary.csv")
    assert str(frame["crf"].dtype) == "bool" and list(frame["masks"]) == [1, 2]
    both = invoke(*base, "--crf", "true", "--no-crf", "--out", str(tmp_path / "t"))
    assert both.exit_code == 2 and "--crf and --no-crf together" in both.output
    assert not (tmp_path / "t").exists()


def test_promerge_sweeps_and_tables_like_every_method(tmp_path: Path, weights_file, coco):
    images, annotations, _ = coco
    result = invoke(
        "sweep", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
        "--images", str(images), "--annotations", str(annotations), "--workers", "0", "--method", "promerge",
        "--fixed-size", "112", "--no-crf", "--stride", "1,2", "--out", str(tmp_path / "s"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = sorted(p.parent for p in (tmp_path / "s").glob("*/run.json"))
    assert [json.loads((r / "run.json").read_text())["producer"]["discovery"]["stride"] for r in runs] == [1, 2]
    table = invoke("table", *map(str, runs))
    assert table.exit_code == 0, table.output
    assert "stride=1" in table.output and "stride=2" in table.output
