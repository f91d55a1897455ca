"""Every kind of bad input in one table: a clear message naming the file, and every other image
still gets its box."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from objdisc.engine.images import header_size, load_image
from objdisc.engine.runner import RunConfig, run
from objdisc.models.backbones import create_backbone

GOOD = ["good0.jpg", "good1.jpg"]


def fake_png(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a size, and nothing else."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0\0\0\0"


def fake_jpeg(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 claiming a size, EOI."""
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + sof + b"\xff\xd9"


def real_jpeg(hw: tuple[int, int]) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, size=(*hw, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def write_case(folder: Path, case: str) -> str:
    """Write the bad (or odd) file for ``case``; return its name."""
    rgb = np.random.default_rng(1).integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
    if case == "zero-byte":
        (folder / "bad.jpg").write_bytes(b"")
    elif case == "truncated-jpeg":
        data = real_jpeg((60, 80))
        (folder / "bad.jpg").write_bytes(data[: len(data) // 2])
    elif case == "corrupt-jpeg":
        (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 500 + b"\xff\xd9")
    elif case == "huge-png":
        (folder / "bad.png").write_bytes(fake_png(40_000, 30_000))
        return "bad.png"
    elif case == "huge-jpeg":
        (folder / "bad.jpg").write_bytes(fake_jpeg(40_000, 30_000))
    elif case == "png-alpha":
        Image.fromarray(np.dstack([rgb, np.full((40, 50), 128, np.uint8)]), "RGBA").save(folder / "bad.png")
        return "bad.png"
    elif case == "png-palette":
        Image.fromarray(rgb).convert("P").save(folder / "bad.png")
        return "bad.png"
    elif case == "png-16bit":
        cv2.imwrite(str(folder / "bad.png"), (rgb.astype(np.uint16) * 257))
        return "bad.png"
    elif case == "grayscale":
        cv2.imwrite(str(folder / "bad.jpg"), rgb[..., 0])
    elif case == "cmyk-jpeg":
        Image.fromarray(rgb).convert("CMYK").save(folder / "bad.jpg")
    elif case == "smaller-than-a-patch":
        cv2.imwrite(str(folder / "bad.png"), rgb[:5, :7])
        return "bad.png"
    elif case == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(rgb).save(folder / "bad.jpg", exif=exif)
    return "bad.jpg"


# case -> expected message fragment (None: the image is fine and gets a box)
CASES = {
    "zero-byte": "file is empty (0 bytes)",
    "truncated-jpeg": "truncated JPEG",
    "corrupt-jpeg": "not a decodable image",
    "huge-png": "make 6,124,694 patches of 14 px",
    "huge-jpeg": "40000x30000 pixels make 6,124,694 patches",
    "png-alpha": None,
    "png-palette": None,
    "png-16bit": None,
    "grayscale": None,
    "cmyk-jpeg": None,
    "smaller-than-a-patch": None,
    "exif-rotated": None,
}


@pytest.fixture(scope="module")
def backbone(weights_file):
    return create_backbone("dinov2_reg", weights_file("dinov2_reg"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_table(case: str, tmp_path: Path, backbone):
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(GOOD):
        write_image(images / name, (56, 70), (10, 10, 40, 40), seed=i)
    bad = write_case(images, case)
    result = run(RunConfig("dinov2_reg", "folder", tmp_path / "out", images=images, workers=0), backbone=backbone)
    per_image = {e["file_name"]: e for e in json.loads((tmp_path / "out/per_image.json").read_text())["images"]}
    for name in GOOD:
        assert "box" in per_image[name], f"{name} lost its box because of {case}"
    expected = CASES[case]
    if expected is None:
        assert result.metrics["n_skipped"] == 0
        x1, y1, x2, y2 = per_image[bad]["box"]
        gt = json.loads((tmp_path / "out/gt.json").read_text())
        size = next(i for i in gt["images"] if i["file_name"] == bad)
        assert 0 <= x1 < x2 <= size["width"] and 0 <= y1 < y2 <= size["height"]
    else:
        (skipped,) = result.metrics["skipped"]
        assert skipped["file_name"] == bad
        assert str(images / bad) in skipped["reason"] and expected in skipped["reason"]


def test_header_size_reads_no_pixels():
    assert header_size(fake_png(40_000, 30_000)) == (30_000, 40_000)
    assert header_size(fake_jpeg(40_000, 30_000)) == (30_000, 40_000)
    assert header_size(b"BM not handled") is None


def test_max_side_resizes_and_maps_boxes_back(tmp_path: Path, backbone):
    images = tmp_path / "images"
    write_image(images / "big.jpg", (600, 800), (200, 150, 600, 450))
    with pytest.raises(Exception, match="--max-side"):
        load_image(images / "big.jpg", max_patches=500, patch_size=14)
    image, original = load_image(images / "big.jpg", max_side=280, max_patches=500, patch_size=14)
    assert image.shape == (210, 280, 3) and original == (600, 800)
    config = RunConfig(
        "dinov2_reg", "folder", tmp_path / "out", images=images, workers=0, max_side=280, max_patches=500
    )
    result = run(config, backbone=backbone)
    assert result.metrics["n_skipped"] == 0
    box = json.loads((tmp_path / "out/predictions.json").read_text())[0]["bbox"]
    x, y, w, h = box
    assert 0 <= x and 0 <= y and x + w <= 800 and y + h <= 600
    # Grid-aligned in the resized image (multiples of 14 px, or the border) times 800/280.
    assert x == round(round(x * 280 / 800) * 800 / 280)
