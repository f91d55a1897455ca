"""Misuse through the real CLI: one clear line naming the file and the fix, no traceback, and
the files already in --out left as they should be (issue: nothing a user types ends in a
traceback or a ruined run folder)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import refused, snapshot, write_image

from objdisc.cli import cli
from objdisc.engine.out_folder import LOCK_NAME


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(2):
        write_image(folder / f"{i}.jpg", (56, 70), (10, 10, 40, 40), seed=i)
    return folder


def objdisc_run(weights: Path, images: Path, out: Path, *extra: str):
    args = ["run", "-b", "dinov2_reg", "--weights", str(weights), "-d", "folder", "--images", str(images)]
    return CliRunner().invoke(cli, [*args, "--out", str(out), "--workers", "0", *extra])


def test_out_is_a_file(tmp_path: Path, weights_file, images):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    refused(objdisc_run(weights_file("dinov2_reg"), images, out), str(out), "is a file, not a folder")
    assert out.read_text() == "mine"


@pytest.mark.parametrize("out", ["/proc/objdisc-test-out/run", "/sys/objdisc-test-out"])
def test_out_where_nothing_can_be_written(weights_file, images, out: str):
    refused(objdisc_run(weights_file("dinov2_reg"), images, Path(out)), out, "choose a writable place")


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_objdisc_did_not_write_is_left_alone(tmp_path: Path, weights_file, images, overwrite: bool):
    out = tmp_path / "mine"
    (out / "journal").mkdir(parents=True)
    (out / "journal" / "mine.txt").write_text("my notes")
    (out / "predictions.json").write_text('[{"mine": 1}]')
    before = snapshot(out)
    extra = ["--overwrite"] if overwrite else []
    refused(objdisc_run(weights_file("dinov2_reg"), images, out, *extra), str(out), "did not write", "new or empty")
    after = snapshot(out)
    after.pop(LOCK_NAME, None)
    assert after == before


def test_overwrite_deletes_only_objdiscs_files(tmp_path: Path, weights_file, images):
    out = tmp_path / "run"
    assert objdisc_run(weights_file("dinov2_reg"), images, out).exit_code == 0
    (out / "notes.txt").write_text("keep me")
    (out / "journal" / "mine.txt").write_text("keep me too")
    first = (out / "predictions.json").read_bytes()
    assert objdisc_run(weights_file("dinov2_reg"), images, out, "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "journal" / "mine.txt").read_text() == "keep me too"
    assert (out / "predictions.json").read_bytes() == first


@pytest.mark.parametrize(
    ("option", "value"), [("--tau", "nan"), ("--tau", "inf"), ("--gram-bias", "inf"), ("--gram-bias", "-inf")]
)
def test_non_finite_method_options(tmp_path: Path, weights_file, images, option: str, value: str):
    extra = [option, value] + (["--method", "tokencut"] if option == "--tau" else [])
    refused(objdisc_run(weights_file("dinov2_reg"), images, tmp_path / "o", *extra), option, "finite")
    assert not (tmp_path / "o" / "journal").exists()


def test_a_second_run_into_a_busy_folder_is_refused_at_once(tmp_path: Path, weights_file, images):
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
        message = refused(objdisc_run(weights_file("dinov2_reg"), images, out), str(out), f"pid {holder.pid}")
        assert "another --out" in message and time.perf_counter() - start < 30
        assert not (out / "journal").exists()
    finally:
        holder.kill()
        holder.wait()
    # Once the other process is gone (killed: the kernel drops its lock), the folder is usable,
    # and the result equals a run into a fresh folder.
    assert objdisc_run(weights_file("dinov2_reg"), images, out).exit_code == 0
    assert objdisc_run(weights_file("dinov2_reg"), images, tmp_path / "fresh").exit_code == 0
    assert (out / "predictions.json").read_bytes() == (tmp_path / "fresh" / "predictions.json").read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("second_header", "line 4 is a second journal header: two runs wrote into this folder at once"),
        ("not_an_entry", "line 3 is not a journal entry"),
        ("garbage_file", "not an objdisc journal"),
        ("binary_file", "not an objdisc journal"),
    ],
)
def test_a_damaged_journal_is_refused_with_the_fix(tmp_path: Path, weights_file, images, damage: str, message: str):
    out = tmp_path / "run"
    assert objdisc_run(weights_file("dinov2_reg"), images, out).exit_code == 0
    journal = out / "journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    if damage == "second_header":
        journal.write_text("\n".join([*lines, lines[0], lines[1]]) + "\n")
    elif damage == "not_an_entry":
        journal.write_text("\n".join([lines[0], lines[1], '{"hello": 1}', *lines[2:]]) + "\n")
    elif damage == "garbage_file":
        journal.write_text("hello\nworld\n")
    else:
        journal.write_bytes(bytes(range(256)) * 4)
    refused(objdisc_run(weights_file("dinov2_reg"), images, out), str(journal), message, "--overwrite")
    # ... and --overwrite does start over, giving the same boxes.
    assert objdisc_run(weights_file("dinov2_reg"), images, out, "--overwrite").exit_code == 0
    assert json.loads((out / "metrics.json").read_text())["n_images"] == 2


def test_a_torn_line_is_still_read_as_a_kill_mid_write(tmp_path: Path, weights_file, images):
    out = tmp_path / "run"
    assert objdisc_run(weights_file("dinov2_reg"), images, out).exit_code == 0
    journal = out / "journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([*lines[:2], lines[2][:10]]))  # the last image torn mid-write
    result = objdisc_run(weights_file("dinov2_reg"), images, out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n_resumed"] == 1


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
    assert CliRunner().invoke(cli, [*base, "--out", str(single), "--workers", "0"]).exit_code == 0
    for name in ("predictions.json", "per_image.json", "gt.json"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
