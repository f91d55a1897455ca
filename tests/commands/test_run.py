"""Resume from the journal, SIGKILL mid-run, settings mismatch, and torchrun with gloo."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tqdm
from conftest import coco_instances, coco_run, corloc, folder_run, invoke, refused, write_image

import objdisc.models.backbones as backbones_module
from objdisc.commands.run import RunConfig, run
from objdisc.engine.journal import JournalMismatchError, read_journals

SAME = ("predictions.json", "gt.json", "per_image.json")
TIMING = {"seconds", "images_per_s", "stage_seconds", "n_processed", "n_resumed"}


def photo_folder(root: Path, n: int = 10) -> Path:
    sizes = [(60, 80), (70, 84), (84, 70), (56, 56), (45, 90)]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        write_image(root / f"p{i:02d}.jpg", (h, w), (w // 4, h // 4, 3 * w // 4, 3 * h // 4), seed=i)
    return root


def config(images: Path, out: Path, weights: Path, **kw) -> RunConfig:
    return RunConfig.flat("dinov2_reg", "folder", out, weights=weights, images=images, workers=0, **kw)


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
    never = lambda *a, **k: pytest.fail("model built for a finished run")  # noqa: E731
    monkeypatch.setattr(backbones_module, "create_backbone", never)
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
        run(config(images, out, weights, method_options={"k_patches": 5}))
    result = run(config(images, out, weights, method_options={"k_patches": 5}, overwrite=True))
    assert result.metrics["n_resumed"] == 0


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
    finished = len(read_journals(out / "journal", json.loads(journal.read_text().splitlines()[0])["settings"])[0])
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


def test_annotation_warnings_beyond_twenty_are_counted(tmp_path: Path, weights_file, caplog):
    images = tmp_path / "images"
    entries, boxes = [], {}
    for i in range(1, 24):
        write_image(images / f"{i}.jpg", (28, 28), (2, 2, 20, 20), seed=i)
        entries.append((i, f"{i}.jpg", (28, 28)))
        boxes[i] = [((2, 2, 40, 10), 0)]  # reaches outside the 28x28 image
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(coco_instances(entries, boxes)))
    with caplog.at_level(logging.WARNING):
        result = invoke(
            "run", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
            "--images", str(images), "--annotations", str(annotations), "--out", str(tmp_path / "o"),
            "--workers", "0", "--limit", "1",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = [r for r in caplog.records if "reaches outside" in r.getMessage()]
    assert len(shown) == 20
    assert "... and 3 more annotation warnings (all of them in metrics.json: dataset_warnings)" in caplog.text
    assert len(json.loads((tmp_path / "o" / "metrics.json").read_text())["dataset_warnings"]) == 23


def test_hits_counter_counts_the_image_just_done(weights_file, coco, tmp_path, monkeypatch):
    import objdisc.engine.runner

    # Draw every update, as a run with slow images does.
    monkeypatch.setattr(objdisc.engine.runner, "tqdm", functools.partial(tqdm.tqdm, mininterval=0, miniters=1))
    images, annotations, _ = coco
    result = coco_run(weights_file("dinov2_reg"), images, annotations, tmp_path / "o", "--limit", "4", "--progress")
    assert result.exit_code == 0, result.output
    frames = re.findall(r"(\d)/4 \[[^\]]*?hits (\d)/(\d)\]", result.stderr)
    assert frames, result.stderr
    assert {done for done, _, _ in frames} == {"1", "2", "3", "4"}, frames
    assert all(done == counted for done, _, counted in frames), frames
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert frames[-1] == ("4", str(corloc(metrics)["n_hits"]), "4")


@pytest.mark.slow
def test_a_journal_of_objdisc_0_1_resumes(reference, tmp_path: Path):
    """A run begun by objdisc 0.1 (settings without format and with a top-level k_patches; one
    box and seed per entry) resumes: the same boxes as an uninterrupted run, no masks added."""
    from objdisc.engine.journal import settings_key
    from objdisc.methods import Lost

    images, weights, ref = reference
    out = tmp_path / "out"
    run(config(images, out, weights, limit=4))
    journal = out / "journal" / "rank0.jsonl"
    header, *entries = (json.loads(line) for line in journal.read_text().splitlines())
    old = Lost.legacy_settings(header["settings"])
    assert "format" not in old and old["k_patches"] == 100 and old["method"] == "lost"
    lines = [{"key": settings_key(old), "settings": old}]
    for entry in entries:
        objects = entry.pop("objects")
        lines.append({**entry, "box": objects["boxes"][0], "seed": objects["seeds"][0]})
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / "predictions.json").unlink()
    result = run(config(images, out, weights))
    assert result.metrics["n_resumed"] == 4 and result.metrics["n_processed"] == 6
    ours, theirs = (json.loads((d / "predictions.json").read_text()) for d in (out, ref))
    assert [(p["image_id"], p["bbox"]) for p in ours] == [(p["image_id"], p["bbox"]) for p in theirs]
    assert all("segmentation" in p for p in theirs) and not any("segmentation" in p for p in ours)
    assert (out / "per_image.json").read_bytes() == (ref / "per_image.json").read_bytes()


@pytest.mark.slow
def test_a_rerun_on_other_images_under_the_same_names_redoes_them(tmp_path: Path, weights_file, monkeypatch):
    """Resume never mixes image sets: setA then setB (same folder name, same file names, other
    pixels) into one --out, and the default --out too, give setB's boxes."""
    weights = str(weights_file("dinov2_reg"))
    sets = {}
    for name, seed in (("setA", 0), ("setB", 50)):
        images = tmp_path / name / "images"
        for i in range(3):
            h, w = (56 + 14 * i, 70)
            write_image(images / f"{i}.jpg", (h, w), (5 + 10 * i, 5, 40, 30 + 5 * i), seed=seed + i)
        sets[name] = images
    base = ["run", "-b", "dinov2_reg", "--weights", weights, "-d", "folder", "--workers", "0"]
    fresh = tmp_path / "fresh-b"
    assert invoke(*base, "--images", sets["setB"], "--out", fresh).exit_code == 0
    monkeypatch.chdir(tmp_path)  # the default --out: runs/dinov2_reg-folder, the same for both sets
    for out in ([], ["--out", tmp_path / "o"]):
        assert invoke(*base, "--images", sets["setA"], *out).exit_code == 0
        second = invoke(*base, "--images", sets["setB"], *out)
        assert second.exit_code == 0, second.output
        folder = tmp_path / ("o" if out else "runs/dinov2_reg-folder")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["n_resumed"] == 0 and metrics["n_processed"] == 3
        assert (folder / "predictions.json").read_bytes() == (fresh / "predictions.json").read_bytes()
    # An edited photo alone is redone; the others resume.
    photo = sets["setB"] / "1.jpg"
    write_image(photo, (70, 70), (10, 10, 60, 60), seed=99)
    third = invoke(*base, "--images", sets["setB"], "--out", tmp_path / "o")
    assert third.exit_code == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["n_resumed"] == 2 and metrics["n_processed"] == 1


@pytest.mark.slow
def test_out_inside_the_image_folder_is_never_read_as_images(tmp_path: Path, weights_file):
    images = tmp_path / "images"
    for i in range(3):
        write_image(images / f"{i}.jpg", (56, 70), (10, 10, 40, 40), seed=i)
    args = ["run", "-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "-d", "folder", "--images", images]
    for _ in range(2):  # the second run would see the first one's pictures
        result = invoke(*args, "--out", images / "run", "--workers", "0", "--visualize", "3")
        assert result.exit_code == 0, result.output
        assert json.loads((images / "run" / "metrics.json").read_text())["n_images"] == 3


def test_images_of_other_sizes_than_annotated_are_refused_or_counted(tmp_path: Path, weights_file, coco):
    _, _, data = coco
    halves = tmp_path / "halves"
    for i, entry in enumerate(data["images"][:4]):
        write_image(halves / entry["file_name"], (entry["height"] // 2, entry["width"] // 2), (2, 2, 20, 20), seed=i)
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({**data, "images": data["images"][:4]}))
    out = tmp_path / "o"
    result = coco_run(weights_file("dinov2_reg"), halves, annotations, out)
    refused(result, str(annotations), "4 of 4 images read", "annotated", "resized")
    assert not (out / "journal").exists()
    # one image of four resized: a warning naming it, and a count in metrics.json
    images, _, _ = coco
    mixed = tmp_path / "mixed"
    shutil.copytree(images, mixed)
    first = data["images"][0]
    write_image(mixed / first["file_name"], (first["height"] // 2, first["width"] // 2), (2, 2, 20, 20))
    result = coco_run(weights_file("dinov2_reg"), mixed, annotations, out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    mismatch = metrics["size_mismatch"]
    assert mismatch["n"] == 1 and mismatch["images"][0]["file_name"] == first["file_name"]


def test_every_image_non_finite_is_an_error_and_one_is_a_skip(tmp_path: Path, weights_file, monkeypatch):
    """NaN weights that get past the file check (a hook, a custom layer) make every box the first
    patch: each image with non-finite features is skipped, and a run of only those fails loudly."""
    from safetensors.torch import load_file, save_file

    import objdisc.models.weights as weights_module

    state = load_file(str(weights_file("dinov2_reg")))
    state["blocks.5.mlp.fc1.weight"][0, 0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(state, str(nan))
    monkeypatch.setattr(weights_module, "check_finite", lambda *a: None)
    images = tmp_path / "images"
    for i in range(2):
        write_image(images / f"{i}.jpg", (56, 70), (10, 10, 40, 40), seed=i)
    args = ["run", "-b", "dinov2_reg", "--weights", nan, "-d", "folder", "--images", images, "--workers", "0"]
    message = refused(invoke(*args, "--out", tmp_path / "o"), "every one of the 2 images gave non-finite features")
    assert "--precision fp32" in message
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["n_skipped"] == 2 and "non-finite features (NaN or inf) in k_l-1" in metrics["skipped"][0]["reason"]


def test_a_full_disk_is_one_message_and_the_rerun_resumes(tmp_path: Path, weights_file, two_images, monkeypatch):
    import errno
    import os

    import objdisc.utils.jsonio as jsonio
    from objdisc.engine.journal import Journal

    out = tmp_path / "o"
    weights = weights_file("dinov2_reg")
    # The journal on a full disk: /dev/full answers every write with "No space left on device".
    monkeypatch.setattr(Journal, "_open", lambda self: setattr(self, "_file", open("/dev/full", "a")))
    message = refused(folder_run(weights, two_images, out), str(out / "journal"), "No space left", "rerun")
    assert "resumes" in message
    monkeypatch.undo()
    real = jsonio.AtomicWriter.write

    def full(self, text):  # the disk fills while predictions.json is streamed out
        if self.path.name == "predictions.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real(self, text)

    monkeypatch.setattr(jsonio.AtomicWriter, "write", full)
    refused(folder_run(weights, two_images, out), str(out), "cannot write the run's files", "No space left")
    assert not list(out.glob(".predictions.json.*")) and not list(out.glob(".gt-annotations.*"))  # no temp left
    monkeypatch.setattr(jsonio.AtomicWriter, "write", real)
    result = folder_run(weights, two_images, out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n_resumed"] == 2  # nothing computed again


MASKCUT = ("--method", "maskcut", "--fixed-size", "112")


@pytest.mark.slow
def test_maskcut_survives_sigkill_and_shards_like_lost(reference, tmp_path: Path):
    """MaskCut under the journal and torchrun unchanged: a run killed and resumed, and two gloo
    ranks, write the files of an uninterrupted run (K objects per image, masks refined by the CRF)."""
    images, weights, _ = reference
    ref = tmp_path / "ref"
    assert subprocess.run(cli(*folder_args(images, weights, ref, *MASKCUT)), capture_output=True).returncode == 0
    assert json.loads((ref / "metrics.json").read_text())["n_objects"] >= 10  # at least one object per image
    out = tmp_path / "killed"
    args = folder_args(images, weights, out, *MASKCUT, "--batch-size", "1")
    process = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal" / "rank0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (journal.exists() and len(journal.read_text().splitlines()) >= 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert subprocess.run(cli(*args), capture_output=True).returncode == 0
    assert_same_outputs(ref, out)
    sharded = tmp_path / "sharded"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "objdisc"]
    command = [*launcher, "run", *folder_args(images, weights, sharded, *MASKCUT, "--device", "cpu")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_outputs(ref, sharded)


def test_the_method_is_built_once_per_run(reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """resolve() builds the method object; nothing else does (a fresh run, a finished one, a sweep point)."""
    from objdisc.commands.sweep import grid, sweep
    from objdisc.methods import METHODS, Lost

    built: list[str] = []

    class Counting(Lost):
        def __post_init__(self) -> None:
            built.append(self.name)
            super().__post_init__()

    monkeypatch.setitem(METHODS, "lost", Counting)
    images, weights, _ = reference
    run(config(images, tmp_path / "fresh", weights, limit=3))
    assert built == ["lost"]
    run(config(images, tmp_path / "fresh", weights, limit=3))  # finished: files rewritten from the journal
    assert built == ["lost", "lost"]
    points = grid(["lost"], ["k", "v"], [-1], {"k_patches": [5, 50]})
    assert len(built) == 2  # the grid checks its values without building
    sweep(config(images, tmp_path / "s", weights, limit=3, cache=tmp_path / "cache"), points, tmp_path / "s")
    assert len(built) == 2 + len(points) == 6
