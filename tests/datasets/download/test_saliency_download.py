"""Downloading ECSSD, DUTS-TE and DUT-OMRON from a local HTTP server laid out like their hosts:
the published paths, the archives' real layouts, a nested zip, the checks that stand in for
checksums, --archive, --mirror, status and the second call that does nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import invoke, make_saliency, refused
from httpserver import Behaviour, serve

import objdisc.datasets.saliency as saliency_module
from objdisc.datasets import load_dataset
from objdisc.datasets.download.get import MARKER, dataset_status, get_dataset
from objdisc.datasets.download.sources import saliency_sources

# the paths of the published URLs (TokenCut's download_data.sh), on the test server
PATHS = {
    "ecssd": (
        "/leojia/projects/hsaliency/data/ECSSD/images.zip",
        "/leojia/projects/hsaliency/data/ECSSD/ground_truth_mask.zip",
    ),
    "duts-te": ("/duts/download/DUTS-TE.zip",),
    "duts-tr": ("/duts/download/DUTS-TR.zip",),
    "dut-omron": ("/dut-omron/download/DUT-OMRON-image.zip", "/dut-omron/download/DUT-OMRON-gt-pixelwise.zip.zip"),
}


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def archives(tmp_path: Path, kind: str, n: int = 3) -> dict[str, bytes]:
    """Stand-ins of the set's archives in their real layouts (URL path -> bytes)."""
    make_saliency(tmp_path / "src" / "img", tmp_path / "src" / "gt", n=n)
    jpgs = {p.name: p.read_bytes() for p in sorted((tmp_path / "src" / "img").iterdir())}
    pngs = {p.name: p.read_bytes() for p in sorted((tmp_path / "src" / "gt").iterdir())}
    if kind == "ecssd":
        bodies = [zipped({f"images/{k}": v for k, v in jpgs.items()}),
                  zipped({f"ground_truth_mask/{k}": v for k, v in pngs.items()})]  # fmt: skip
    elif kind in ("duts-te", "duts-tr"):
        part = kind.upper()
        members = {f"{part}/{part}-Image/{k}": v for k, v in jpgs.items()}
        members |= {f"{part}/{part}-Mask/{k}": v for k, v in pngs.items()}
        bodies = [zipped(members)]
    else:  # DUT-OMRON: the masks' .zip.zip holds a zip, and macOS droppings
        inner = zipped({f"pixelwiseGT-new-PNG/{k}": v for k, v in pngs.items()} | {"__MACOSX/._x.png": b"junk"})
        bodies = [
            zipped({f"DUT-OMRON-image/{k}": v for k, v in jpgs.items()}),
            zipped({"DUT-OMRON-gt-pixelwise.zip": inner}),
        ]
    return dict(zip(PATHS[kind], bodies, strict=True))


@pytest.fixture
def small_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The published counts, shrunk to the stand-ins' 3 images."""
    for kind, spec in saliency_module.SALIENCY_SETS.items():
        monkeypatch.setitem(saliency_module.SALIENCY_SETS, kind, dataclasses.replace(spec, n_images=3))
    import objdisc.datasets.download.get as get_module

    for kind in saliency_module.SALIENCY_SETS:
        monkeypatch.setitem(get_module.EXPECTED_IMAGES, kind, 3)


@pytest.mark.parametrize("kind", ["ecssd", "duts-te", "dut-omron", "duts-tr"])
def test_download_unpack_check_then_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_sets, kind: str):
    files = archives(tmp_path, kind)
    behaviour = Behaviour(files=files)
    root = tmp_path / "data"
    with serve(behaviour) as base:
        monkeypatch.setenv("OBJDISC_SALIENCY_URL", base)
        assert "3 images with masks unpacked and checked" in get_dataset(kind, root, progress=False)
        assert sorted(r.split()[1] for r in behaviour.requests) == sorted(files)
        assert "already complete" in get_dataset(kind, root, progress=False)
    dataset = load_dataset(kind, root)
    assert [r.file_name for r in dataset.records] == ["im00.jpg", "im01.jpg", "im02.jpg"] and not dataset.warnings
    status = dataset_status(kind, root)
    assert status.verified and status.complete and not list((root / "downloads").glob("*"))
    marker = json.loads((status.folder / MARKER).read_text())
    assert all(len(f["md5"]) == 32 and len(f["sha256"]) == 64 for f in marker["files"] if "file" in f)


def test_the_published_urls_are_tokencuts():
    urls = {kind: [s.urls[0] for s in saliency_sources(kind)] for kind in PATHS}
    assert urls == {
        "ecssd": ["https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/data/ECSSD/images.zip",
                  "https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/data/ECSSD/ground_truth_mask.zip"],
        "duts-te": ["http://saliencydetection.net/duts/download/DUTS-TE.zip"],
        "duts-tr": ["http://saliencydetection.net/duts/download/DUTS-TR.zip"],
        "dut-omron": ["http://saliencydetection.net/dut-omron/download/DUT-OMRON-image.zip",
                      "http://saliencydetection.net/dut-omron/download/DUT-OMRON-gt-pixelwise.zip.zip"],
    }  # fmt: skip
    assert [s.urls[0] for s in saliency_sources("duts-te", "http://m/x/")] == ["http://m/x/DUTS-TE.zip"]


def test_an_error_page_or_an_incomplete_set_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_sets):
    files = archives(tmp_path, "duts-te")
    root = tmp_path / "data"
    with serve(Behaviour(files={PATHS["duts-te"][0]: b"<html>moved</html>"})) as base:
        monkeypatch.setenv("OBJDISC_SALIENCY_URL", base)
        result = invoke("data", "download", "duts-te", "--data-root", root)
    refused(result, "DUTS-TE.zip: not a zip archive")
    assert not (root / "downloads" / "DUTS-TE.zip").exists()
    monkeypatch.setitem(saliency_module.SALIENCY_SETS, "duts-te",
                        dataclasses.replace(saliency_module.SALIENCY_SETS["duts-te"], n_images=4))  # fmt: skip
    with serve(Behaviour(files=files)) as base:
        monkeypatch.setenv("OBJDISC_SALIENCY_URL", base)
        result = invoke("data", "download", "duts-te", "--data-root", root)
    refused(result, "unpacked 3 images with masks, not the 4 of duts-te")
    assert not (root / "DUTS-TE" / MARKER).exists()


def test_a_local_archive_and_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_sets):
    files = archives(tmp_path, "ecssd")
    images_zip = tmp_path / "images.zip"
    images_zip.write_bytes(files[PATHS["ecssd"][0]])
    flat = {"/ground_truth_mask.zip": files[PATHS["ecssd"][1]]}
    behaviour = Behaviour(files=flat)
    root = tmp_path / "data"
    with serve(behaviour) as base:
        result = invoke("data", "download", "ecssd", "--data-root", root, "--archive", images_zip, "--mirror", base)
    assert result.exit_code == 0, result.output
    assert [r.split()[1] for r in behaviour.requests] == ["/ground_truth_mask.zip"] and images_zip.exists()
    status = invoke("data", "status", "--data-root", root)
    rows = [" ".join(line.split()) for line in status.output.splitlines()]
    assert any(row.startswith("ecssd 3/3 3/3 yes complete") for row in rows), status.output
