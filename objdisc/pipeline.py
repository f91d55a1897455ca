"""The box engine: decode in DataLoader workers, batch by padded size, keys, LOST.

:func:`discover` takes image records and yields one :class:`ImageResult` per record;
:mod:`objdisc.runner` wraps it with datasets, resume, torchrun, CorLoc and the output files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from objdisc.backbones import Backbone
from objdisc.datasets import ImageRecord
from objdisc.errors import DeviceError
from objdisc.images import ImageError, SizeBuckets, load_image, make_batch, map_box, padded_size
from objdisc.keys import KeyExtractor
from objdisc.limits import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_PATCHES, batch_tokens_for
from objdisc.methods.lost import LostResult, lost_batch, no_tf32

logger = logging.getLogger(__name__)

# (record index, uint8 (h, w, 3) image, original (H, W)) waiting for a batch.
_Item = tuple[int, torch.Tensor, tuple[int, int]]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ImageResult:
    """What the engine made of one record.

    Attributes:
        record: the input.
        image_hw: decoded ``(H, W)`` in pixels, ``None`` when the image could not be read.
        lost: the LOST result, ``None`` when the image was skipped.
        error: why it was skipped.
    """

    record: ImageRecord
    image_hw: tuple[int, int] | None
    lost: LostResult | None
    error: str | None = None


@dataclass
class StageTimes:
    """Seconds spent per stage in the main process (decode happens in workers)."""

    wait_decode: float = 0.0
    forward: float = 0.0
    lost: float = 0.0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.

    Under torchrun each process takes the GPU of its ``local_rank``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device} asked for, but torch sees no CUDA GPU")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` on CPU; else checked against :data:`PRECISIONS`."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)} or auto")
    return precision


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes record ``i`` to ``(i, uint8 (h, w, 3) tensor or None, original (H, W), error or None)``."""

    def __init__(
        self, records: Sequence[ImageRecord], max_side: int | None, max_patches: int | None, patch_size: int
    ) -> None:
        self.records = records
        self.options = {"max_side": max_side, "max_patches": max_patches, "patch_size": patch_size}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, tuple[int, int] | None, str | None]:
        record = self.records[index]
        if record.error is not None:
            return index, None, None, record.error
        try:
            image, original = load_image(record.path, **self.options)
            return index, torch.from_numpy(image), original, None
        except ImageError as exc:
            return index, None, None, str(exc)


def default_workers() -> int:
    """Decode workers: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def discover(
    backbone: Backbone,
    records: Sequence[ImageRecord],
    *,
    batch_size: int = 8,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    k_patches: int = 100,
    max_side: int | None = None,
    max_patches: int | None = DEFAULT_MAX_PATCHES,
    batch_tokens: int | None = None,
    times: StageTimes | None = None,
) -> Iterator[ImageResult]:
    """One box per record: the engine of :func:`objdisc.runner.run`.

    Images are batched only with images of the same padded size, at most ``batch_size`` of
    them and at most ``batch_tokens`` patches per batch (default: :data:`DEFAULT_BATCH_TOKENS`
    for the device); a batch of any size gives the same boxes as batch size 1. A batch that
    fails (e.g. out of memory) is retried image by image, and an image that still fails is
    yielded with its error: one bad image never stops the run.

    An image whose patch grid would exceed ``max_patches`` is refused from its header alone
    (LOST's affinity is ``N x N``), unless ``max_side`` resizes it first; boxes of resized
    images are mapped back to the original pixels (seed and mask stay on the resized grid).

    Yields:
        One :class:`ImageResult` per record, in completion order (not record order).
    """
    device = torch.device(device)
    times = times if times is not None else StageTimes()
    workers = default_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(records, max_side, max_patches, backbone.patch_size),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 * batch_size if workers else None,
        persistent_workers=False,
    )
    patch = backbone.patch_size
    budget = batch_tokens if batch_tokens is not None else batch_tokens_for(device.type)
    buckets: SizeBuckets[_Item] = SizeBuckets(
        batch_size, capacity=lambda hw: budget // ((hw[0] // patch) * (hw[1] // patch))
    )
    with KeyExtractor(backbone.model) as extractor:

        def process(batch: list[_Item]) -> Iterator[ImageResult]:
            try:
                yield from _process_batch(backbone, extractor, records, batch, device, precision, k_patches, times)
            except (RuntimeError, ValueError) as exc:
                if len(batch) > 1:
                    logger.warning("batch of %d failed (%s); retrying image by image", len(batch), exc)
                    for item in batch:
                        yield from process([item])
                else:
                    index, _, original = batch[0]
                    error = f"{records[index].path}: {type(exc).__name__}: {exc}"
                    yield ImageResult(records[index], original, None, error)

        start = time.perf_counter()
        for index, image, original, error in loader:
            times.wait_decode += time.perf_counter() - start
            if image is None:
                yield ImageResult(records[index], None, None, error)
            else:
                key = padded_size((int(image.shape[0]), int(image.shape[1])), patch)
                for batch in buckets.add(key, (index, image, tuple(original))):
                    yield from process(batch)
            start = time.perf_counter()
        for batch in buckets.flush():
            yield from process(batch)


def _process_batch(
    backbone: Backbone,
    extractor: KeyExtractor,
    records: Sequence[ImageRecord],
    batch: list[_Item],
    device: torch.device,
    precision: str,
    k_patches: int,
    times: StageTimes,
) -> list[ImageResult]:
    """Keys and LOST for one batch of ``(record index, uint8 (H, W, 3) image)`` pairs."""
    start = time.perf_counter()
    images = [image for _, image, _ in batch]
    hws = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    # fp32 means fp32: no autocast, and no TF32 on CUDA (whose cuDNN default would use it).
    compute = torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision != "fp32" else no_tf32()
    with torch.inference_mode():
        x = make_batch(images, backbone.patch_size, backbone.spec.mean, backbone.spec.std, device)
        with compute:
            keys = extractor(x)
        grid = (x.shape[-2] // backbone.patch_size, x.shape[-1] // backbone.patch_size)
        middle = time.perf_counter()
        results = lost_batch(keys, grid, backbone.patch_size, hws, k_patches)  # syncs with the device
    end = time.perf_counter()
    times.forward += middle - start
    times.lost += end - middle
    out = []
    for (index, _, original), hw, result in zip(batch, hws, results, strict=True):
        if hw != original:  # resized by --max-side: the box goes back to the original pixels
            result = dataclasses.replace(result, box=map_box(result.box, hw, original))
        out.append(ImageResult(records[index], original, result))
    return out


__all__ = [
    "DEFAULT_BATCH_TOKENS",
    "DEFAULT_MAX_PATCHES",
    "PRECISIONS",
    "ImageResult",
    "StageTimes",
    "discover",
    "resolve_device",
    "resolve_precision",
]
