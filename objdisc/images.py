"""Image decoding, normalisation + padding, and batching by padded size.

Images are used at native size: decoded to RGB with the raw pixel grid (EXIF orientation
ignored, as annotations refer to the stored grid), normalised with the backbone's mean/std,
then zero-padded bottom and right to a multiple of the patch size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import cv2
import numpy as np
import torch

from objdisc.errors import ImageError

T = TypeVar("T")


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB.

    Grayscale, palette and 16-bit images become 8-bit RGB; an alpha channel is dropped.

    Returns:
        ``(H, W, 3)`` uint8 array, RGB.

    Raises:
        ImageError: naming the file when it is missing, empty or not decodable.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image ({len(data)} bytes)")
    # A numpy flip, not cv2.cvtColor: cvtColor starts OpenCV's thread pool, and a DataLoader
    # worker forked from a process whose pool is running deadlocks on its next OpenCV call.
    return np.ascontiguousarray(image[..., ::-1])


def padded_size(image_hw: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``patch_size`` (pixels)."""
    h, w = image_hw
    return (-(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size)


def make_batch(
    images: Sequence[torch.Tensor],
    patch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Normalise and zero-pad images of one padded size into a batch.

    Args:
        images: ``B`` uint8 tensors ``(H_i, W_i, 3)`` RGB (any device) whose padded sizes
            are equal.
        patch_size: patch side in pixels.
        mean: RGB mean on the [0, 1] scale.
        std: RGB std on the [0, 1] scale.
        device: where the batch is built.

    Returns:
        ``(B, 3, H_pad, W_pad)`` float32: ``(x / 255 - mean) / std`` inside each image,
        exactly 0 in the padding.
    """
    sizes = {padded_size((int(im.shape[0]), int(im.shape[1])), patch_size) for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images of one batch must share a padded size, got {sorted(sizes)}")
    (hp, wp) = sizes.pop()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    batch = torch.zeros((len(images), 3, hp, wp), dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        x = image.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0)
        batch[i, :, : x.shape[1], : x.shape[2]] = (x - mean_t) / std_t
    return batch


class SizeBuckets(Generic[T]):
    """Groups items by a key (the padded size) into batches, streaming.

    ``add`` returns full batches as they fill; when more than ``max_pending`` items wait,
    the fullest bucket is released early so memory stays bounded whatever the size mix.
    ``flush`` returns what is left. Every item comes out exactly once.
    """

    def __init__(self, batch_size: int, max_pending: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_pending = max_pending if max_pending is not None else 4 * batch_size
        self._buckets: dict[object, list[T]] = {}
        self._pending = 0

    def add(self, key: object, item: T) -> list[list[T]]:
        """Queue ``item`` under ``key``; return the batches now ready."""
        bucket = self._buckets.setdefault(key, [])
        bucket.append(item)
        self._pending += 1
        ready = []
        if len(bucket) == self.batch_size:
            ready.append(self._take(key))
        if self._pending > self.max_pending:
            ready.append(self._take(max(self._buckets, key=lambda k: len(self._buckets[k]))))
        return ready

    def flush(self) -> Iterator[list[T]]:
        """Yield every remaining bucket as a batch."""
        for key in list(self._buckets):
            yield self._take(key)

    def _take(self, key: object) -> list[T]:
        batch = self._buckets.pop(key)
        self._pending -= len(batch)
        return batch
