"""Image decoding, normalisation + padding, and batching by padded size.

Images are used at native size: decoded to RGB with the raw pixel grid (EXIF orientation
ignored, as annotations refer to the stored grid), normalised with the backbone's mean/std,
then zero-padded bottom and right to a multiple of the patch size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import cv2
import numpy as np

from objdisc.errors import ImageError

if TYPE_CHECKING:  # torch only where a batch is made: listing datasets needs none
    import torch

T = TypeVar("T")


# JPEG start-of-frame markers (all but DHT 0xC4, JPG 0xC8, DAC 0xCC) carry height and width.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class Member(NamedTuple):
    """An image stored inside another file (a member of a tar shard): where its bytes are.

    Attributes:
        offset: byte offset of the image's data in the file.
        size: its length in bytes.
        name: its name in the file, for messages.
    """

    offset: int
    size: int
    name: str


def read_image_bytes(path: str | Path, member: Member | None = None) -> bytes:
    """The bytes of an image file, or of an image stored in ``path`` at ``member``.

    Raises:
        OSError: the file cannot be read.
        ImageError: the member's bytes are cut short (a truncated shard).
    """
    if member is None:
        return Path(path).read_bytes()
    with open(path, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        where = f"{path} (member {member.name})"
        raise ImageError(f"{where}: cut short ({len(data)} of {member.size} bytes): a truncated shard")
    return data


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from a JPEG or PNG header without decoding pixels; ``None`` for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def max_side_scale(image_hw: tuple[int, int], max_side: int | None) -> float:
    """Scale factor (<= 1) that brings the longer side to at most ``max_side`` pixels."""
    if max_side is None or max(image_hw) <= max_side:
        return 1.0
    return max_side / max(image_hw)


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB at native size: :func:`load_image` without guard or resize."""
    return load_image(path)[0]


def load_image(
    path: str | Path,
    max_side: int | None = None,
    max_patches: int | None = None,
    patch_size: int = 16,
    member: Member | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file to RGB, guarding memory before any pixel is decoded.

    Grayscale, palette, CMYK and 16-bit images become 8-bit RGB; an alpha channel is dropped.
    The raw pixel grid is kept (EXIF orientation is ignored: annotations refer to it).

    Args:
        path: the file.
        max_side: resize so the longer side is at most this many pixels (``None``: native).
        max_patches: refuse an image whose patch grid (after ``max_side``) has more patches,
            reading only its header: LOST's affinity is ``N x N`` floats.
        patch_size: patch side in pixels, for ``max_patches``.
        member: the image is stored in ``path`` here (a tar shard's member), not ``path`` itself.

    Returns:
        ``((h, w, 3) uint8 RGB array, original (H, W))``; ``(h, w) == (H, W)`` unless
        ``max_side`` resized it.

    Raises:
        ImageError: naming the file when it is missing, empty, truncated, too large or not
            decodable.
    """
    where = f"{path} (member {member.name})" if member is not None else str(path)  # what messages name
    try:
        data = read_image_bytes(path, member)
    except OSError as exc:
        if Path(path).is_symlink() and not Path(path).exists():
            target = os.readlink(path)
            raise ImageError(f"{where}: broken symbolic link (its target {target} does not exist)") from exc
        raise ImageError(f"{where}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{where}: file is empty (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-65536:]:
        # OpenCV decodes a cut JPEG into a half-grey picture without complaint; refuse it.
        raise ImageError(f"{where}: truncated JPEG (no end-of-image marker; {len(data)} bytes)")
    size = header_size(data)
    if size is not None and max_patches is not None:
        _check_patches(where, size, max_side, max_patches, patch_size)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageError(f"{where}: not a decodable image ({len(data)} bytes)")
    if size is None and max_patches is not None:
        _check_patches(where, image.shape[:2], max_side, max_patches, patch_size)
    original = (int(image.shape[0]), int(image.shape[1]))
    scale = max_side_scale(original, max_side)
    if scale < 1.0:
        new_hw = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        image = cv2.resize(image, (new_hw[1], new_hw[0]), interpolation=cv2.INTER_AREA)
    # A numpy flip, not cv2.cvtColor: cvtColor starts OpenCV's thread pool, and a DataLoader
    # worker forked from a process whose pool is running deadlocks on its next OpenCV call.
    return np.ascontiguousarray(image[..., ::-1]), original


def patch_count(image_hw: tuple[int, int], patch_size: int, max_side: int | None = None) -> int:
    """Patches of the padded model input of an ``(H, W)`` image, after ``max_side`` (as :func:`load_image` sizes it)."""
    scale = max_side_scale(image_hw, max_side)
    hp, wp = padded_size((max(1, round(image_hw[0] * scale)), max(1, round(image_hw[1] * scale))), patch_size)
    return (hp // patch_size) * (wp // patch_size)


def _check_patches(
    path: str | Path, image_hw: tuple[int, int], max_side: int | None, max_patches: int, patch_size: int
) -> None:
    n = patch_count(image_hw, patch_size, max_side)
    if n > max_patches:
        gib = n * n * 4 / 2**30
        raise ImageError(
            f"{path}: {image_hw[1]}x{image_hw[0]} pixels make {n:,} patches of {patch_size} px, whose "
            f"{n:,}x{n:,} float32 affinity needs {gib:.1f} GiB (limit --max-patches {max_patches:,}); "
            f"pass --max-side to resize such images (boxes are mapped back)"
        )


def fixed_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """An image resized to ``side x side`` pixels with PIL's Lanczos filter, as maskcut.py resizes
    (the aspect ratio is not kept). ``(H, W, 3)`` uint8 RGB -> ``(side, side, 3)`` uint8 RGB."""
    from PIL import Image

    return np.array(Image.fromarray(np.ascontiguousarray(rgb)).resize((side, side), Image.Resampling.LANCZOS))


def fixed_model_input(rgb: np.ndarray, side: int, patch_size: int) -> np.ndarray:
    """What the model sees under a fixed square size: :func:`fixed_square`, then resized again to
    the nearest multiple of the patch size (Python's ``round``) when ``side`` is not one, as
    TokenCut's ``resize_pil`` does for maskcut.py."""
    from PIL import Image

    square = fixed_square(rgb, side)
    new = round(side / patch_size) * patch_size
    if new == side:
        return square
    return np.array(Image.fromarray(square).resize((new, new), Image.Resampling.LANCZOS))


def patch_multiple(rgb: np.ndarray, patch_size: int) -> np.ndarray:
    """The image resized to the nearest multiple of the patch size per side (Python's ``round``,
    at least one patch) with PIL's Lanczos filter, as TokenCut's ``resize_pil`` for its saliency
    code (``--patch-resize``); unchanged when it already is one.

    Args:
        rgb: ``(H, W, 3)`` uint8.
        patch_size: patch side in pixels.

    Returns:
        ``(H', W', 3)`` uint8, writable, ``H'`` and ``W'`` multiples of ``patch_size``.
    """
    from PIL import Image

    height, width = rgb.shape[:2]
    new_h = max(1, round(height / patch_size)) * patch_size
    new_w = max(1, round(width / patch_size)) * patch_size
    if (new_h, new_w) == (height, width):
        return np.array(rgb)
    return np.array(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.LANCZOS))


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
    import torch

    mean_t, std_t = _mean_std(tuple(mean), tuple(std), torch.device(device))
    batch = torch.zeros((len(images), 3, hp, wp), dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        x = image.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0)
        batch[i, :, : x.shape[1], : x.shape[2]] = (x - mean_t) / std_t
    return batch


@functools.lru_cache(maxsize=16)
def _mean_std(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3, 1, 1)`` mean and std on ``device``, made once: a fresh host->device copy per batch
    would wait for the GPU's queue to drain (a pageable copy is synchronous)."""
    import torch

    as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    return as_tensor(mean).view(3, 1, 1), as_tensor(std).view(3, 1, 1)


class SizeBuckets(Generic[T]):
    """Groups items by a key (the padded size) into batches, streaming.

    ``add`` returns a bucket as soon as it holds ``capacity(key)`` items (``batch_size`` by
    default); when more than ``max_pending`` items wait, the fullest bucket is released early
    so memory stays bounded whatever the size mix. ``flush`` returns what is left. Every item
    comes out exactly once.
    """

    def __init__(
        self,
        batch_size: int,
        max_pending: int | None = None,
        capacity: Callable[[Any], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_pending = max_pending if max_pending is not None else 4 * batch_size
        self._capacity = capacity
        self._buckets: dict[object, list[T]] = {}
        self._pending = 0

    def add(self, key: object, item: T) -> list[list[T]]:
        """Queue ``item`` under ``key``; return the batches now ready."""
        bucket = self._buckets.setdefault(key, [])
        bucket.append(item)
        self._pending += 1
        ready = []
        limit = self.batch_size if self._capacity is None else max(1, min(self.batch_size, self._capacity(key)))
        if len(bucket) >= limit:
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
