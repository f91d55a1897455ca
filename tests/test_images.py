from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import invoke, write_image
from PIL import Image

from objdisc.commands.run import RunConfig, run
from objdisc.images import ImageError, SizeBuckets, decode_image, header_size, load_image, make_batch, padded_size
from objdisc.models.backbones import create_backbone


def test_decode_rgb_order_and_size(tmp_path: Path):
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    rgb = decode_image(tmp_path / "red.png")
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("L", np.full((6, 9), 77, np.uint8)),
        ("RGBA", np.dstack([np.full((6, 9, 3), 90, np.uint8), np.zeros((6, 9), np.uint8)])),
        ("P", np.full((6, 9), 3, np.uint8)),
        ("I;16", np.full((6, 9), 40000, np.uint16)),
    ],
)
def test_decode_other_modes_to_rgb(tmp_path: Path, mode: str, array: np.ndarray):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    image = Image.fromarray(array, mode=mode) if mode != "I;16" else Image.fromarray(array)
    if mode == "P":
        image.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
    image.save(path)
    rgb = decode_image(path)
    assert rgb.shape == (6, 9, 3) and rgb.dtype == np.uint8
    expected = {"L": [77] * 3, "RGBA": [90] * 3, "P": [10, 20, 30], "I;16": [40000 >> 8] * 3}[mode]
    assert rgb[0, 0].tolist() == expected


def test_decode_keeps_the_raw_pixel_grid_despite_exif_orientation(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 10), (0, 128, 0)).save(tmp_path / "rot.jpg", exif=exif)
    assert decode_image(tmp_path / "rot.jpg").shape == (10, 40, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\xff\xd8\xff\xe0 cut short", "truncated JPEG"),
        (b"\xff\xd8\xff\xe0 not really a jpeg\xff\xd9", "not a decodable image"),
        (b"GIF89a nonsense", "not a decodable image"),
    ],
)
def test_decode_errors_name_the_file(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        decode_image(path)
    assert str(path) in str(info.value)


def test_decode_missing_file(tmp_path: Path):
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "nope.jpg")


def test_padded_size():
    assert padded_size((75, 100), 14) == (84, 112)
    assert padded_size((70, 98), 14) == (70, 98)
    assert padded_size((1, 1), 16) == (16, 16)


def test_make_batch_normalises_then_zero_pads():
    a = torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (8, 7, 3), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batch = make_batch([a, b], 4, mean, std)
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == torch.float32
    expected = (a.permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(batch[0, :, :5, :6], expected, rtol=0, atol=1e-6)
    assert (batch[0, :, 5:, :] == 0).all() and (batch[0, :, :, 6:] == 0).all()
    assert (batch[1, :, :, 7:] == 0).all() and (batch[1, :, :, :7] != 0).any()


def test_make_batch_refuses_mixed_padded_sizes():
    with pytest.raises(ValueError, match="padded size"):
        make_batch(
            [torch.zeros(4, 4, 3, dtype=torch.uint8), torch.zeros(9, 4, 3, dtype=torch.uint8)], 4, (0,) * 3, (1,) * 3
        )


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_size_buckets_release_every_item_once_in_homogeneous_batches(batch_size: int):
    rng = np.random.default_rng(batch_size)
    keys = rng.integers(0, 5, size=200)
    buckets: SizeBuckets[int] = SizeBuckets(batch_size)
    out: list[list[int]] = []
    for i, key in enumerate(keys):
        out.extend(buckets.add(int(key), i))
        assert buckets._pending <= buckets.max_pending
    out.extend(buckets.flush())
    assert sorted(i for batch in out for i in batch) == list(range(200))
    for batch in out:
        assert 1 <= len(batch) <= batch_size
        assert len({int(keys[i]) for i in batch}) == 1


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
    assert metrics["n_images"] == 2 and metrics["n_objects"] == 1 and metrics["n_skipped"] == 1
    (skipped,) = metrics["skipped"]
    assert skipped["file_name"] == "b.jpg"
    assert "broken symbolic link" in skipped["reason"] and str(tmp_path / "nowhere.jpg") in skipped["reason"]


# Every kind of bad input in one table: a clear message naming the file, and every other image
# still gets its box.

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
    result = run(RunConfig.flat("dinov2_reg", "folder", tmp_path / "out", images=images, workers=0), backbone=backbone)
    per_image = {e["file_name"]: e for e in json.loads((tmp_path / "out/per_image.json").read_text())["images"]}
    for name in GOOD:
        assert len(per_image[name]["objects"]) == 1, f"{name} lost its box because of {case}"
    expected = CASES[case]
    if expected is None:
        assert result.metrics["n_skipped"] == 0
        x1, y1, x2, y2 = per_image[bad]["objects"][0]["box"]
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
    config = RunConfig.flat(
        "dinov2_reg", "folder", tmp_path / "out", images=images, workers=0, max_side=280, max_patches=500
    )
    result = run(config, backbone=backbone)
    assert result.metrics["n_skipped"] == 0
    box = json.loads((tmp_path / "out/predictions.json").read_text())[0]["bbox"]
    x, y, w, h = box
    assert 0 <= x and 0 <= y and x + w <= 800 and y + h <= 600
    # Grid-aligned in the resized image (multiples of 14 px, or the border) times 800/280.
    assert x == round(round(x * 280 / 800) * 800 / 280)
