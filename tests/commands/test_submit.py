"""``objdisc submit``: a job array of shards and their merge, through submitit's local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, refused, write_image


def images(root: Path) -> Path:
    for c in range(2):
        for i in range(3):
            write_image(root / f"n{c}" / f"{c}_{i}.jpg", (44, 52), (6, 6, 34, 30), seed=10 * c + i)
    return root


RUN = ("-d", "class-folders", "--workers", "0", "--method", "maskcut", "--no-crf", "--fixed-size", "48")


@pytest.mark.slow
def test_a_two_task_array_runs_and_merges_into_the_whole_run(tmp_path: Path, weights_file):
    tree = images(tmp_path / "train")
    run = ["run", "-b", "dino", "--weights", str(weights_file("dino")), "--images", str(tree), *RUN]
    result = invoke("submit", "--array", "2", "--out", tmp_path / "sub", "--executor", "local",
                    "--pseudo-labels", tmp_path / "labels.json", "--", *run)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "local: array of 2 tasks" in result.stdout and "merged 6 images" in result.stdout
    whole = invoke(*run, "--out", tmp_path / "whole", "--pseudo-labels", tmp_path / "whole.json")
    assert whole.exit_code == 0
    for name in ("predictions.json", "gt.json", "per_image.json"):
        assert (tmp_path / "sub/merged" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert (tmp_path / "labels.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    shards = sorted(p.name for p in (tmp_path / "sub").iterdir() if p.name.startswith("shard-"))
    assert shards == ["shard-0-of-2", "shard-1-of-2"]
    assert json.loads((tmp_path / "sub/shard-1-of-2/run.json").read_text())["options"]["shard"] == "1/2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "norms", "-b", "dino"], "give the run after --"),
        (["--", "run", "-b", "dino", "-d", "folder", "--out", "x"], "leave --out out of the run's arguments"),
        (["--", "run", "-b", "dino", "-d", "folder", "--shard", "0/2"], "leave --shard out"),
    ],
)
def test_submit_refuses_task_arguments_it_sets_itself(tmp_path: Path, args: list[str], message: str):
    refused(invoke("submit", "--array", "2", "--out", tmp_path / "sub", "--executor", "local", *args), message)
    assert not (tmp_path / "sub").exists()


def test_submit_checks_the_run_options_before_submitting(tmp_path: Path):
    result = invoke("submit", "--array", "2", "--out", tmp_path / "sub", "--executor", "local", "--",
                    "run", "-b", "dino", "-d", "folder", "--tau", "abc")  # fmt: skip
    assert result.exit_code == 2 and "--tau" in result.stderr
    assert not (tmp_path / "sub").exists()
