"""`objdisc data download/status` and `run --download` against a local HTTP server serving
small archives built here in the real layouts (VOCdevkit tar, COCO annotations zip, per-image
JPEGs, LOST's list)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import coco_instances, invoke, make_coco, make_voc, pin, refused, voc_tar
from httpserver import Behaviour, serve

import objdisc.datasets.download.sources as sources
from objdisc.cli import cli
from objdisc.datasets import load_dataset
from objdisc.datasets.download.coco20k import select_coco20k
from objdisc.datasets.download.get import MARKER, dataset_status, get_dataset
from objdisc.errors import ObjdiscError


def test_voc07_download_verify_unpack_then_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    body = voc_tar(tmp_path)
    pin(monkeypatch, "VOC_ARCHIVES", "2007", body)
    behaviour = Behaviour(files={"/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar": body})
    root = tmp_path / "data"
    with serve(behaviour) as base:
        monkeypatch.setenv("OBJDISC_VOC_URL", f"{base}/pascal/VOC")
        line = get_dataset("voc07", root, progress=False)
        assert "verified and unpacked" in line
        assert len(load_dataset("voc07", root).records) == 4
        assert not (root / "downloads" / "VOCtrainval_06-Nov-2007.tar").exists()  # removed once unpacked
        marker = json.loads((root / "VOCdevkit/VOC2007" / MARKER).read_text())
        assert marker["verified"] and marker["files"][0]["md5"] == hashlib.md5(body).hexdigest()
        behaviour.requests.clear()
        assert "already complete" in get_dataset("voc07", root, progress=False)
        assert behaviour.requests == []


def test_voc_falls_back_to_the_mirror_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    body = voc_tar(tmp_path, "2012")
    pin(monkeypatch, "VOC_ARCHIVES", "2012", body)
    behaviour = Behaviour(files={"/mirror/VOCtrainval_11-May-2012.tar": body})
    with serve(behaviour) as base:
        monkeypatch.setenv("OBJDISC_VOC_URL", f"{base}/gone")
        monkeypatch.setattr(sources, "VOC_MIRROR", f"{base}/mirror")
        get_dataset("voc12", tmp_path / "data", progress=False)
    assert behaviour.requests[0].startswith("GET /gone/voc2012/")
    assert len(load_dataset("voc12", tmp_path / "data").records) == 4


def test_voc_wrong_checksum_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    body = voc_tar(tmp_path)
    behaviour = Behaviour(files={"/flat/VOCtrainval_06-Nov-2007.tar": body})  # md5 is the real one: mismatch
    monkeypatch.setitem(sources.VOC_ARCHIVES, "2007", ("VOCtrainval_06-Nov-2007.tar", "0" * 32, len(body)))
    with serve(behaviour) as base, pytest.raises(ObjdiscError, match="does not match the known"):
        get_dataset("voc07", tmp_path / "data", mirror=f"{base}/flat", progress=False)
    assert not (tmp_path / "data" / "VOCdevkit").exists()
    assert not list((tmp_path / "data" / "downloads").glob("*"))


def test_local_archive_is_checked_then_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    body = voc_tar(tmp_path)
    archive = tmp_path / "VOCtrainval_06-Nov-2007.tar"
    archive.write_bytes(body)
    with pytest.raises(ObjdiscError, match="does not match the known c52e2795"):
        get_dataset("voc07", tmp_path / "data", archives=(archive,))
    pin(monkeypatch, "VOC_ARCHIVES", "2007", body)
    get_dataset("voc07", tmp_path / "data", archives=(archive,))
    assert archive.exists() and len(load_dataset("voc07", tmp_path / "data").records) == 4


def test_evil_archive_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    body = buffer.getvalue()
    pin(monkeypatch, "VOC_ARCHIVES", "2007", body)
    archive = tmp_path / "VOCtrainval_06-Nov-2007.tar"
    archive.write_bytes(body)
    with pytest.raises(ObjdiscError, match="would land outside"):
        get_dataset("voc07", tmp_path / "data" / "root", archives=(archive,))
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "data" / "outside.txt").exists()


def jpeg_bytes(hw: tuple[int, int], seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, size=(*hw, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def coco_server_files(ids: list[int], listed: list[int], bad_size: int | None = None) -> tuple[dict, dict]:
    """Files of a tiny COCO 2014: instances (with crowd and extra images), list, per-image JPEGs."""
    sizes = {i: (30 + i % 7, 40 + i % 5) for i in ids}
    entries = [(i, f"COCO_train2014_{i:012d}.jpg", sizes[i]) for i in ids]
    boxes = {i: [((1, 2, 10, 12), 0), ((0, 0, 5, 5), int(i % 2 == 0))] for i in ids}
    instances = coco_instances(entries, boxes)
    for image in instances["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/train2014/{image['file_name']}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("annotations/instances_train2014.json", json.dumps(instances))
        zf.writestr("annotations/captions_train2014.json", "{}")
    files = {
        "/annotations_trainval2014.zip": buffer.getvalue(),
        "/coco_20k_filenames.txt": "".join(f"train2014/COCO_train2014_{i:012d}.jpg\n" for i in listed).encode(),
    }
    for i in ids:
        h, w = sizes[i]
        if i == bad_size:
            h += 1  # served at the wrong size
        files[f"/train2014/COCO_train2014_{i:012d}.jpg"] = jpeg_bytes((h, w), i)
    return files, instances


def pin_coco(monkeypatch: pytest.MonkeyPatch, files: dict) -> None:
    pin(monkeypatch, "COCO_ANNOTATIONS", None, files["/annotations_trainval2014.zip"])
    pin(monkeypatch, "COCO20K_LIST", None, files["/coco_20k_filenames.txt"])


def test_coco20k_per_image_download_builds_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ids, listed = [9, 25, 30, 34, 36, 42], [36, 9, 42, 30]
    files, instances = coco_server_files(ids, listed, bad_size=42)
    pin_coco(monkeypatch, files)
    behaviour = Behaviour(files=files)
    root = tmp_path / "data"
    with serve(behaviour) as base:
        with pytest.raises(ObjdiscError, match=r"1 of 4 COCO20k images failed.*image is 42x31, annotated 42x30"):
            get_dataset("coco20k", root, mirror=base, workers=3, progress=False)
        images = root / "COCO/images/train2014"
        assert sorted(p.name for p in images.iterdir()) == [
            f"COCO_train2014_{i:012d}.jpg" for i in (9, 30, 36)
        ]  # the bad one never landed
        assert not (root / "COCO" / MARKER).exists()
        # The server is fixed; a rerun fetches only what is missing.
        h, w = 30 + 42 % 7, 40 + 42 % 5
        behaviour.files["/train2014/COCO_train2014_000000000042.jpg"] = jpeg_bytes((h, w), 42)
        behaviour.requests.clear()
        get_dataset("coco20k", root, mirror=base, workers=3, progress=False)
        assert behaviour.requests == ["GET /train2014/COCO_train2014_000000000042.jpg"]
    selected = json.loads((root / "COCO/annotations/instances_train2014_sel20k.json").read_text())
    assert selected == lost_definition(instances, listed)
    dataset = load_dataset("coco20k", root)
    assert [r.image_id for r in dataset.records] == listed
    status = dataset_status("coco20k", root)
    assert (status.listed_images, status.found_images, status.found_annotations, status.verified) == (4, 4, 4, True)


def lost_definition(instances: dict, listed: list[int]) -> dict:
    """LOST's select_coco_20k, as written there: one scan of everything per listed image."""
    new_anno, new_images = [], []
    for i in listed:
        new_anno.extend([a for a in instances["annotations"] if a["image_id"] == i])
        new_images.extend([a for a in instances["images"] if a["id"] == i])
    return {"images": new_images, "annotations": new_anno, "categories": instances["categories"]}


def test_select_coco20k_equals_lost_definition_on_shuffled_data():
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.choice(10_000, size=60, replace=False)]
    entries = [(i, f"COCO_train2014_{i:012d}.jpg", (10, 10)) for i in ids]
    boxes = {i: [((1, 1, 2, 2), int(rng.integers(0, 2))) for _ in range(int(rng.integers(0, 4)))] for i in ids}
    instances = coco_instances(entries, boxes)
    rng.shuffle(instances["annotations"])
    listed = [int(i) for i in rng.choice(ids, size=25, replace=False)] + [123456789]  # one id not in the file
    assert select_coco20k(instances, listed) == lost_definition(instances, listed)


def test_coco20k_full_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ids = [9, 25]
    files, _ = coco_server_files(ids, ids)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in ids:
            zf.writestr(f"train2014/COCO_train2014_{i:012d}.jpg", files[f"/train2014/COCO_train2014_{i:012d}.jpg"])
    files["/train2014.zip"] = buffer.getvalue()
    pin_coco(monkeypatch, files)
    monkeypatch.setattr(
        sources, "COCO_TRAIN_IMAGES", ("train2014.zip", hashlib.md5(buffer.getvalue()).hexdigest(), None)
    )
    behaviour = Behaviour(files=files)
    with serve(behaviour) as base:
        get_dataset("coco20k", tmp_path / "data", mirror=base, full_zip=True, progress=False)
    assert not any("/train2014/COCO" in r for r in behaviour.requests)
    assert len(load_dataset("coco20k", tmp_path / "data").records) == 2


def test_status_counts_partial_datasets(tmp_path: Path):
    make_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2007/JPEGImages/000009.jpg").unlink()
    (tmp_path / "VOCdevkit/VOC2007/Annotations/000012.xml").unlink()
    status = dataset_status("voc07", tmp_path)
    assert (status.expected_images, status.listed_images, status.found_images, status.found_annotations) == (
        5011,
        4,
        3,
        3,
    )
    assert not status.verified and not status.complete and not status.all_listed_present
    result = CliRunner().invoke(cli, ["data", "status", "--data-root", str(tmp_path)])
    assert result.exit_code == 0
    rows = [" ".join(line.split()) for line in result.output.splitlines()]
    assert any(row.startswith("voc07 3/5011 3/5011 no incomplete") for row in rows), result.output
    assert any(row.startswith("coco_val2017 0/5000 0/5000 no missing") for row in rows), result.output
    assert any(row.startswith("coco20k 0/19817 0/19817 no missing") for row in rows), result.output


@pytest.mark.slow
def test_cli_download_and_run_with_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_file):
    body = voc_tar(tmp_path)
    pin(monkeypatch, "VOC_ARCHIVES", "2007", body)
    behaviour = Behaviour(files={"/VOCtrainval_06-Nov-2007.tar": body})
    root = tmp_path / "data"
    with serve(behaviour) as base:
        monkeypatch.setenv("OBJDISC_MIRROR", base)
        result = CliRunner().invoke(
            cli,
            [
                "run",
                "-b",
                "dinov2_reg",
                "-d",
                "voc07",
                "--data-root",
                str(root),
                "--download",
                "--workers",
                "0",
                "--weights",
                str(weights_file("dinov2_reg")),
                "-o",
                str(tmp_path / "out"),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert "verified and unpacked" in result.output and "CorLoc" in result.output
        again = CliRunner().invoke(cli, ["data", "download", "voc07", "--data-root", str(root)])
        assert again.exit_code == 0 and "already complete" in again.output


@pytest.mark.parametrize("indent", [None, 2])
def test_build_coco20k_file_equals_the_definition(tmp_path: Path, indent: int | None):
    from objdisc.datasets.download.coco20k import build_coco20k

    rng = np.random.default_rng(indent or 0)
    ids = [int(i) for i in rng.choice(10_000, size=40, replace=False)]
    entries = [(i, f"COCO_train2014_{i:012d}.jpg", (10, 10)) for i in ids]
    boxes = {i: [((1.25, 1e-3, 2.5, 2), int(rng.integers(0, 2))) for _ in range(int(rng.integers(0, 4)))] for i in ids}
    instances = coco_instances(entries, boxes)
    instances["annotations"][0]["segmentation"] = [[0.1, 2.30, 5e-7, 1e20]]  # floats that re-format differently
    instances["annotations"][1]["caption"] = 'quotes " and \\ and unicode é'
    rng.shuffle(instances["annotations"])
    instances = {"info": {"note": "{not a bracket: ]"}, **instances, "licenses": []}
    (tmp_path / "instances.json").write_text(json.dumps(instances, indent=indent))
    listed = [int(i) for i in rng.choice(ids, size=15, replace=False)] + [123456789]
    (tmp_path / "list.txt").write_text("".join(f"train2014/COCO_train2014_{i:012d}.jpg\n" for i in listed))
    counts = build_coco20k(tmp_path / "instances.json", tmp_path / "list.txt", tmp_path / "sel.json")
    built = json.loads((tmp_path / "sel.json").read_text())
    assert built == lost_definition(instances, listed)
    assert counts == {"images": 15, "annotations": len(built["annotations"])}


def test_build_coco20k_malformed_file_is_named(tmp_path: Path):
    from objdisc.datasets.download.coco20k import build_coco20k

    (tmp_path / "instances.json").write_text('{"images": [], "annotations": [{"image_id": 1}, ')
    (tmp_path / "list.txt").write_text("train2014/COCO_train2014_000000000001.jpg\n")
    with pytest.raises(ObjdiscError, match=r"instances\.json: not a valid COCO instances file"):
        build_coco20k(tmp_path / "instances.json", tmp_path / "list.txt", tmp_path / "sel.json")
    assert not (tmp_path / "sel.json").exists()


def closed_url() -> str:
    """A loopback URL that nothing answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_failed_voc_download_names_archive_and_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_file):
    fix = f"objdisc data download voc07 --data-root {tmp_path} --archive FILE"
    with serve(Behaviour()) as base:  # answers 404 to everything
        result = invoke("data", "download", "voc07", "--data-root", str(tmp_path), "--mirror", base, "--no-progress")
        refused(result, "VOCtrainval_06-Nov-2007.tar", fix, "--mirror URL", "OBJDISC_MIRROR")
        # the main job's --download names the command that has --archive (run has none)
        monkeypatch.setenv("OBJDISC_MIRROR", base)
        args = ["run", "-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "-d", "voc07", "--download"]
        refused(invoke(*args, "--data-root", tmp_path, "--out", tmp_path / "o", "--no-progress"), fix)
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


def coco_val2017_zips(tmp_path: Path) -> tuple[bytes, bytes, dict]:
    """Small stand-ins of val2017.zip and annotations_trainval2017.zip in the real layouts."""
    images_dir, _, data = make_coco(tmp_path / "src", [139, 285])
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    images_zip, annotations_zip = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(images_zip, "w") as zf:
        for entry in data["images"]:
            zf.writestr(f"val2017/{entry['file_name']}", (images_dir / entry["file_name"]).read_bytes())
    with zipfile.ZipFile(annotations_zip, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(data))
        zf.writestr("annotations/captions_val2017.json", "{}")
    return images_zip.getvalue(), annotations_zip.getvalue(), data


def test_coco_val2017_download_verify_unpack_then_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import objdisc.datasets.download.get as get_module

    images_zip, annotations_zip, _ = coco_val2017_zips(tmp_path)
    pin(monkeypatch, "COCO_VAL2017_IMAGES", None, images_zip)
    pin(monkeypatch, "COCO_ANNOTATIONS_2017", None, annotations_zip)
    monkeypatch.setitem(get_module.EXPECTED_IMAGES, "coco_val2017", 2)  # the stand-in holds 2 of the 5,000
    files = {"/zips/val2017.zip": images_zip, "/annotations/annotations_trainval2017.zip": annotations_zip}
    behaviour = Behaviour(files=files)
    root = tmp_path / "data"
    with serve(behaviour) as base:
        monkeypatch.setenv("OBJDISC_COCO_URL", base)
        assert "verified and unpacked" in get_dataset("coco_val2017", root, progress=False)
        assert sorted(behaviour.requests) == ["GET /annotations/annotations_trainval2017.zip", "GET /zips/val2017.zip"]
        assert "already complete" in get_dataset("coco_val2017", root, progress=False)
    dataset = load_dataset("coco_val2017", root)
    assert dataset.name == "coco_val2017/val2017" and dataset.has_masks
    assert [r.image_id for r in dataset.records] == [139, 285]
    status = dataset_status("coco_val2017", root)
    assert status.verified and status.complete and not (root / "downloads" / "val2017.zip").exists()


def test_coco_val2017_known_sources_are_the_published_ones():
    annotations, images = sources.coco_2017_sources()
    assert images.urls == ("http://images.cocodataset.org/zips/val2017.zip",)
    assert (images.md5, images.size) == ("442b8da7639aecaf257c1dceb8ba8c80", 815_585_330)
    assert annotations.urls == ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",)
    assert (annotations.md5, annotations.size) == ("f4bbac642086de4f52a3fdda2de5fa2c", 252_907_541)
