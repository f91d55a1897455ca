"""The thin shell scripts in data_scripts/ reach `objdisc data download` with the real sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from httpserver import Behaviour, serve

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # The scripts call `python -m objdisc`: put this interpreter first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args],
        env={**os.environ, **env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


SLOW = pytest.mark.slow  # the same script on another set: CI's slow run


@pytest.mark.parametrize(
    ("script", "args", "served", "known"),
    [
        ("get_voc.sh", ["2007"], "/VOCtrainval_06-Nov-2007.tar", "expected 460032000"),
        pytest.param("get_voc.sh", ["2012"], "/VOCtrainval_11-May-2012.tar", "expected 1999639040", marks=SLOW),
        ("get_coco20k.sh", [], "/coco_20k_filenames.txt", "expected 832314"),
        pytest.param("get_coco_val2017.sh", [], "/annotations_trainval2017.zip", "expected 252907541", marks=SLOW),
        ("get_saliency.sh", ["duts-te"], "/DUTS-TE.zip", "DUTS-TE.zip: not a zip archive"),
        pytest.param("get_saliency.sh", ["ecssd"], "/images.zip", "images.zip: not a zip archive", marks=SLOW),
    ],
)
def test_scripts_fetch_and_check_the_real_sources(tmp_path: Path, script, args, served, known):
    behaviour = Behaviour(files={served: b"not the real file"})
    with serve(behaviour) as base:
        result = run_script(script, str(tmp_path / "data"), *args, env={"OBJDISC_MIRROR": base})
    assert result.returncode == 1
    assert known in result.stderr  # checked against the real source's published size (saliency: its content)
    assert behaviour.requests == [f"GET {served}"]


def test_bad_year_is_refused(tmp_path: Path):
    result = run_script("get_voc.sh", str(tmp_path), "2010", env={})
    assert result.returncode == 2 and "2007 or 2012" in result.stderr


def test_unknown_saliency_set_is_refused(tmp_path: Path):
    result = run_script("get_saliency.sh", str(tmp_path), "pascal-s", env={})
    assert result.returncode == 2 and "ecssd, duts-te or dut-omron" in result.stderr
