from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from objdisc.engine.images import ImageError, SizeBuckets, decode_image, make_batch, padded_size


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
