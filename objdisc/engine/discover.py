"""The discovery engine: decode in DataLoader workers, batch by padded size, features, method.

:func:`discover` takes image records and yields one :class:`ImageResult` per record;
:mod:`objdisc.engine.runner` wraps it with resume, torchrun, the evaluators and the output files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from objdisc.datasets import ImageRecord
from objdisc.engine.feature_cache import FeatureCache
from objdisc.engine.limits import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_PATCHES, batch_tokens_for
from objdisc.errors import OptionError
from objdisc.images import (
    ImageError,
    SizeBuckets,
    fixed_model_input,
    load_image,
    make_batch,
    padded_size,
    patch_multiple,
)
from objdisc.methods import Method
from objdisc.models.backbones import Backbone
from objdisc.models.features import LAST_KEYS, FeatureExtractor, FeatureSpec
from objdisc.objects import Objects, ObjectsBatch
from objdisc.utils.device import compute_context

logger = logging.getLogger(__name__)

# (record index, uint8 (h, w, 3) image, original (H, W)) waiting for a batch.
_Item = tuple[int, torch.Tensor, tuple[int, int]]


@dataclass(frozen=True)
class ImageResult:
    """What the engine made of one record.

    Attributes:
        record: the input.
        image_hw: original ``(H, W)`` in pixels, ``None`` when the image could not be read.
        objects: what the method found (boxes in original pixels), ``None`` when the image was
            skipped.
        error: why it was skipped.
        finalized: the objects are in the original image's pixels; ``False`` when the engine left
            the method's :meth:`~objdisc.methods.base.Method.finalize` to the caller
            (``discover(..., finalize=False)``: :mod:`objdisc.engine.post` does it off the main process).
    """

    record: ImageRecord
    image_hw: tuple[int, int] | None
    objects: Objects | None
    error: str | None = None
    finalized: bool = True


@dataclass
class StageTimes:
    """Seconds spent per stage in the main process (decode, and post-processing with
    ``--post-workers``, happen in worker processes)."""

    wait_decode: float = 0.0
    forward: float = 0.0
    method: float = 0.0
    post: float = 0.0  # the runner: post-processing in the main process, or waiting for its workers


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes record ``i`` to ``(i, uint8 (h, w, 3) tensor or None, original (H, W), error or None)``."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        max_side: int | None,
        max_patches: int | None,
        patch_size: int,
        fixed_side: int | None = None,
        patch_resize: bool = False,
    ) -> None:
        self.records = records
        self.options = {"max_side": max_side, "max_patches": max_patches, "patch_size": patch_size}
        self.fixed_side = fixed_side
        self.patch_resize = patch_resize

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, tuple[int, int] | None, str | None]:
        record = self.records[index]
        if record.error is not None:
            return index, None, None, record.error
        try:
            if self.fixed_side is not None:  # the affinity is of the fixed size, not of the photo's
                image, original = load_image(record.path, patch_size=self.options["patch_size"], member=record.member)
            else:
                image, original = load_image(record.path, **self.options, member=record.member)
            if self.fixed_side is not None:  # the method's own input size (MaskCut: 480 x 480)
                image = fixed_model_input(image, self.fixed_side, self.options["patch_size"])
            elif self.patch_resize:  # to the nearest patch multiple, as TokenCut's saliency code
                image = patch_multiple(image, self.options["patch_size"])
            return index, torch.from_numpy(np.ascontiguousarray(image)), original, None
        except ImageError as exc:
            return index, None, None, str(exc)


def default_workers() -> int:
    """Decode workers: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def discover(
    backbone: Backbone,
    records: Sequence[ImageRecord],
    *,
    method: Method,
    features: FeatureSpec = LAST_KEYS,
    cache: FeatureCache | None = None,
    cache_features: Sequence[FeatureSpec] = (),
    batch_size: int = 8,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_side: int | None = None,
    max_patches: int | None = DEFAULT_MAX_PATCHES,
    batch_tokens: int | None = None,
    times: StageTimes | None = None,
    patch_resize: bool = False,
    finalize: bool = True,
) -> Iterator[ImageResult]:
    """The objects of every record: the engine of :func:`objdisc.engine.runner.execute`.

    Images are batched only with images of the same padded size, at most ``batch_size`` of
    them and at most ``batch_tokens`` patches per batch (default: :data:`DEFAULT_BATCH_TOKENS`
    for the device); a batch of any size gives the same boxes as batch size 1. A batch that
    fails (e.g. out of memory) is retried image by image, and an image that still fails is
    yielded with its error: one bad image never stops the run.

    The batch loop never waits for the device: batch ``i``'s results are read back only after
    batch ``i + 1`` has been queued (for methods that stay on the device; an eigensolver on the host syncs).

    An image whose patch grid would exceed ``max_patches`` is refused from its header alone
    (the affinity is ``N x N``), unless ``max_side`` resizes it first; boxes of resized
    images are mapped back to the original pixels (seeds and masks stay on the resized grid,
    whose place the objects' geometry records).

    Args:
        features: which features the method reads.
        method: a method of :data:`objdisc.methods.METHODS`, built with its options.
        cache: where to store each image's features as they are computed (``features`` and
            every spec of ``cache_features``, all from one forward pass).
        patch_resize: resize each image to the nearest patch multiple instead of padding it
            (:func:`~objdisc.images.patch_multiple`); its masks map back as torch's
            nearest interpolation (:mod:`objdisc.objects`).
        finalize: run the method's pixel-level step here; ``False`` leaves it to the caller
            (the results are then ``finalized=False``: :func:`objdisc.engine.post.post_process`).

    Yields:
        One :class:`ImageResult` per record, in completion order (not record order).
    """
    device = torch.device(device)
    times = times if times is not None else StageTimes()
    workers = default_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(
            records, max_side, max_patches, backbone.patch_size, method.input_side(backbone.patch_size), patch_resize
        ),
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
    specs = [features, *(s for s in cache_features if s != features)] if cache is not None else [features]
    with FeatureExtractor(backbone.model, specs) as extractor:
        sampling = "nearest" if patch_resize else "centre"
        step = _BatchStep(
            backbone, extractor, features, method, cache, records, device, precision, times, sampling, finalize
        )
        pending: _Pending | None = None
        start = time.perf_counter()
        for index, image, original, error in loader:
            times.wait_decode += time.perf_counter() - start
            if image is None:
                yield ImageResult(records[index], None, None, error)
            else:
                key = padded_size((int(image.shape[0]), int(image.shape[1])), patch)
                for batch in buckets.add(key, (index, image, tuple(original))):
                    launched, failed = step.launch_safely(batch)
                    yield from failed
                    if pending is not None:  # read the previous batch back only now
                        yield from step.finish_safely(pending)
                    pending = launched
            start = time.perf_counter()
        for batch in buckets.flush():
            launched, failed = step.launch_safely(batch)
            yield from failed
            if pending is not None:
                yield from step.finish_safely(pending)
            pending = launched
        if pending is not None:
            yield from step.finish_safely(pending)


@dataclass
class _Pending:
    """A launched batch: items and device-side results not yet read back."""

    batch: list[_Item]
    hws: list[tuple[int, int]]
    objects: ObjectsBatch
    finite: torch.Tensor  # (B,) bool on the device: the image's features had no NaN / inf


@dataclass
class _BatchStep:
    """Launch (features, cache writes, method, all queued on the device) and finish (read back)."""

    backbone: Backbone
    extractor: FeatureExtractor
    features: FeatureSpec
    method: Method
    cache: FeatureCache | None
    records: Sequence[ImageRecord]
    device: torch.device
    precision: str
    times: StageTimes
    sampling: str = "centre"
    finalize: bool = True

    def launch(self, batch: list[_Item]) -> _Pending:
        start = time.perf_counter()
        patch = self.backbone.patch_size
        images = [image for _, image, _ in batch]
        hws = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        compute = compute_context(self.device.type, self.precision)
        with torch.inference_mode():
            x = make_batch(images, patch, self.backbone.spec.mean, self.backbone.spec.std, self.device)
            with compute:
                feats = self.extractor.extract(x)
            grid = (x.shape[-2] // patch, x.shape[-1] // patch)
            if self.cache is not None:
                self._store(batch, hws, feats, grid)
            middle = time.perf_counter()
            sizes = torch.tensor(hws, dtype=torch.long)
            if self.device.type == "cuda":  # pinned, so the copy does not wait for the queue
                sizes = sizes.pin_memory()
            sizes = sizes.to(self.device, non_blocking=True)
            used, finite = finite_features(feats[self.features])
            objects = self.method(used, grid, patch, sizes)
        self.times.forward += middle - start
        self.times.method += time.perf_counter() - middle
        return _Pending(batch, hws, objects, finite)

    def finish(self, pending: _Pending) -> list[ImageResult]:
        start = time.perf_counter()
        found = pending.objects.to_host(self.backbone.patch_size, pending.hws)  # the one sync per batch
        finite = pending.finite.cpu().tolist()
        self.times.method += time.perf_counter() - start
        out = []
        for (index, _, original), item, ok in zip(pending.batch, found, finite, strict=True):
            record = self.records[index]
            if ok and not self.finalize:
                out.append(ImageResult(record, original, with_sampling(item, self.sampling), finalized=False))
            elif ok:
                out.append(ImageResult(record, original, finalize(self.method, item, record, original, self.sampling)))
            else:
                out.append(ImageResult(record, original, None, non_finite_message(record, self.features)))
        return out

    def _store(
        self,
        batch: list[_Item],
        hws: list[tuple[int, int]],
        feats: dict[FeatureSpec, torch.Tensor],
        grid: tuple[int, int],
    ) -> None:
        assert self.cache is not None
        for spec, tensor in feats.items():
            host = tensor.cpu()
            for i, (index, _, original) in enumerate(batch):
                self.cache.put(self.records[index].path, spec, host[i], grid, hws[i], original)

    def launch_safely(self, batch: list[_Item]) -> tuple[_Pending | None, list[ImageResult]]:
        """Launch; on failure fall back to image-by-image, returning those results at once."""
        try:
            return self.launch(batch), []
        except OptionError:  # an option the model cannot take (e.g. a head it lacks): the run's fault
            raise
        except (RuntimeError, ValueError, OSError) as exc:
            return None, self._one_by_one(batch, exc)

    def finish_safely(self, pending: _Pending) -> list[ImageResult]:
        """Finish; a failure surfacing at the read-back (asynchronous CUDA errors) retries image by image."""
        try:
            return self.finish(pending)
        except OptionError:
            raise
        except (RuntimeError, ValueError) as exc:
            return self._one_by_one(pending.batch, exc)

    def _one_by_one(self, batch: list[_Item], exc: Exception) -> list[ImageResult]:
        if len(batch) == 1:
            index, _, original = batch[0]
            error = f"{self.records[index].path}: {type(exc).__name__}: {exc}"
            return [ImageResult(self.records[index], original, None, error)]
        logger.warning("batch of %d failed (%s); retrying image by image", len(batch), exc)
        out = []
        for item in batch:
            launched, failed = self.launch_safely([item])
            out += failed if launched is None else self.finish_safely(launched)
        return out


def discover_cached(
    records: Sequence[ImageRecord],
    cache: FeatureCache,
    *,
    method: Method,
    patch_size: int,
    features: FeatureSpec = LAST_KEYS,
    device: torch.device | str = "cpu",
    times: StageTimes | None = None,
    misses: list[ImageRecord] | None = None,
    patch_resize: bool = False,
    finalize_objects: bool = True,
) -> Iterator[ImageResult]:
    """:func:`discover` for records whose features are in ``cache``: no model, no decoding.

    Gives the objects :func:`discover` gives (the features are stored as the model made them).
    A record whose entry cannot be used (torn, made with other settings) goes to ``misses``
    when given, for the caller to run through the model; else it is yielded with an error.
    """
    device = torch.device(device)
    times = times if times is not None else StageTimes()
    for record in records:
        start = time.perf_counter()
        entry = cache.get(record.path, features)
        if entry is None:
            if misses is not None:
                misses.append(record)
            else:
                yield ImageResult(record, None, None, f"{record.path}: no usable cache entry in {cache.folder}")
            continue
        feats, finite = finite_features(entry.features.to(device)[None])
        sizes = torch.tensor([entry.image_hw], dtype=torch.long)
        middle = time.perf_counter()
        (item,) = method(feats, entry.grid_hw, patch_size, sizes.to(device)).to_host(patch_size, [entry.image_hw])
        times.wait_decode += middle - start
        times.method += time.perf_counter() - middle
        sampling = "nearest" if patch_resize else "centre"
        if bool(finite[0]) and not finalize_objects:
            yield ImageResult(record, entry.original_hw, with_sampling(item, sampling), finalized=False)
        elif bool(finite[0]):
            yield ImageResult(record, entry.original_hw, finalize(method, item, record, entry.original_hw, sampling))
        else:
            yield ImageResult(record, entry.original_hw, None, non_finite_message(record, features))


def finalize(
    method: Method, objects: Objects, record: ImageRecord, original: tuple[int, int], sampling: str = "centre"
) -> Objects:
    """The method's objects in the original image's pixels (:meth:`~objdisc.methods.base.Method.finalize`;
    the image is decoded again only if the method reads it); ``sampling`` says how a resized
    model input maps back (:class:`~objdisc.objects.Geometry`)."""
    return method.finalize(
        with_sampling(objects, sampling), lambda: load_image(record.path, member=record.member)[0], original
    )


def with_sampling(objects: Objects, sampling: str) -> Objects:
    """The objects with their geometry saying how the model input maps back (``centre`` or ``nearest``)."""
    if sampling != "centre" and objects.geometry is not None:
        return dataclasses.replace(objects, geometry=dataclasses.replace(objects.geometry, sampling=sampling))
    return objects


NON_FINITE = "non-finite features"


def finite_features(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, C)`` features with the images that hold a NaN or an infinity zeroed (so that the
    method runs on the batch), and ``(B,)`` bool: which images were finite. No host sync."""
    finite = torch.isfinite(feats).flatten(1).all(1)
    return torch.where(finite[:, None, None], feats, torch.zeros((), dtype=feats.dtype, device=feats.device)), finite


def non_finite_message(record: ImageRecord, spec: FeatureSpec) -> str:
    """Why an image with NaN / inf features is skipped, naming the file and what to check."""
    return (
        f"{record.path}: {NON_FINITE} (NaN or inf) in {spec.slug}: the weights hold such values, or the model "
        "overflowed in reduced precision (try --precision fp32)"
    )


__all__ = ["DEFAULT_BATCH_TOKENS", "DEFAULT_MAX_PATCHES", "ImageResult", "StageTimes", "discover", "discover_cached"]
