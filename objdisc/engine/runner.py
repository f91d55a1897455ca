"""``objdisc run``: dataset -> boxes -> CorLoc -> files, resumable, on one process or torchrun.

Every finished image goes to the journal (:mod:`objdisc.engine.journal`) first; the final files are
always built from the journal, in dataset order, by rank 0. So an uninterrupted run, a run
killed and resumed, and a torchrun run over N processes write the same predictions.json,
gt.json and per_image.json, and metrics.json differs only in its timing fields.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from objdisc.datasets import Dataset, ImageRecord, load_dataset
from objdisc.engine import distributed
from objdisc.engine.discover import (
    ImageResult,
    StageTimes,
    discover,
    discover_cached,
    resolve_device,
    resolve_precision,
)
from objdisc.engine.feature_cache import FeatureCache
from objdisc.engine.journal import Journal, read_journals
from objdisc.engine.limits import DEFAULT_MAX_PATCHES
from objdisc.engine.out_folder import OutLock, check_ours, clear_run, lock_out
from objdisc.errors import ObjdiscError, OptionError
from objdisc.evaluation.coco_export import coco_ground_truth, coco_predictions
from objdisc.evaluation.corloc import CorLoc, image_set
from objdisc.methods import Lost, TokenCut, make_method
from objdisc.models.backbones import Backbone, BackboneSpec, create_backbone, get_spec, resolve_weights
from objdisc.models.features import FeatureSpec
from objdisc.registers.test_time import RegisterNeurons, load_register_neurons
from objdisc.utils.jsonio import write_json_atomic
from objdisc.utils.provenance import now_iso, producer

logger = logging.getLogger(__name__)


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
    batch_tokens: int | None = None
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    limit: int | None = None
    max_side: int | None = None
    max_patches: int | None = DEFAULT_MAX_PATCHES
    overwrite: bool = False
    features: str = "k"
    layer: int = -1
    method: str = "lost"
    gram_bias: float = 0.0
    tau: float = 0.2
    cache: Path | None = None
    test_time_registers: str | None = None
    ttr_top: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_spec(self) -> FeatureSpec:
        """The features the method reads."""
        return FeatureSpec(self.features, self.layer)

    def make_method(self) -> Lost | TokenCut:
        """The method with its options (errors name an option the method does not take)."""
        return make_method(self.method, self.k_patches, self.gram_bias, self.tau)

    def register_neurons(self) -> RegisterNeurons | None:
        """The test-time registers' neurons (``None`` without); checks the two options."""
        if self.test_time_registers is None:
            if self.ttr_top is not None:
                raise OptionError("--ttr-top needs --test-time-registers")
            return None
        return load_register_neurons(self.test_time_registers, get_spec(self.backbone).name, self.ttr_top)

    def discovery(self) -> dict[str, Any]:
        """Features, layer, method and the method's own options, JSON-able; checks them all."""
        return {"features": self.feature_spec.kind, "layer": self.layer, **self.make_method().options()}

    def options(self) -> dict[str, Any]:
        """JSON-able options, as recorded in ``run.json``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RunResult:
    """Paths and figures of a finished run (``metrics`` is empty on ranks other than 0)."""

    out: Path
    metrics: dict[str, Any]
    producer: dict[str, Any]


def pos_embed_setting(spec: BackboneSpec) -> dict[str, str]:
    """The position-embedding recipe, for journals and caches: only where it is not timm's.

    DINO and DINOv2 without registers follow their release code's resizing, which changed
    their features from objdisc's first releases (timm's resizing): the key makes those
    journals refused and those cache entries misses. The other families' features did not
    change, so their journals and caches stay valid.
    """
    return {} if spec.pos_embed == "timm" else {"pos_embed": spec.pos_embed}


def ttr_setting(neurons: RegisterNeurons | None) -> dict[str, Any]:
    """Test-time registers, for journals and caches: only when there are some, so that the
    journals and caches of plain runs stay valid."""
    return {} if neurons is None else {"test_time_registers": neurons.identity()}


def box_settings(
    config: RunConfig,
    dataset: Dataset,
    spec: BackboneSpec,
    sha256: str,
    precision: str,
    neurons: RegisterNeurons | None = None,
) -> dict:
    """What decides the boxes; a journal made with other values is refused."""
    return {
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(neurons),
        "weights_sha256": sha256,
        "dataset": dataset.name,
        "no_hard": config.no_hard,
        "k_patches": config.k_patches,
        "max_side": config.max_side,
        "precision": precision,
        "model_kwargs": config.model_kwargs,
        **config.discovery(),
    }


def cache_identity(
    spec: BackboneSpec, sha256: str, precision: str, config: RunConfig, neurons: RegisterNeurons | None = None
) -> dict[str, Any]:
    """What decides the cached features besides the image (see :mod:`objdisc.engine.feature_cache`)."""
    return {
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(neurons),
        "weights_sha256": sha256,
        "precision": precision,
        "max_side": config.max_side,
        "model_kwargs": config.model_kwargs,
    }


def journal_entry(result: ImageResult) -> dict[str, Any]:
    """One journal line for a finished image."""
    found = result.found
    return {
        "image_id": result.record.image_id,
        "file_name": result.record.file_name,
        "hw": list(result.image_hw) if result.image_hw else None,
        "box": list(found.box) if found else None,
        "seed": found.seed if found else None,
        "error": result.error,
    }


def _finished(entry: dict[str, Any] | None, record: ImageRecord) -> bool:
    return entry is not None and entry["file_name"] == record.file_name and entry["box"] is not None


def run(
    config: RunConfig,
    backbone: Backbone | None = None,
    progress: bool | None = None,
    cache_features: Sequence[FeatureSpec] = (),
    label: str | None = None,
) -> RunResult:
    """``objdisc run``: one box per image, CorLoc, and the files in ``config.out``.

    Writes ``predictions.json`` (COCO results), ``gt.json`` (COCO ground truth of the
    evaluated images, or the image list for ``folder``), ``per_image.json``,
    ``metrics.json`` and ``run.json`` atomically, plus ``journal/`` as images finish.
    Rerunning into the same ``out`` resumes: finished images are not processed again, and a
    fully finished run only rewrites its files (the model is not even built).

    Args:
        config: the options.
        backbone: an already built backbone (else built from ``config`` when needed).
        progress: show a tqdm bar (rank 0 only); ``None`` shows it only on a terminal.
        cache_features: with ``config.cache``, more features to cache from the same forward
            pass (what ``objdisc sweep`` uses to fill the cache for every point at once).
        label: the progress bar's title (``objdisc sweep``: which grid point).
    """
    config.discovery()  # option errors first, before any slow work
    if backbone is None:
        get_spec(config.backbone)  # an unknown or unreadable model, before --out is touched
        config.register_neurons()
    elif (config.test_time_registers is None) != (backbone.test_time_registers is None):
        raise OptionError(
            "the backbone given and config.test_time_registers disagree: build the backbone with "
            "create_backbone(..., test_time_registers=config.register_neurons())"
        )
    dataset = load_dataset(
        config.dataset, config.data_root, config.images, config.annotations, config.split, config.no_hard
    )
    warn_dataset(dataset)
    records = dataset.records[: config.limit] if config.limit is not None else dataset.records
    warn_no_ground_truth(dataset, records)
    device_type = resolve_device(config.device).type
    rank = distributed.setup(device_type)
    lock: OutLock | None = None
    try:
        if rank.main:  # one writer per folder; other ranks write only their own journal in it
            lock = lock_out(Path(config.out))
            check_ours(Path(config.out))
        return _run(config, dataset, records, rank, backbone, progress, cache_features, label)
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(rank)


SHOWN_WARNINGS = 20


def warn_dataset(dataset: Dataset) -> None:
    """Log the dataset's annotation warnings: the first :data:`SHOWN_WARNINGS`, then how many more."""
    for warning in dataset.warnings[:SHOWN_WARNINGS]:
        logger.warning("%s: %s", warning["file_name"], warning["message"])
    if len(dataset.warnings) > SHOWN_WARNINGS:
        more = len(dataset.warnings) - SHOWN_WARNINGS
        logger.warning("... and %d more annotation warnings (all of them in metrics.json: dataset_warnings)", more)


def warn_no_ground_truth(dataset: Dataset, records: Sequence[ImageRecord]) -> None:
    """Say loudly which images have no ground-truth box: CorLoc leaves them out."""
    if not dataset.has_gt:
        return
    lacking = [r.file_name for r in records if r.no_ground_truth]
    if len(lacking) == len(records):
        logger.warning("none of the %d images has a ground-truth box: there will be boxes but no CorLoc", len(records))
    elif lacking:
        logger.warning(
            "%d of %d images have no ground-truth box (%s%s): they are left out of CorLoc "
            "and listed as no_ground_truth in metrics.json",
            len(lacking),
            len(records),
            ", ".join(lacking[:3]),
            ", ..." if len(lacking) > 3 else "",
        )


def _run(
    config: RunConfig,
    dataset: Dataset,
    records: list[ImageRecord],
    rank: distributed.Rank,
    backbone: Backbone | None,
    progress: bool | None,
    cache_features: Sequence[FeatureSpec] = (),
    label: str | None = None,
) -> RunResult:
    device = resolve_device(config.device, rank.local_rank)
    precision = resolve_precision(config.precision, device)
    spec = backbone.spec if backbone is not None else get_spec(config.backbone)
    weights = backbone.weights if backbone is not None else resolve_weights(spec, config.weights)
    neurons = backbone.test_time_registers if backbone is not None else config.register_neurons()
    settings = box_settings(config, dataset, spec, weights.sha256, precision, neurons)
    made_by = producer(spec, weights, device, precision)
    made_by["discovery"] = config.discovery()
    if neurons is not None:
        made_by["test_time_registers"] = neurons.describe()
    method, features = config.make_method(), config.feature_spec
    out = Path(config.out)
    journal_dir = out / "journal"
    if config.overwrite and rank.main:
        clear_run(out)
    distributed.barrier(rank)
    done = read_journals(journal_dir, settings)
    run_info = {
        "producer": made_by,
        "options": config.options(),
        "dataset": {"kind": config.dataset, "name": dataset.name, "image_root": str(dataset.image_root)},
        "n_records": len(records),
        "world_size": rank.world,
        "torch_threads": torch.get_num_threads(),
        "command": sys.argv,
        "started": now_iso(),
        "status": "running",
    }
    if rank.main:
        write_json_atomic(out / "run.json", run_info)

    mine = [records[i] for i in distributed.shard(len(records), rank)]
    # Finished means a box: images that failed before (unreadable, out of memory) are tried again.
    todo = [r for r in mine if not _finished(done.get(r.image_id), r)]
    times, start = StageTimes(), time.perf_counter()
    cache = (
        FeatureCache(config.cache, cache_identity(spec, weights.sha256, precision, config, neurons))
        if config.cache
        else None
    )
    if todo:
        logger.info(
            "rank %d: %d of %d images to do (%d already in the journal)",
            rank.rank,
            len(todo),
            len(mine),
            len(mine) - len(todo),
        )
        # The cache serves an image only when every asked feature is there; an entry that
        # turns out unusable when read goes back to the model with the uncached images.
        wanted = [features, *cache_features]
        cached = [r for r in todo if all(cache.has(r.path, s) for s in wanted)] if cache else []
        cached_ids = {r.image_id for r in cached}
        uncached = [r for r in todo if r.image_id not in cached_ids]

        def engine() -> Iterator[ImageResult]:
            nonlocal backbone
            misses: list[ImageRecord] = []
            if cached:
                assert cache is not None
                logger.info("rank %d: %d images from the feature cache %s", rank.rank, len(cached), cache.folder)
                yield from discover_cached(
                    cached,
                    cache,
                    features=features,
                    method=method,
                    patch_size=spec.patch_size,
                    device=device,
                    times=times,
                    misses=misses,
                )
            rest = uncached + misses
            if not rest:
                return
            if backbone is None:
                backbone = create_backbone(config.backbone, weights, device, neurons, **config.model_kwargs)
            backbone.model.to(device)
            yield from discover(
                backbone,
                rest,
                features=features,
                method=method,
                cache=cache,
                cache_features=cache_features,
                batch_size=config.batch_size,
                workers=config.workers,
                device=device,
                precision=precision,
                max_side=config.max_side,
                max_patches=config.max_patches,
                batch_tokens=config.batch_tokens,
                times=times,
            )

        _process(dataset, engine(), len(todo), rank, settings, journal_dir, progress, label)
    seconds = time.perf_counter() - start
    n_resumed = sum(_finished(done.get(r.image_id), r) for r in records)
    distributed.barrier(rank)
    if not rank.main:
        return RunResult(out, {}, made_by)

    entries = read_journals(journal_dir, settings)
    missing = [r.file_name for r in records if entries.get(r.image_id, {}).get("file_name") != r.file_name]
    if missing:
        raise ObjdiscError(f"{len(missing)} images have no result in {journal_dir} (first: {missing[0]})")
    metrics = _write_outputs(out, dataset, records, entries, made_by)
    metrics.update(
        seconds=round(seconds, 3),
        n_processed=len(records) - n_resumed,
        n_resumed=n_resumed,
        images_per_s=round(len(todo) * rank.world / seconds, 3) if todo and seconds > 0 else None,
        stage_seconds={k: round(v, 3) for k, v in asdict(times).items()},
    )
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "run.json", {**run_info, "status": "finished", "finished": now_iso()})
    return RunResult(out, metrics, made_by)


def _process(
    dataset: Dataset,
    engine: Iterable[ImageResult],
    total: int,
    rank: distributed.Rank,
    settings: dict[str, Any],
    journal_dir: Path,
    progress: bool | None,
    label: str | None = None,
) -> None:
    """Drain the engine, journaling each image as it finishes."""
    show = rank.main and (sys.stderr.isatty() if progress is None else progress)
    metric = CorLoc()
    parts = [label] if label else []
    parts += [f"rank 0/{rank.world}"] if rank.world > 1 else []
    desc = " ".join(parts) or None
    with (
        Journal(journal_dir, rank.rank, settings) as journal,
        tqdm(total=total, unit="img", desc=desc, disable=not show) as bar,
    ):
        for result in engine:
            journal.append(journal_entry(result))
            record = result.record
            if result.found is None:
                logger.warning("skipped %s", result.error)
                metric.skip(record.image_id, has_gt=not record.no_ground_truth)
            elif dataset.has_gt and record.gt_boxes is not None:
                metric.update(record.image_id, result.found.box, record.gt_boxes)
            if dataset.has_gt:  # before update(1), which redraws: the bar never lags an image
                score = metric.compute()
                bar.set_postfix_str(f"hits {score.n_hits}/{score.n_images}", refresh=False)
            bar.update(1)


def _write_outputs(
    out: Path, dataset: Dataset, records: list[ImageRecord], entries: dict[int, dict[str, Any]], made_by: dict
) -> dict[str, Any]:
    """predictions.json, gt.json, per_image.json from the journal entries, in dataset order."""
    metric = CorLoc()
    boxes: dict[int, tuple[int, int, int, int]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    per_image, skipped, no_gt = [], [], []
    for record in records:
        entry = entries[record.image_id]
        if entry["hw"] is not None:
            sizes[record.image_id] = (entry["hw"][0], entry["hw"][1])
        item: dict[str, Any] = {"image_id": record.image_id, "file_name": record.file_name}
        if dataset.has_gt and record.no_ground_truth:
            no_gt.append(record.file_name)
            item["no_ground_truth"] = True
        if entry["box"] is None:
            skipped.append({**item, "reason": entry["error"]})
            metric.skip(record.image_id, has_gt=not record.no_ground_truth)
        else:
            box = (entry["box"][0], entry["box"][1], entry["box"][2], entry["box"][3])
            boxes[record.image_id] = box
            item.update(box=list(box), seed=entry["seed"])
            if dataset.has_gt and record.gt_boxes is not None:
                best = metric.update(record.image_id, box, record.gt_boxes)
                if best is not None:
                    item.update(iou=round(best, 6), hit=best >= metric.threshold)
        per_image.append(item)
    score = metric.compute()
    write_json_atomic(out / "predictions.json", coco_predictions(boxes))
    write_json_atomic(out / "gt.json", coco_ground_truth(records, sizes, info={"producer": made_by}))
    write_json_atomic(out / "per_image.json", {"producer": made_by, "images": per_image})
    return {
        "producer": made_by,
        "dataset": dataset.name,
        "corloc": round(score.corloc, 4) if dataset.has_gt and score.corloc is not None else None,
        "n_images": len(records),
        "n_scored": score.n_images if dataset.has_gt else None,
        "n_hits": score.n_hits if dataset.has_gt else None,
        "no_ground_truth": len(no_gt) if dataset.has_gt else None,
        "no_ground_truth_images": no_gt,
        "image_set": image_set([r.image_id for r in records]),
        "n_boxes": len(boxes),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_excluded": len(dataset.excluded),
        "excluded": dataset.excluded,
        "dataset_warnings": dataset.warnings,
    }


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
    left_out = m.get("no_ground_truth") or 0
    note = f"; {left_out} without ground truth left out" if left_out else ""
    if m["corloc"] is not None:
        lines.append(f"CorLoc     {m['corloc']:.2f}%  ({m['n_hits']}/{m['n_scored']} hits{note})")
    elif m.get("n_scored") == 0:
        lines.append(f"CorLoc     none: no image has a ground-truth box ({left_out} images)")
    rate = f"{m['images_per_s']:.2f} images/s" if m["images_per_s"] else "nothing left to process"
    resumed = f" · {m['n_resumed']} resumed from the journal" if m["n_resumed"] else ""
    lines.append(f"time       {m['seconds']:.1f} s · {rate}{resumed}")
    for item in m["skipped"][:5]:
        lines.append(f"skipped    {item['reason']}")
    if m["n_skipped"] > 5:
        lines.append(f"skipped    … {m['n_skipped'] - 5} more in metrics.json")
    lines.append(f"output     {result.out}/ (predictions.json, gt.json, metrics.json, run.json)")
    return "\n".join(lines)
