"""benchmarks/reproduce.py: every command it prints parses, and its comparison puts measured next to published."""

from __future__ import annotations

from pathlib import Path

from conftest import fake_run

from objdisc.cli import cli


def load_reproduce():
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_commands_cover_the_matrix_and_parse(capsys):
    reproduce = load_reproduce()
    assert reproduce.main(["--dry-run", "--data-root", "/data", "--out", "/runs"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # eight backbones with LOST, DINO ViT-S/16 with TokenCut, DINO-seg on three backbones,
    # DINOv2 ViT-L/14 with test-time registers; MaskCut on three backbones and with test-time registers
    # saliency: five methods (TokenCut with and without the solver, LOST, DINO-seg, MaskCut) on three
    # backbones and with test-time registers, on three datasets
    # ProMerge on three backbones and with test-time registers on two datasets; FOUND's background
    # step on three backbones and with test-time registers, and its released head, on six datasets,
    # and the head in multi mode on the three saliency sets
    assert len(lines) == (8 + 1 + 3 + 1) * 3 + (3 + 1) * 3 + 5 * (3 + 1) * 3 + (3 + 1) * 2 + (3 + 1 + 1) * 6 + 3
    heads = [line for line in lines if "--found-head" in line]
    assert len(heads) == 9 and all("-b dino_vits8 " in line and "decoder_weights.pt" in line for line in heads)
    multi = [line for line in lines if "--found-mode multi" in line]
    assert len(multi) == 3 and all(" -d " + d in " ".join(multi) for d in ("ecssd", "duts-te", "dut-omron"))
    import shlex

    from objdisc.models.specs import get_spec

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
    assert ttr == {"voc07", "voc12", "coco20k", "coco_val2017", "ecssd", "duts-te", "dut-omron"}
    assert {(b, d) for b, m, d in reproduce.PUBLISHED_SALIENCY} <= {(b, d) for b, m, d in cells}
    refined = [line for line in lines if "--refine bilateral" in line]
    assert len(refined) == 4 * 3 and all("--method tokencut" in line for line in refined)


def test_reproduce_comparison_puts_measured_next_to_published(tmp_path: Path):
    reproduce = load_reproduce()
    fake_run(tmp_path / "dino_vits16-voc07", "dino_vits16", "voc07", 60.5)
    fake_run(tmp_path / "dino_vits16-tokencut-voc07", "dino_vits16", "voc07", 67.0, method="tokencut")
    fake_run(tmp_path / "dino_vits16-dinoseg-voc07", "dino_vits16", "voc07", 45.1, method="dinoseg", legacy=True)
    cells = [("dino_vits16", "lost", "voc07"), ("dino_vits16", "lost", "voc12"), ("dino_vits16", "tokencut", "voc07")]
    cells.append(("dino_vits16", "dinoseg", "voc07"))
    text = reproduce.comparison(tmp_path, cells)
    assert "| dino_vits16 | lost | voc07 | corloc | 60.5 | 61.9 | LOST README |" in text
    assert "| dino_vits16 | lost | voc12 | corloc |  | 64.0 | LOST README |" in text
    assert "| dino_vits16 | tokencut | voc07 | corloc | 67.0 | 68.8 | TokenCut paper |" in text
    assert "| dino_vits16 | dinoseg | voc07 | corloc | 45.1 | 45.8 | LOST paper, Table 1 |" in text


def test_reproduce_comparison_has_a_row_per_saliency_metric(tmp_path: Path):
    import json

    reproduce = load_reproduce()
    folder = fake_run(tmp_path / "dino_vits16-tokencut-bs-ecssd", "dino_vits16", "ecssd", 0.0, method="tokencut")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["metrics"] = {"saliency": {"values": {"max_fbeta": 86.94, "iou": 76.5, "accuracy": 92.0}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    text = reproduce.comparison(tmp_path, [("dino_vits16", "tokencut+bs", "ecssd"), ("dinov2_vitl14", "lost", "ecssd")])
    assert "| dino_vits16 | tokencut+bs | ecssd | max_fbeta | 86.9 | 87.4 | TokenCut README |" in text
    assert "| dino_vits16 | tokencut+bs | ecssd | iou | 76.5 | 77.2 | TokenCut README |" in text
    assert "| dinov2_vitl14 | lost | ecssd | iou |  |  |  |" in text


def test_reproduce_comparison_has_mask_ap_for_many_object_methods_and_founds_metrics(tmp_path: Path):
    import json

    reproduce = load_reproduce()
    folder = fake_run(tmp_path / "dino_vitb8-promerge-coco_val2017", "dino_vitb8", "coco_val2017", 0.0)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["metrics"] = {"ap": {"values": {"box_AP50": 5.04}}, "mask_ap": {"values": {"mask_AP": 2.31}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    cells = [("dino_vitb8", "promerge", "coco_val2017"), ("dino_vits8", "found", "ecssd")]
    text = reproduce.comparison(tmp_path, cells)
    assert "| dino_vitb8 | promerge | coco_val2017 | box_AP50 | 5.0 |  |  |" in text
    assert "| dino_vitb8 | promerge | coco_val2017 | mask_AP | 2.3 | 2.4 | ProMerge README |" in text
    for name in ("max_fbeta", "iou", "accuracy", "mae", "s_measure"):
        assert f"| dino_vits8 | found | ecssd | {name} |  |  |  |" in text
