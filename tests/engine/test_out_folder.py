"""The --out folder through the real CLI: a file, an unwritable place, a folder objdisc did not
write, --overwrite, a busy folder and two runs racing for one: one clear line naming the folder
and the fix, and the files already there left as they should be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import folder_run as objdisc_run
from conftest import invoke, refused, snapshot, write_image

from objdisc.engine.out_folder import LOCK_NAME


def test_out_is_a_file(tmp_path: Path, weights_file, two_images):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    refused(objdisc_run(weights_file("dinov2_reg"), two_images, out), str(out), "is a file, not a folder")
    assert out.read_text() == "mine"


@pytest.mark.parametrize("out", ["/proc/objdisc-test-out/run", "/sys/objdisc-test-out"])
def test_out_where_nothing_can_be_written(weights_file, two_images, out: str):
    refused(objdisc_run(weights_file("dinov2_reg"), two_images, Path(out)), out, "choose a writable place")


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_objdisc_did_not_write_is_left_alone(tmp_path: Path, weights_file, two_images, overwrite: bool):
    out = tmp_path / "mine"
    (out / "journal").mkdir(parents=True)
    (out / "journal" / "mine.txt").write_text("my notes")
    (out / "predictions.json").write_text('[{"mine": 1}]')
    before = snapshot(out)
    extra = ["--overwrite"] if overwrite else []
    refused(objdisc_run(weights_file("dinov2_reg"), two_images, out, *extra), str(out), "did not write", "new or empty")
    after = snapshot(out)
    after.pop(LOCK_NAME, None)
    assert after == before


def test_overwrite_deletes_only_objdiscs_files(tmp_path: Path, weights_file, two_images):
    out = tmp_path / "run"
    assert objdisc_run(weights_file("dinov2_reg"), two_images, out).exit_code == 0
    (out / "notes.txt").write_text("keep me")
    (out / "journal" / "mine.txt").write_text("keep me too")
    first = (out / "predictions.json").read_bytes()
    assert objdisc_run(weights_file("dinov2_reg"), two_images, out, "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "journal" / "mine.txt").read_text() == "keep me too"
    assert (out / "predictions.json").read_bytes() == first


def test_a_second_run_into_a_busy_folder_is_refused_at_once(tmp_path: Path, weights_file, two_images):
    out = tmp_path / "busy"
    script = (
        "import pathlib, time\n"
        "from objdisc.engine.out_folder import lock_out\n"
        f"lock = lock_out(pathlib.Path({str(out)!r}))\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        message = refused(objdisc_run(weights_file("dinov2_reg"), two_images, out), str(out), f"pid {holder.pid}")
        assert "another --out" in message and time.perf_counter() - start < 30
        assert not (out / "journal").exists()
    finally:
        holder.kill()
        holder.wait()
    # Once the other process is gone (killed: the kernel drops its lock), the folder is usable,
    # and the result equals a run into a fresh folder.
    assert objdisc_run(weights_file("dinov2_reg"), two_images, out).exit_code == 0
    assert objdisc_run(weights_file("dinov2_reg"), two_images, tmp_path / "fresh").exit_code == 0
    assert (out / "predictions.json").read_bytes() == (tmp_path / "fresh" / "predictions.json").read_bytes()


@pytest.mark.slow
def test_two_real_runs_racing_for_one_folder(tmp_path: Path, weights_file):
    """Two `objdisc run` processes into one --out: the second is refused while the first writes,
    and the first's files equal those of a single run."""
    images = tmp_path / "images"
    for i in range(40):
        write_image(images / f"{i:03d}.jpg", (112, 140), (20, 20, 90, 90), seed=i)
    out, weights = tmp_path / "shared-out", weights_file("dinov2_reg")
    base = ["run", "-b", "dinov2_reg", "--weights", str(weights), "-d", "folder", "--images", str(images)]
    args = [*base, "--out", str(out), "--workers", "0", "--batch-size", "1", "--no-progress"]
    # The second process is started first and waits, imports done, so that its attempt falls
    # inside the first one's run rather than after its own second of start-up.
    second = subprocess.Popen(
        [sys.executable, "-c", "import sys; from objdisc.cli import cli; sys.stdin.readline(); cli.main()", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.Popen([sys.executable, "-m", "objdisc", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "journal" / "rank0.jsonl").exists():  # the first holds the lock and works
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        _, err = second.communicate("go\n", timeout=120)
        assert first.poll() is None, "the first run ended before the second tried: the race was not run"
    finally:
        second.kill()
        first_err = first.communicate(timeout=300)[1]
    assert second.returncode == 1 and "Traceback" not in err, err
    (message,) = err.strip().splitlines()
    assert message.startswith("Error: ") and f"pid {first.pid}" in message and str(out) in message
    assert first.returncode == 0, first_err
    single = tmp_path / "single"
    assert invoke(*base, "--out", str(single), "--workers", "0").exit_code == 0
    for name in ("predictions.json", "per_image.json", "gt.json"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name


def norms_args(weights: Path, images: Path) -> list:
    return ["norms", "-b", "dinov2_reg", "--weights", weights, "-d", "folder", "--images", images]


# Every command that writes follows run's rule: never over a file objdisc did not write, one clear
# refusal, --overwrite to replace its own.


def test_registers_find_never_writes_over_a_file_it_did_not_make(tmp_path: Path, weights_file, two_images, finished):
    run = tmp_path / "run"
    shutil.copytree(finished["full"], run)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    args = ["registers", "find", "-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "--images", two_images]
    for target in (run / "predictions.json", notes):
        before = target.read_bytes()
        refused(invoke(*args, "--out", target), str(target), "did not write it", "another file name")
        assert target.read_bytes() == before
    own = tmp_path / "neurons.json"
    own.write_text(json.dumps({"method": "register neurons (Jiang et al., NeurIPS 2025)", "ranked": []}))
    refused(invoke(*args, "--out", own), str(own), "earlier objdisc registers find output", "--overwrite")


@pytest.mark.parametrize("kind", ["user", "run"])
def test_norms_never_writes_into_a_folder_it_did_not_make(tmp_path: Path, weights_file, two_images, finished, kind):
    if kind == "user":
        out = tmp_path / "mine"
        out.mkdir()
        (out / "histogram.png").write_bytes(b"my picture")
    else:
        out = tmp_path / "run"
        shutil.copytree(finished["full"], out)
    before = snapshot(out)
    args = norms_args(weights_file("dinov2_reg"), two_images)
    needle = "holds an objdisc run" if kind == "run" else "files objdisc norms did not write"
    refused(invoke(*args, "--out", out), str(out), needle, "new or empty folder")
    after = snapshot(out)
    after.pop(LOCK_NAME, None)
    before.pop(LOCK_NAME, None)
    assert after == before


def test_norms_replaces_its_own_output_only_with_overwrite(tmp_path: Path, weights_file, two_images):
    args = norms_args(weights_file("dinov2_reg"), two_images)
    out = tmp_path / "n"
    assert invoke(*args, "--out", out, "--threshold", "5").exit_code == 0
    (out / "mine.txt").write_text("mine")  # a file of the user's among norms' own
    refused(invoke(*args, "--out", out), "earlier objdisc norms output", "--overwrite")
    assert invoke(*args, "--out", out, "--overwrite").exit_code == 0
    assert (out / "mine.txt").read_text() == "mine" and (out / "norms.json").exists()


def test_norms_refuses_a_threshold_below_zero_before_writing(tmp_path: Path, weights_file, two_images):
    args = norms_args(weights_file("dinov2_reg"), two_images)
    refused(invoke(*args, "--out", tmp_path / "n", "--threshold", "-5"), "--threshold -5.0", "finite number > 0")
    assert not (tmp_path / "n").exists()


def test_visualize_never_writes_into_a_folder_it_did_not_make(tmp_path: Path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished["full"], run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("<p>my page</p>")
    refused(invoke("visualize", run, "--out", mine, "--limit", "1"), str(mine), "did not write")
    assert (mine / "index.html").read_text() == "<p>my page</p>"
    assert invoke("visualize", run, "--limit", "1").exit_code == 0
    refused(invoke("visualize", run, "--limit", "1"), "earlier objdisc visualize output", "--overwrite")
    assert invoke("visualize", run, "--limit", "1", "--overwrite").exit_code == 0
