"""Figures for print (``visualize --figures``, ``norms --figures``): PDF and SVG written, parsed,
at a column's width, on a grid, with what produced them in their metadata, reproducible."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, make_voc, refused, tokencut_saliency_run

from objdisc.errors import OptionError
from objdisc.reports import print_figures
from objdisc.reports.print_figures import COLUMN_WIDTH, Panel, figure, layout, parse_formats, parse_grid

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path: Path) -> tuple[ET.Element, str]:
    """The parsed SVG's root and all its text (fonts kept as text: ``svg.fonttype`` none)."""
    root = ET.parse(path).getroot()
    return root, " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def pdf_ok(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF"), path
    assert b"/Type /Page" in data, path
    return data


def width_pt(root: ET.Element) -> float:
    return float(root.attrib["width"].removesuffix("pt"))


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory, weights_file) -> Path:
    from objdisc.commands.run import RunConfig, run

    root = tmp_path_factory.mktemp("print")
    make_voc(root)
    config = RunConfig.flat("dinov2_reg", "voc07", root / "run", data_root=root, weights=weights_file("dinov2_reg"))
    return run(config).out


def test_visualize_writes_pdf_and_svg_that_parse(voc_run: Path):
    out = voc_run.parent / "figs"
    result = invoke("visualize", str(voc_run), "--limit", "2", "--out", str(out), "--figures", "pdf,svg", "--progress")
    assert result.exit_code == 0, result.output
    assert "visualize: 100%" in result.stderr and "2/2" in result.stderr
    pdfs = sorted((out / "run" / "figures").glob("*.pdf"))
    svgs = sorted((out / "run" / "figures").glob("*.svg"))
    assert len(pdfs) == len(svgs) == 2
    sha = json.loads((voc_run / "run.json").read_text())["producer"]["weights"]["sha256"]
    for pdf, svg in zip(pdfs, svgs, strict=True):
        assert sha.encode() in pdf_ok(pdf)  # what produced it, in the PDF's Subject
        root, text = svg_texts(svg)
        assert width_pt(root) == pytest.approx(COLUMN_WIDTH * 72)  # one column wide
        for label in ("image", "token norms", "output patch-token L2 norm", "inverse degree"):
            assert label in text, (svg.name, label)  # titles and colour bars, as text
        assert sha in "".join(root.itertext())  # the SVG's metadata description
    manifest = json.loads((out / ".objdisc-output.json").read_text())["files"]
    assert {f"run/figures/{p.name}" for p in [*pdfs, *svgs]} <= set(manifest)


def test_visualize_figures_on_a_grid_at_a_width_and_a_grid_too_small_refused(voc_run: Path):
    out = voc_run.parent / "grid"
    args = ["visualize", str(voc_run), "--limit", "1", "--figures", "svg", "--out", str(out)]
    result = invoke(*args, "--grid", "3,1", "--figure-width", "7")
    assert result.exit_code == 0, result.output
    (svg,) = (out / "run" / "figures").glob("*.svg")
    root, _ = svg_texts(svg)
    assert width_pt(root) == pytest.approx(7 * 72)
    assert float(root.attrib["height"].removesuffix("pt")) > 7 * 72  # three rows of one panel: taller than wide
    elsewhere = ["visualize", str(voc_run), "--figures", "svg", "--out", str(voc_run.parent / "small")]
    refused(invoke(*elsewhere, "--grid", "1,2"), "--grid 1,2", "2 cells for 3 panels")
    refused(invoke(*elsewhere, "--grid", "0,2"), "--grid", "at least 1")
    refused(invoke(*elsewhere, "--grid", "two"), "--grid", "ROWS,COLUMNS")
    assert not (voc_run.parent / "small").exists()  # refused before any work


def test_saliency_figure_fits_a_column_on_a_grid(tmp_path: Path, weights_file, monkeypatch):
    tokencut_saliency_run(weights_file("dino"), tmp_path, n=1)
    grids = []
    real = print_figures.figure
    monkeypatch.setattr(print_figures, "figure", lambda panels, *a: grids.append(len(panels)) or real(panels, *a))
    refused(invoke("visualize", str(tmp_path / "o"), "--figures", "svg", "--grid", "2,3"), "6 cells for 7 panels")
    assert invoke("visualize", str(tmp_path / "o"), "--figures", "svg").exit_code == 0
    assert grids == [7]  # image, two maps, four saliency masks
    (svg,) = (tmp_path / "o" / "vis" / "o" / "figures").glob("*.svg")
    root, text = svg_texts(svg)
    assert width_pt(root) == pytest.approx(COLUMN_WIDTH * 72)
    assert "ground truth" in text and "refined mask (bilateral solver)" in text


def test_norms_writes_print_charts(tmp_path: Path, weights_file):
    make_voc(tmp_path)
    weights = str(weights_file("dinov2_reg"))
    result = invoke("norms", "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(tmp_path), "--weights", weights,
                    "--out", str(tmp_path / "n"), "--figures", "pdf,svg", "--all-layers")  # fmt: skip
    assert result.exit_code == 0, result.output
    for stem in ("histogram.print", "layers.print", "histogram_layers.print"):
        pdf_ok(tmp_path / "n" / f"{stem}.pdf")
        _, text = svg_texts(tmp_path / "n" / f"{stem}.svg")
        assert "count" in text or "L2 norm" in text, stem
    manifest = json.loads((tmp_path / "n" / ".objdisc-output.json").read_text())["files"]
    assert {"histogram.print.pdf", "layers.print.svg"} <= set(manifest)
    assert "histogram.print.pdf" in result.output and "layers.print.svg" in result.output  # the files, as said


def test_without_matplotlib_the_figures_are_refused_naming_the_extra(monkeypatch, voc_run: Path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(OptionError, match=r"objdisc\[plots\]"):
        parse_formats("pdf")
    assert parse_formats(None) == ()  # PNG galleries need only OpenCV
    out = voc_run.parent / "nompl"
    refused(invoke("visualize", str(voc_run), "--figures", "pdf", "--out", str(out)), "objdisc[plots]")
    assert not out.exists()  # refused before any work


def test_formats_grid_and_layout_parse():
    assert parse_formats("PDF, svg,pdf") == ("pdf", "svg")
    with pytest.raises(OptionError, match="eps"):
        parse_formats("pdf,eps")
    assert parse_grid("2,3") == (2, 3) and parse_grid(None) is None
    assert [layout(n, None) for n in (1, 2, 3, 4, 5, 7, 9)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 3)]
    assert layout(3, (1, 3)) == (1, 3)


def test_a_figure_is_byte_identical_when_drawn_again(tmp_path: Path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    panels = [
        Panel("image", image=image, boxes=[("orange", [20, 10, 50, 30], 1.0)], masks=[mask], points=[(25.0, 15.0)]),
        Panel("map", values=rng.random((40, 60)), colorbar="score"),
    ]
    first = figure(panels, "caption", tmp_path / "a", ("pdf", "svg", "png"), about="made by a test")
    second = figure(panels, "caption", tmp_path / "b", ("pdf", "svg", "png"), about="made by a test")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.suffix
    assert b"made by a test" in first[0].read_bytes()
