"""The run: decode in DataLoader workers, batch by padded size, keys, LOST, score, write.

:func:`discover` is the box engine (records in, one :class:`ImageResult` per record out);
:func:`run` wraps it with dataset loading, CorLoc and the output files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from objdisc.backbones import Backbone, create_backbone
from objdisc.datasets import Dataset, ImageRecord, load_dataset
from objdisc.errors import DeviceError
from objdisc.export import coco_ground_truth, coco_predictions
from objdisc.images import ImageError, SizeBuckets, decode_image, make_batch, padded_size
from objdisc.jsonio import write_json_atomic
from objdisc.keys import KeyExtractor
from objdisc.methods.lost import LostResult, lost_batch, no_tf32
from objdisc.metrics import CorLoc
from objdisc.provenance import now_iso, producer

logger = logging.getLogger(__name__)

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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
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
    """Decodes record ``i`` to ``(i, uint8 (H, W, 3) tensor or None, error or None)``."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        record = self.records[index]
        if record.error is not None:
            return index, None, record.error
        try:
            return index, torch.from_numpy(decode_image(record.path)), None
        except ImageError as exc:
            return index, None, str(exc)


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
    times: StageTimes | None = None,
) -> Iterator[ImageResult]:
    """One box per record: the engine of :func:`run`.

    Images are batched only with images of the same padded size; a batch of any size gives
    the same boxes as batch size 1. A batch that fails (e.g. out of memory) is retried image
    by image, and an image that still fails is yielded with its error: one bad image never
    stops the run.

    Yields:
        One :class:`ImageResult` per record, in completion order (not record order).
    """
    device = torch.device(device)
    times = times if times is not None else StageTimes()
    workers = default_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(records),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 * batch_size if workers else None,
        persistent_workers=False,
    )
    patch = backbone.patch_size
    buckets: SizeBuckets[tuple[int, torch.Tensor]] = SizeBuckets(batch_size)
    with KeyExtractor(backbone.model) as extractor:

        def process(batch: list[tuple[int, torch.Tensor]]) -> Iterator[ImageResult]:
            try:
                yield from _process_batch(backbone, extractor, records, batch, device, precision, k_patches, times)
            except (RuntimeError, ValueError) as exc:
                if len(batch) > 1:
                    logger.warning("batch of %d failed (%s); retrying image by image", len(batch), exc)
                    for item in batch:
                        yield from process([item])
                else:
                    index, image = batch[0]
                    hw = (int(image.shape[0]), int(image.shape[1]))
                    yield ImageResult(records[index], hw, None, f"{records[index].path}: {type(exc).__name__}: {exc}")

        start = time.perf_counter()
        for index, image, error in loader:
            times.wait_decode += time.perf_counter() - start
            if image is None:
                yield ImageResult(records[index], None, None, error)
            else:
                key = padded_size((int(image.shape[0]), int(image.shape[1])), patch)
                for batch in buckets.add(key, (index, image)):
                    yield from process(batch)
            start = time.perf_counter()
        for batch in buckets.flush():
            yield from process(batch)


def _process_batch(
    backbone: Backbone,
    extractor: KeyExtractor,
    records: Sequence[ImageRecord],
    batch: list[tuple[int, torch.Tensor]],
    device: torch.device,
    precision: str,
    k_patches: int,
    times: StageTimes,
) -> list[ImageResult]:
    """Keys and LOST for one batch of ``(record index, uint8 (H, W, 3) image)`` pairs."""
    start = time.perf_counter()
    images = [image for _, image in batch]
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
    return [ImageResult(records[index], hw, result) for (index, _), hw, result in zip(batch, hws, results, strict=True)]


@dataclass(frozen=True)
class RunConfig:
    """Everything ``objdisc run`` takes. Paths may be ``None`` where the dataset kind needs none."""

    backbone: str
    dataset: str
    out: Path
    weights: Path | None = None
    data_root: Path | None = None
    images: Path | None = None
    annotations: Path | None = None
    split: str = "trainval"
    no_hard: bool = False
    k_patches: int = 100
    batch_size: int = 8
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    limit: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """JSON-able options, as recorded in ``run.json``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RunResult:
    """Paths and figures of a finished run."""

    out: Path
    metrics: dict[str, Any]
    producer: dict[str, Any]


def run(config: RunConfig, backbone: Backbone | None = None, progress: bool | None = None) -> RunResult:
    """``objdisc run``: dataset -> boxes -> CorLoc -> files in ``config.out``.

    Writes ``predictions.json`` (COCO results), ``gt.json`` (COCO ground truth of the
    evaluated images, or the image list for ``folder``), ``per_image.json``,
    ``metrics.json`` and ``run.json``, each atomically.

    Args:
        config: the options.
        backbone: an already built backbone (else built from ``config``).
        progress: show a tqdm bar; ``None`` shows it only on a terminal.
    """
    dataset = load_dataset(
        config.dataset, config.data_root, config.images, config.annotations, config.split, config.no_hard
    )
    records = dataset.records[: config.limit] if config.limit is not None else dataset.records
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if backbone is None:
        backbone = create_backbone(config.backbone, config.weights, device, **config.model_kwargs)
    else:
        backbone.model.to(device)
    made_by = producer(backbone, device, precision)
    out = Path(config.out)
    run_info = {
        "producer": made_by,
        "options": config.options(),
        "dataset": {"kind": config.dataset, "name": dataset.name, "image_root": str(dataset.image_root)},
        "n_records": len(records),
        "command": sys.argv,
        "started": now_iso(),
        "status": "running",
    }
    write_json_atomic(out / "run.json", run_info)

    metric, times = CorLoc(), StageTimes()
    boxes: dict[int, tuple[int, int, int, int]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    per_image, skipped = [], []
    start = time.perf_counter()
    bar = tqdm(total=len(records), unit="img", disable=(not sys.stderr.isatty()) if progress is None else not progress)
    engine = discover(
        backbone,
        records,
        batch_size=config.batch_size,
        workers=config.workers,
        device=device,
        precision=precision,
        k_patches=config.k_patches,
        times=times,
    )
    with contextlib.closing(bar):
        for result in engine:
            record = result.record
            if result.image_hw is not None:
                sizes[record.image_id] = result.image_hw
            entry: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name}
            if result.lost is None:
                skipped.append({**entry, "reason": result.error})
                metric.skip(record.image_id)
                logger.warning("skipped %s", result.error)
            else:
                boxes[record.image_id] = result.lost.box
                entry.update(box=list(result.lost.box), seed=result.lost.seed)
                if dataset.has_gt and record.gt_boxes is not None:
                    best = metric.update(record.image_id, result.lost.box, record.gt_boxes)
                    entry.update(iou=round(best, 6), hit=best >= metric.threshold)
            per_image.append(entry)
            bar.update(1)
            if dataset.has_gt:
                score = metric.compute()
                bar.set_postfix_str(f"hits {score.n_hits}/{score.n_images}", refresh=False)
    seconds = time.perf_counter() - start

    score = metric.compute()
    order = {record.image_id: i for i, record in enumerate(records)}
    per_image.sort(key=lambda e: order[e["image_id"]])
    boxes = dict(sorted(boxes.items(), key=lambda kv: order[kv[0]]))
    metrics: dict[str, Any] = {
        "producer": made_by,
        "dataset": dataset.name,
        "corloc": round(score.corloc, 4) if dataset.has_gt else None,
        "n_images": len(records),
        "n_hits": score.n_hits if dataset.has_gt else None,
        "n_boxes": len(boxes),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_excluded": len(dataset.excluded),
        "excluded": dataset.excluded,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(records) / seconds, 3) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 3) for k, v in asdict(times).items()},
    }
    write_json_atomic(out / "predictions.json", coco_predictions(boxes))
    write_json_atomic(out / "gt.json", coco_ground_truth(records, sizes, info={"producer": made_by}))
    write_json_atomic(out / "per_image.json", {"producer": made_by, "images": per_image})
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "run.json", {**run_info, "status": "finished", "finished": now_iso()})
    return RunResult(out, metrics, made_by)


def summary(result: RunResult) -> str:
    """A one-screen text summary of a finished run."""
    m, p = result.metrics, result.producer
    lines = [
        f"backbone   {p['backbone']} ({p['timm_model']}, patch {p['patch_size']}, {p['num_registers']} registers)",
        f"weights    {p['weights']['source']} sha256 {p['weights']['sha256'][:16]}…",
        f"device     {p['device_name']} · {p['precision']}",
        f"dataset    {m['dataset']}: {m['n_images']} images, {m['n_boxes']} boxes, {m['n_skipped']} skipped"
        + (f", {m['n_excluded']} excluded" if m["n_excluded"] else ""),
    ]
    if m["corloc"] is not None:
        lines.append(f"CorLoc     {m['corloc']:.2f}%  ({m['n_hits']}/{m['n_images']} hits)")
    lines.append(f"time       {m['seconds']:.1f} s · {m['images_per_s'] or 0:.2f} images/s")
    for item in m["skipped"][:5]:
        lines.append(f"skipped    {item['reason']}")
    if m["n_skipped"] > 5:
        lines.append(f"skipped    … {m['n_skipped'] - 5} more in metrics.json")
    lines.append(f"output     {result.out}/ (predictions.json, gt.json, metrics.json, run.json)")
    return "\n".join(lines)


__all__ = ["Dataset", "ImageResult", "RunConfig", "RunResult", "discover", "run", "summary"]
