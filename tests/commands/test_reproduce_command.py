"""objdisc reproduce: the registers paper's Table 3, every cell a parseable run, measured beside published."""

from __future__ import annotations

import shlex
from pathlib import Path

from conftest import fake_run, invoke, refused

from objdisc.cli import cli
from objdisc.commands.reproduce import ReproduceConfig, cell_folder, commands, run, side_by_side
from objdisc.models.specs import get_spec
from objdisc.reports.paper_tables import TABLES


def test_the_dry_run_says_what_it_downloads_and_prints_parseable_runs(tmp_path: Path):
    result = invoke("reproduce", "--table", "registers-3", "--dry-run", "--data-root", tmp_path, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "Table 3" in result.output and "downloads: VOC2007" in result.output and "time:" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("objdisc run")]
    cells = set()
    for line in lines:
        argv = shlex.split(line)
        ctx = cli.commands["run"].make_context("run", argv[2:])  # every option exists and parses
        get_spec(ctx.params["backbone"])
        cells.add((ctx.params["backbone"], ctx.params["features"], ctx.params["dataset"]))
    # every released row of the table on each of its datasets: DeiT-III and OpenCLIP on values
    assert cells == {
        (b, f, d)
        for b, f in (("deit3_vitb16", "v"), ("openclip_vitb16", "v"), ("dinov2_vitl14", "k"), ("dinov2_reg_vitl14", "k"))  # noqa: E501
        for d in ("voc07", "voc12", "coco20k")
    }


def test_measured_beside_published_with_unreleased_rows_said(tmp_path: Path):
    config = ReproduceConfig("registers-3", tmp_path)
    table = TABLES["registers-3"]
    l14, l14reg = table.rows[4], table.rows[5]
    fake_run(cell_folder(tmp_path, l14, "voc07"), "dinov2_vitl14", "voc07", 36.0)
    fake_run(cell_folder(tmp_path, l14reg, "voc07"), "dinov2_reg_vitl14", "voc07", 54.1)

    ran = []
    text = run(config, echo=lambda s: None, run_cell=lambda cmd: ran.append(cmd) or 0)
    assert len(ran) == len(commands(config)) == 12
    assert "| DINOv2 ViT-L/14 | dinov2_vitl14 | 36.0 / 35.3 | 40.2 | 26.9 |" in text
    assert "| DINOv2 ViT-L/14 + reg | dinov2_reg_vitl14 | 54.1 / 55.4 | 60.0 | 42.0 |" in text
    assert "| DeiT-III ViT-B/16 + reg (values) | -- (weights with registers not released: not run) |" in text
    assert text == side_by_side(config, {("dinov2_vitl14", "voc07"): 36.0, ("dinov2_reg_vitl14", "voc07"): 54.1})


def test_a_failed_cell_is_reported_and_the_others_go_on(tmp_path: Path):
    codes = iter([1, 0] * 6)
    text = run(ReproduceConfig("registers-3", tmp_path), echo=lambda s: None, run_cell=lambda cmd: next(codes))
    assert text.count("failed: objdisc run") == 6


def test_each_cell_runs_in_its_own_process_of_this_python(tmp_path: Path, monkeypatch):
    import subprocess
    import sys

    calls = []
    done = subprocess.CompletedProcess
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv) or done(argv, 0))
    text = run(ReproduceConfig("registers-3", tmp_path, limit=2), progress=False, echo=lambda s: None)
    assert "failed" not in text and len(calls) == 12
    assert all(c[:3] == [sys.executable, "-m", "objdisc"] and c[3] == "run" and c[-1] == "--no-progress" for c in calls)
    assert all(c[c.index("--limit") + 1] == "2" for c in calls)


def test_an_unknown_table_is_refused():
    refused(invoke("reproduce", "--table", "registers-9", "--dry-run"), "--table registers-9: unknown", "registers-3")


def test_the_command_exits_1_after_the_table_when_a_cell_failed(tmp_path: Path, monkeypatch):
    import objdisc.commands.reproduce as reproduce

    codes = iter([0] * 11 + [1])
    monkeypatch.setattr(reproduce, "run_in_process", lambda cmd: next(codes))
    result = invoke("reproduce", "--table", "registers-3", "-o", tmp_path)
    assert result.exit_code == 1
    assert result.output.count("failed: objdisc run") == 1 and "| DINOv2 ViT-L/14 + reg |" in result.output
