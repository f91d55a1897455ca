"""Resume from the journal, SIGKILL mid-run, settings mismatch, and torchrun with gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_image

import objdisc.engine.runner as runner
from objdisc.engine.journal import Journal, JournalMismatchError, read_journals
from objdisc.engine.runner import RunConfig, run

SAME = ("predictions.json", "gt.json", "per_image.json")
TIMING = {"seconds", "images_per_s", "stage_seconds", "n_processed", "n_resumed"}


def photo_folder(root: Path, n: int = 10) -> Path:
    sizes = [(60, 80), (70, 84), (84, 70), (56, 56), (45, 90)]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        write_image(root / f"p{i:02d}.jpg", (h, w), (w // 4, h // 4, 3 * w // 4, 3 * h // 4), seed=i)
    return root


def config(images: Path, out: Path, weights: Path, **kw) -> RunConfig:
    return RunConfig("dinov2_reg", "folder", out, weights=weights, images=images, workers=0, **kw)


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in SAME:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMING} == {k: v for k, v in mb.items() if k not in TIMING}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, weights_file):
    root = tmp_path_factory.mktemp("runner")
    images = photo_folder(root / "images")
    weights = weights_file("dinov2_reg")
    run(config(images, root / "reference", weights))
    return images, weights, root / "reference"


def test_rerun_into_the_same_out_resumes_and_gives_identical_files(reference, tmp_path: Path):
    images, weights, ref = reference
    out = tmp_path / "out"
    first = run(config(images, out, weights, limit=4))
    assert first.metrics["n_images"] == 4
    second = run(config(images, out, weights))
    assert second.metrics["n_resumed"] == 4 and second.metrics["n_processed"] == 6
    assert_same_outputs(ref, out)


def test_a_finished_run_reruns_in_seconds_without_building_the_model(reference, tmp_path, monkeypatch):
    images, weights, ref = reference
    out = tmp_path / "out"
    run(config(images, out, weights))
    monkeypatch.setattr(runner, "create_backbone", lambda *a, **k: pytest.fail("model built for a finished run"))
    start = time.perf_counter()
    result = run(config(images, out, weights))
    assert time.perf_counter() - start < 10
    assert result.metrics["n_resumed"] == 10 and result.metrics["images_per_s"] is None
    assert_same_outputs(ref, out)


def test_a_journal_from_other_settings_is_refused(reference, tmp_path: Path):
    images, weights, _ = reference
    out = tmp_path / "out"
    run(config(images, out, weights, limit=2))
    with pytest.raises(JournalMismatchError, match=r"k_patches: 100 there, 5 now.*--overwrite"):
        run(config(images, out, weights, k_patches=5))
    result = run(config(images, out, weights, k_patches=5, overwrite=True))
    assert result.metrics["n_resumed"] == 0


def entry(image_id: int, file_name: str) -> dict:
    return {"image_id": image_id, "file_name": file_name, "hw": [2, 2], "box": [0, 0, 1, 1], "seed": 0, "error": None}


def test_a_torn_last_line_is_ignored_and_closed(tmp_path: Path):
    settings = {"k_patches": 100}
    with Journal(tmp_path, 0, settings) as journal:
        journal.append(
            {"image_id": 1, "file_name": "a.jpg", "hw": [2, 2], "box": [0, 0, 1, 1], "seed": 0, "error": None}
        )
    with open(tmp_path / "rank0.jsonl", "a") as f:
        f.write('{"image_id": 2, "file_na')  # killed mid-write
    assert set(read_journals(tmp_path, settings)) == {1}
    with Journal(tmp_path, 0, settings) as journal:
        journal.append(
            {"image_id": 3, "file_name": "c.jpg", "hw": [2, 2], "box": [0, 0, 1, 1], "seed": 0, "error": None}
        )
    assert set(read_journals(tmp_path, settings)) == {1, 3}


def test_a_box_is_never_hidden_by_an_older_failure_in_another_rank_file(tmp_path: Path):
    settings = {"k_patches": 100}
    failed = {**entry(7, "g.jpg"), "box": None, "seed": None, "error": "out of memory"}
    with Journal(tmp_path, 1, settings) as journal:  # first run, 2 ranks: rank 1 failed on image 7
        journal.append(failed)
    with Journal(tmp_path, 0, settings) as journal:  # resumed on 1 rank: image 7 got its box
        journal.append(entry(7, "g.jpg"))
    assert read_journals(tmp_path, settings)[7]["box"] == [0, 0, 1, 1]
    with Journal(tmp_path, 2, settings) as journal:  # and a failure alone is still reported
        journal.append({**failed, "image_id": 8})
    assert read_journals(tmp_path, settings)[8]["error"] == "out of memory"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "objdisc", "run", *args]


def folder_args(images: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    """`objdisc run` options for the photo folder with a local weights file."""
    return [
        "-b",
        "dinov2_reg",
        "-d",
        "folder",
        "--images",
        str(images),
        "--weights",
        str(weights),
        "-o",
        str(out),
        "--workers",
        "0",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(reference, tmp_path: Path):
    images, weights, ref = reference
    out = tmp_path / "out"
    args = folder_args(images, weights, out, "--batch-size", "1")
    process = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal" / "rank0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:  # header + 3 images
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(read_journals(out / "journal", json.loads(journal.read_text().splitlines()[0])["settings"]))
    assert 3 <= finished < 10, "the kill should land mid-run"
    assert not (out / "predictions.json").exists()
    resumed = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{finished} resumed from the journal" in resumed.stdout
    assert_same_outputs(ref, out)


@pytest.mark.slow
def test_two_gloo_processes_write_the_single_process_files(reference, tmp_path: Path):
    images, weights, ref = reference
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "objdisc"]
    command = [*launcher, "run", *folder_args(images, weights, out, "--device", "cpu")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "journal").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    per_rank = [len((out / "journal" / f"rank{r}.jsonl").read_text().splitlines()) - 1 for r in (0, 1)]
    assert per_rank == [5, 5]  # exact, contiguous, unpadded shards: no image twice
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert_same_outputs(ref, out)
