"""Misuse whose answer used to be unclear or silent, through the real CLI: a failed VOC download
that does not say how to go on, a renamed --archive, a broken symbolic link among the images, and
the messages and progress bars of long commands."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import coco_instances, make_coco, pin, refused, voc_tar, write_image
from httpserver import Behaviour, serve

from objdisc.cli import cli
from objdisc.datasets import load_dataset


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def closed_url() -> str:
    """A loopback URL that nothing answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# 10. A failed download says how to go on; --archive is recognised when renamed.


def test_failed_voc_download_names_archive_and_mirror(tmp_path: Path):
    with serve(Behaviour()) as base:  # answers 404 to everything
        result = invoke("data", "download", "voc07", "--data-root", str(tmp_path), "--mirror", base, "--no-progress")
    refused(result, "VOCtrainval_06-Nov-2007.tar", "--archive FILE", "--mirror URL", "OBJDISC_MIRROR")
    assert not (tmp_path / "VOCdevkit").exists()


def test_renamed_archive_is_recognised_by_size_and_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    body = voc_tar(tmp_path)
    pin(monkeypatch, "VOC_ARCHIVES", "2007", body)
    archive = tmp_path / "my-copy-of-voc.tar"
    archive.write_bytes(body)
    root = tmp_path / "data"
    # Nothing answers at the mirror: the archive must be used, not the network.
    args = ["data", "download", "voc07", "--data-root", str(root), "--mirror", closed_url(), "--no-progress"]
    result = invoke(*args, "--archive", str(archive))
    assert result.exit_code == 0, result.output
    assert "verified and unpacked" in result.output
    assert len(load_dataset("voc07", root).records) == 4 and archive.exists()


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("same-size", ("has the size of VOCtrainval_06-Nov-2007.tar but md5", "damaged copy")),
        ("other-size", ("neither its name nor its size", "VOCtrainval_06-Nov-2007.tar (")),
        ("voc12", ("is VOCtrainval_11-May-2012.tar, an archive of voc12", "not being fetched")),
    ],
)
def test_unrecognised_archive_is_refused_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, needles: tuple[str, ...]
):
    body = voc_tar(tmp_path)
    pin(monkeypatch, "VOC_ARCHIVES", "2012" if content == "voc12" else "2007", body)
    archive = tmp_path / "renamed.tar"
    archive.write_bytes({"same-size": bytes(len(body)), "other-size": body[:-512], "voc12": body}[content])
    with serve(Behaviour()) as base:
        args = ["data", "download", "voc07", "--data-root", str(tmp_path / "d"), "--mirror", base]
        refused(invoke(*args, "--archive", str(archive)), str(archive), *needles)
    assert not (tmp_path / "d").exists()


def test_missing_archive_is_refused(tmp_path: Path):
    gone = tmp_path / "VOCtrainval_06-Nov-2007.tar"
    refused(invoke("data", "download", "voc07", "--data-root", str(tmp_path), "--archive", str(gone)), str(gone))


# 11. A broken symbolic link among the images is listed as skipped.


def test_broken_symlink_is_listed_under_skipped(tmp_path: Path, weights_file):
    images = tmp_path / "images"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40))
    (images / "b.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "out"
    result = invoke(
        "run", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "folder",
        "--images", str(images), "--out", str(out), "--workers", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["n_boxes"] == 1 and metrics["n_skipped"] == 1
    (skipped,) = metrics["skipped"]
    assert skipped["file_name"] == "b.jpg"
    assert "broken symbolic link" in skipped["reason"] and str(tmp_path / "nowhere.jpg") in skipped["reason"]


# 12. Messages and progress of long commands.


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


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    images, annotations, _ = make_coco(tmp_path_factory.mktemp("coco"), [11, 12])
    return images, annotations


def test_norms_shows_progress(coco, weights_file, tmp_path: Path):
    images, annotations = coco
    result = invoke(
        "norms", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
        "--images", str(images), "--annotations", str(annotations), "--out", str(tmp_path / "n"), "--progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "norms: 100%" in result.stderr and "2/2" in result.stderr


def test_sweep_progress_names_the_grid_point(coco, weights_file, tmp_path: Path):
    images, annotations = coco
    result = invoke(
        "sweep", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "coco",
        "--images", str(images), "--annotations", str(annotations), "--out", str(tmp_path / "s"),
        "--workers", "0", "--gram-bias", "0,0.5", "--progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1/2 lost_k_l-1_gb0: 100%" in result.stderr and "2/2 lost_k_l-1_gb0.5: 100%" in result.stderr


# 9. No weights given, none in the cache, no network: one message at once.


def test_no_weights_offline_is_one_message_naming_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    images = tmp_path / "images"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40))
    start = time.perf_counter()
    result = invoke("run", "-b", "dinov2_reg", "-d", "folder", "--images", str(images), "--out", str(tmp_path / "o"))
    refused(result, "--weights FILE", "dinov2_vits14_reg4_pretrain.pth", "HF_HUB_OFFLINE", "empty-cache")
    assert time.perf_counter() - start < 20
