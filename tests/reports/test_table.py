"""``objdisc table``: numbers from the metric blocks, labels from the producer, +reg / +ttr
columns, every format; runs of objdisc 0.1 still read; hand-edited numbers refused."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import corloc_value, fake_run, invoke, make_voc, refused

from objdisc.commands.run import RunConfig, run
from objdisc.models.backbones import create_backbone
from objdisc.reports.table import build_rows, read_run, render


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        fake_run(tmp_path / "1", "dinov2_vitl14", "voc07", 35.3),
        fake_run(tmp_path / "2", "dinov2_vitl14", "voc12", 40.2, legacy=True),
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


def test_method_defaults_come_from_the_method(tmp_path: Path):
    folders = [
        fake_run(tmp_path / "a", "dino_vits16", "voc07", 45.8, method="dinoseg", features="attn", head=4),
        fake_run(tmp_path / "b", "dino_vits16", "voc12", 46.2, method="dinoseg", features="attn", head=0),
        fake_run(tmp_path / "c", "dino_vits16", "voc07", 68.8, method="tokencut", tau=0.3),
    ]
    lines = invoke("table", *folders).output.strip().splitlines()
    assert lines[2] == "| dino_vits16 (method=dinoseg) | 45.8 |  |"
    assert lines[3] == "| dino_vits16 (method=dinoseg, head=0) |  | **46.2** |"
    assert lines[4] == "| dino_vits16 (method=tokencut, tau=0.3) | **68.8** |  |"


def test_test_time_register_rows_get_a_ttr_column(runs, tmp_path: Path):
    from objdisc.models.test_time_registers import RegisterNeurons, load_register_neurons

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


def test_a_metric_where_lower_is_better_bolds_its_minimum(tmp_path: Path):
    folders = []
    for name, value in (("a", 0.2), ("b", 0.1)):
        folder = fake_run(tmp_path / name, f"dino_vits{16 if name == 'a' else 8}", "voc07", 50.0)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["metrics"]["error"] = {
            "values": {"mae": value},
            "labels": {"mae": "MAE"},
            "higher_is_better": {"mae": False},
            "headline": ["mae"],
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
        folders.append(folder)
    lines = invoke("table", *folders).output.strip().splitlines()
    assert lines[0] == "| backbone | VOC07 CorLoc | VOC07 MAE |"
    assert lines[2:] == ["| dino_vits16 | **50.0** | 0.2 |", "| dino_vits8 | **50.0** | **0.1** |"]  # ties: both
    only = invoke("table", *folders, "--metric", "mae").output.strip().splitlines()
    assert only[0] == "| backbone | VOC07 |"
    refused(invoke("table", *folders, "--metric", "ap50"), "--metric ap50: no run has it", "corloc, mae")


def test_table_refuses_an_unfinished_run(tmp_path: Path):
    folder = fake_run(tmp_path / "r", "dino_vits16", "voc07", 1.0)
    (folder / "run.json").write_text(json.dumps({"status": "running"}))
    result = invoke("table", str(folder))
    assert result.exit_code != 0 and "not finished" in result.output


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"values": {"corloc": 99.0}}, "CorLoc 99.0 disagrees with its own counts (353/1000 = 35.3000%)"),
        ({"values": {"corloc": "35.3"}}, "corloc value corloc = '35.3' is not a number"),
        ({"n_hits": 2000}, "n_hits 2000 / n_scored 1000 is no score"),
        ({"n_scored": None}, "without whole n_hits / n_scored counts"),
    ],
)
def test_hand_edited_numbers_are_refused(tmp_path: Path, edit: dict, needle: str):
    folder = fake_run(tmp_path / "r", "dino_vits16", "voc07", 35.3)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["metrics"]["corloc"].update(edit)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    good = fake_run(tmp_path / "g", "dino_vits8", "voc07", 30.0)
    refused(invoke("table", folder, good), str(folder / "metrics.json"), needle, "rerun")


def test_table_rows_from_real_runs(weights_file, tmp_path: Path):
    backbone = create_backbone("dinov2_reg", weights_file("dinov2_reg"))
    make_voc(tmp_path)
    made = [
        run(RunConfig.flat("dinov2_reg", "voc07", tmp_path / name, data_root=tmp_path, workers=0, method=m), backbone)
        for name, m in (("a", "lost"), ("b", "tokencut"))
    ]
    rows, columns = build_rows([read_run(r.out) for r in made])
    tag = f"[local {backbone.weights.sha256[:8]}]"  # not the pretrained model: the label says so
    assert columns == [("voc07", "corloc"), ("voc07", "box_AP50"), ("voc07", "box_AR100")]
    assert [r.label for r in rows] == [
        f"dinov2_reg_vits14 {tag}",
        f"dinov2_reg_vits14 {tag} (method=tokencut)",
    ]
    assert [r.cells[("voc07", "corloc")] for r in rows] == [corloc_value(r.metrics) for r in made]
    assert "dinov2_reg_vits14" in render(rows, columns, "md")


def test_runs_on_different_image_sets_go_to_separate_tables_with_a_note(finished):
    result = invoke("table", str(finished["full"]), str(finished["limit2"]))
    assert result.exit_code == 0, result.output
    tables = [t for t in result.stdout.split("\n\n") if t.strip()]
    assert len(tables) == 2 and all(t.startswith("| backbone |") for t in tables)
    assert f"table 2 holds {finished['limit2']}" in result.stderr and "2 images" in result.stderr
    assert "--images-of" in result.stderr


def latex_rows(text: str) -> list[list[str]]:
    """The ``&``-separated rows of a tabular (heading and body), checked to end with ``\\\\``."""
    rows = []
    for line in text.splitlines():
        if " & " in line:
            assert line.endswith(r" \\"), line
            rows.append(line[:-3].split(" & "))
    return rows


def test_latex_gives_each_metric_column_its_delta_and_a_captioned_float(runs):
    latex = ["--format", "latex", "--caption", "LOST CorLoc", "--label", "tab:reg"]
    text = invoke("table", *map(str, runs), *latex).output
    lines = text.strip().splitlines()
    assert lines[:4] == [r"\begin{table}[t]", r"\centering", r"\caption{LOST CorLoc}", r"\label{tab:reg}"]
    assert lines[-1] == r"\end{table}" and r"\toprule" in lines and r"\bottomrule" in lines
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text).group(1)
    rows = latex_rows(text)
    assert rows[0] == ["backbone", "VOC07", "VOC12", "COCO20k", "+reg VOC07", "+reg VOC12", "+reg COCO20k"]
    assert all(len(row) == len(spec) for row in rows)
    reg = next(row for row in rows if row[0] == r"dinov2\_reg\_vitl14")
    assert reg[4:] == ["$+20.1$", "$+19.8$", "--"]
    assert text.count("{") == text.count("}")


def test_latex_with_several_metrics_groups_columns_under_their_dataset(tmp_path: Path):
    folders = []
    for name, backbone, value in (("a", "dinov2_vitl14", 35.3), ("b", "dinov2_reg_vitl14", 55.4)):
        folder = fake_run(tmp_path / name, backbone, "voc07", value)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["metrics"]["extra"] = {"values": {"box_AP50": value / 10}, "labels": {"box_AP50": "AP50"},
                                    "higher_is_better": {"box_AP50": True}, "headline": ["box_AP50"]}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(metrics))
        folders.append(folder)
    text = invoke("table", *map(str, folders), "--format", "latex").output
    rows = latex_rows(text)
    assert rows[0] == ["", r"\multicolumn{2}{c}{VOC07}", r"\multicolumn{2}{c}{+reg VOC07}"]
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5}" in text
    assert rows[1] == ["backbone", "CorLoc", "AP50", "CorLoc", "AP50"]
    assert rows[3][1:] == [r"\textbf{55.4}", r"\textbf{5.5}", "$+20.1$", "$+2.0$"]
    if shutil.which("pdflatex"):  # compile it where LaTeX is installed
        document = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + text + "\\end{document}\n"
        (tmp_path / "t.tex").write_text(document)
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
        assert done.returncode == 0, done.stdout[-2000:]


def test_csv_deltas_are_numbers_per_column(runs):
    rows = list(csv.DictReader(io.StringIO(invoke("table", *map(str, runs), "--format", "csv").output)))
    reg = next(r for r in rows if r["backbone"] == "dinov2_reg_vitl14")
    assert float(reg["+reg VOC07"]) == pytest.approx(20.1) and reg["+reg COCO20k"] == ""


def test_table_skips_non_runs_and_labels_duplicates_and_local_weights(finished, tmp_path, weights_file):
    from objdisc.utils.hashing import sha256_file

    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("x")
    twin = tmp_path / "full-again"
    shutil.copytree(finished["full"], twin)
    result = invoke("table", str(finished["full"]), str(tmp_path / "notes"), str(tmp_path / "file.txt"), str(twin))
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'notes'}: not a finished run (metrics.json missing)" in result.stderr
    assert f"skipped {tmp_path / 'file.txt'}: not a run folder" in result.stderr
    sha = sha256_file(weights_file("dinov2_reg"))[:8]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| dinov2")]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| dinov2_reg_vits14 [local {sha}] [full]",
        f"| dinov2_reg_vits14 [local {sha}] [full-again]",
    ]
    nothing = invoke("table", str(tmp_path / "notes"))
    refused(nothing, "no finished run among the folders given", "notes")
