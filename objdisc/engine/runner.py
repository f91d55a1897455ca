"""``objdisc run``: dataset -> objects -> metrics -> files, resumable, on one process or torchrun.

Every finished image goes to the journal (:mod:`objdisc.engine.journal`) first; the final
files are always built from the journal, in dataset order, by rank 0
(:mod:`objdisc.engine.run_files`). So an uninterrupted run, a run killed and resumed, and a
torchrun run over N processes write the same predictions.json, gt.json and per_image.json,
and metrics.json differs only in its timing fields.
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

from objdisc.datasets import DATASETS, Dataset, ImageRecord, load_dataset
from objdisc.engine import distributed
from objdisc.engine.discover import NON_FINITE, ImageResult, StageTimes, discover, discover_cached
from objdisc.engine.feature_cache import FeatureCache
from objdisc.engine.journal import Journal, file_stamp, finished, read_journals, same_file
from objdisc.engine.limits import DEFAULT_MAX_PATCHES
from objdisc.engine.out_folder import OutLock, check_not_a_run_file, check_ours, claim_file, clear_run, lock_out
from objdisc.engine.run_files import write_outputs
from objdisc.engine.saliency_maps import REFINERS, check_map_names, clear_maps, saliency_result
from objdisc.errors import ObjdiscError, OptionError
from objdisc.evaluation.coco_export import is_pseudo_label_file
from objdisc.evaluation.evaluator import default_evaluators
from objdisc.methods import MethodBase, make_method, method_class
from objdisc.methods.options import options_of
from objdisc.models.backbones import Backbone, create_backbone, model_depth, resolve_weights
from objdisc.models.feature_spec import FeatureSpec
from objdisc.models.specs import BackboneSpec, get_spec
from objdisc.models.test_time_registers import RegisterNeurons, load_register_neurons
from objdisc.utils.device import resolve_device, resolve_precision
from objdisc.utils.jsonio import write_json_atomic
from objdisc.utils.provenance import now_iso, producer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``objdisc run`` takes. Paths may be ``None`` where the dataset kind needs none.

    ``method_options`` are the method's own options (``{"k_patches": 50}``; the method's
    defaults for the others, :mod:`objdisc.methods`); ``features`` defaults to the method's
    own kind (keys for LOST and TokenCut, the CLS attention for DINO-seg).
    """

    backbone: str
    dataset: str
    out: Path
    weights: Path | None = None
    data_root: Path | None = None
    images: Path | None = None
    annotations: Path | None = None
    split: str = "trainval"
    no_hard: bool = False
    batch_size: int = 8
    batch_tokens: int | None = None
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    limit: int | None = None
    max_side: int | None = None
    max_patches: int | None = DEFAULT_MAX_PATCHES
    overwrite: bool = False
    features: str | None = None
    layer: int = -1
    method: str = "lost"
    method_options: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    test_time_registers: str | None = None
    ttr_top: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    resample_weights: bool = False
    metrics: tuple[str, ...] | None = None
    pseudo_labels: Path | None = None
    patch_resize: bool | None = None
    refine: str = "none"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RunConfig:
        """A config from ``run.json`` ``options`` (objdisc 0.1's ``k_patches`` / ``gram_bias`` / ``tau``
        become the method's options)."""
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        if "method_options" not in options:
            owned = {o.name for o in options_of(method_class(options.get("method", "lost")))}
            known["method_options"] = {k: options[k] for k in ("k_patches", "gram_bias", "tau") if k in owned}
        return cls(**known)

    @property
    def feature_spec(self) -> FeatureSpec:
        """The features the method reads (checked against the kinds the method takes)."""
        kinds = method_class(self.method).feature_kinds
        kind = self.features if self.features is not None else kinds[0]
        spec = FeatureSpec(kind, self.layer)
        if kind not in kinds:
            raise OptionError(f"--features {kind}: {self.method} reads {' or '.join(kinds)}")
        return spec

    def make_method(self) -> MethodBase:
        """The method with its options (errors name an option the method does not take)."""
        return make_method(self.method, **self.method_options)

    def register_neurons(self) -> RegisterNeurons | None:
        """The test-time registers' neurons (``None`` without); checks the two options."""
        if self.test_time_registers is None:
            if self.ttr_top is not None:
                raise OptionError("--ttr-top needs --test-time-registers")
            return None
        return load_register_neurons(self.test_time_registers, get_spec(self.backbone).name, self.ttr_top)

    def discovery(self) -> dict[str, Any]:
        """Features, layer, method and every option of the method (and ``refine`` when on), JSON-able;
        checks them all."""
        if self.refine not in REFINERS:
            raise OptionError(f"--refine {self.refine}: unknown; use one of {', '.join(REFINERS)}")
        refine = {"refine": self.refine} if self.refine != "none" else {}
        return {"features": self.feature_spec.kind, "layer": self.layer, **self.make_method().options(), **refine}

    def patch_resized(self, patch_size: int) -> bool:
        """Whether images are resized to the nearest patch multiple (``--patch-resize``; by default
        on the saliency datasets, as TokenCut's get_saliency.py, unless the method sizes images itself).

        Raises:
            OptionError: ``--patch-resize`` with ``--max-side``, or with a method's own input size.
        """
        own = self.make_method().input_side(patch_size)
        if self.patch_resize is None:
            return DATASETS[self.dataset].saliency and own is None and self.max_side is None
        if self.patch_resize and self.max_side is not None:
            raise OptionError("--patch-resize and --max-side: give one (each decides the image's size)")
        if self.patch_resize and own is not None:
            raise OptionError(
                f"--patch-resize: {self.method} resizes every image itself (--fixed-size {own}); "
                "pass --fixed-size 0 to size the images by --patch-resize"
            )
        return self.patch_resize

    def options(self) -> dict[str, Any]:
        """JSON-able options, as recorded in ``run.json``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def default_out(backbone: str, dataset: str) -> Path:
    """``objdisc run``'s default ``--out``: ``runs/<backbone>-<dataset>`` (``timm:hf-hub:org/name``
    makes no nested folders)."""
    safe = backbone.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{safe}-{dataset}"


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


def resample_setting(config: RunConfig) -> dict[str, Any]:
    """``--resample-weights``, for journals and caches: only when asked, so that other runs' stay valid."""
    return {"resample_weights": True} if config.resample_weights else {}


def ttr_setting(neurons: RegisterNeurons | None) -> dict[str, Any]:
    """Test-time registers, for journals and caches: only when there are some, so that the
    journals and caches of plain runs stay valid."""
    return {} if neurons is None else {"test_time_registers": neurons.identity()}


SETTINGS_FORMAT = 2  # journal settings: 2 = K objects per image, method options owned by the method


def box_settings(
    config: RunConfig,
    dataset: Dataset,
    spec: BackboneSpec,
    sha256: str,
    precision: str,
    neurons: RegisterNeurons | None = None,
) -> dict:
    """What decides the objects; a journal made with other values is refused."""
    return {
        "format": SETTINGS_FORMAT,
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(neurons),
        **resample_setting(config),
        "weights_sha256": sha256,
        "dataset": dataset.name,
        "no_hard": config.no_hard,
        "max_side": config.max_side,
        "precision": precision,
        "model_kwargs": config.model_kwargs,
        **({"patch_resize": True} if config.patch_resized(spec.patch_size) else {}),
        **config.discovery(),
    }


def legacy_settings(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The settings objdisc 0.1 journaled for the same LOST or TokenCut run (its top-level
    ``k_patches``, no ``format``), so that its journals still resume; ``None`` for other methods."""
    if settings["method"] not in ("lost", "tokencut") or settings["features"] not in ("k", "q", "v"):
        return None
    old = {k: v for k, v in settings.items() if k != "format"}
    old["k_patches"] = settings.get("k_patches", 100)
    return old


def cache_identity(
    spec: BackboneSpec, sha256: str, precision: str, config: RunConfig, neurons: RegisterNeurons | None = None
) -> dict[str, Any]:
    """What decides the cached features besides the image (see :mod:`objdisc.engine.feature_cache`)."""
    side = config.make_method().input_side(spec.patch_size)
    return {
        **({"input_side": side} if side is not None else {}),  # a method's own input size (MaskCut's 480)
        **({"patch_resize": True} if config.patch_resized(spec.patch_size) else {}),
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(neurons),
        **resample_setting(config),
        "weights_sha256": sha256,
        "precision": precision,
        "max_side": config.max_side,
        "model_kwargs": config.model_kwargs,
    }


def journal_entry(result: ImageResult, with_masks: bool = True) -> dict[str, Any]:
    """One journal line for a finished image (masks as RLEs unless ``with_masks`` is off), with its
    file's stamp: a resume redoes an image whose file changed."""
    return {
        "image_id": result.record.image_id,
        "file_name": result.record.file_name,
        "stamp": file_stamp(result.record.path),
        "hw": list(result.image_hw) if result.image_hw else None,
        "objects": result.objects.to_json(with_masks) if result.objects is not None else None,
        "error": result.error,
    }


def _finished(entry: dict[str, Any] | None, record: ImageRecord, stamp: list[int] | None) -> bool:
    """A result for this record's file as it is now (same name, same stamp)."""
    return finished(entry) and entry["file_name"] == record.file_name and same_file(entry, stamp)  # type: ignore[index]


def run(
    config: RunConfig,
    backbone: Backbone | None = None,
    progress: bool | None = None,
    cache_features: Sequence[FeatureSpec] = (),
    label: str | None = None,
) -> RunResult:
    """``objdisc run``: the objects of every image, every metric that applies, and the files in ``config.out``.

    Writes ``predictions.json`` (COCO results), ``gt.json`` (COCO ground truth of the
    evaluated images, or the image list for ``folder``), ``per_image.json``,
    ``metrics.json`` and ``run.json`` atomically, plus ``journal/`` as images finish
    (:mod:`objdisc.engine.run_files`). Rerunning into the same ``out`` resumes: finished images
    are not processed again, and a fully finished run only rewrites its files (the model is not
    even built).

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
        config.dataset, config.data_root, config.images, config.annotations, config.split, config.no_hard, config.out
    )
    warn_dataset(dataset)
    default_evaluators(dataset, config.metrics)  # an asked metric the dataset cannot give, before any work
    records = dataset.records[: config.limit] if config.limit is not None else dataset.records
    warn_no_ground_truth(dataset, records)
    check_annotated_sizes(records, config.annotations or config.data_root)
    if writes_maps(dataset, config):
        check_map_names(r.file_name for r in records)
    device_type = resolve_device(config.device).type
    rank = distributed.setup(device_type)
    lock: OutLock | None = None
    try:
        if rank.main:  # one writer per folder; other ranks write only their own journal in it
            lock = lock_out(Path(config.out))
            check_ours(Path(config.out))
            if config.pseudo_labels is not None:  # objdisc's own file is replaced; any other refused
                pseudo = Path(config.pseudo_labels)
                check_not_a_run_file(pseudo, Path(config.out), "--pseudo-labels")
                claim_file(pseudo, "objdisc run --pseudo-labels", True, is_pseudo_label_file, "--pseudo-labels")
        plan = _plan(config, dataset, rank, backbone, cache_features)
        try:
            return _execute(plan, records, progress, label)
        except OSError as exc:  # a full disk while writing the run's files
            if exc.filename is None or not Path(exc.filename).resolve().is_relative_to(Path(config.out).resolve()):
                raise
            raise ObjdiscError(
                f"{config.out}: cannot write the run's files ({exc.strerror or exc}); make room there and rerun "
                "the same command: it resumes from the journal, nothing journaled is computed again"
            ) from exc
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


SIZE_SAMPLE = 64  # images whose header is read before a run, to catch annotations of other sizes


def check_annotated_sizes(records: Sequence[ImageRecord], where: Path | None = None) -> None:
    """Refuse, before any work, a dataset whose images are mostly not the size their annotations say
    (the photos were resized after annotation: every box would be scored at the wrong scale).

    Reads the headers of up to :data:`SIZE_SAMPLE` annotated images spread over the set. A few
    mismatches only warn; each image's size is checked again as it is decoded
    (``metrics.json`` ``size_mismatch``).

    Raises:
        DatasetError: more than half of the images read disagree with their annotation.
    """
    from objdisc.datasets.base import DatasetError
    from objdisc.images import header_size

    annotated = [r for r in records if r.width and r.height]
    if not annotated:
        return
    step = max(1, len(annotated) // SIZE_SAMPLE)
    seen, wrong = 0, []
    for record in annotated[::step][:SIZE_SAMPLE]:
        try:
            with open(record.path, "rb") as f:
                size = header_size(f.read(1 << 18))
        except OSError:
            continue
        if size is None:
            continue
        seen += 1
        if size != (record.height, record.width):
            wrong.append(f"{record.file_name} is {size[1]}x{size[0]}, annotated {record.width}x{record.height}")
    if seen and len(wrong) * 2 > seen:
        raise DatasetError(
            f"{where or 'the annotations'}: {len(wrong)} of {seen} images read are not the size their annotation "
            f"says ({'; '.join(wrong[:2])}): were the photos resized after annotation? The boxes are for other "
            "pixels; give the annotations of these very images (or the images at their annotated size)"
        )
    if wrong:
        logger.warning(
            "%d of %d images read are not the size their annotation says (%s); their boxes are scored as annotated",
            len(wrong), seen, "; ".join(wrong[:2]),
        )  # fmt: skip


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


def warn_changed_files(
    done: dict[int, dict[str, Any]], records: Sequence[ImageRecord], stamps: dict[int, list[int] | None]
) -> None:
    """Say which journaled images are done again because their file changed, and when a journal of
    objdisc 0.1 (no file stamps) is resumed: its images are taken as journaled."""
    changed = [
        r.file_name
        for r in records
        if finished(done.get(r.image_id)) and not same_file(done[r.image_id], stamps[r.image_id])
    ]
    if changed:
        logger.warning(
            "%d journaled images are other files now (size or modification time changed: %s%s); they are done again",
            len(changed), ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "",
        )  # fmt: skip
    if any("stamp" not in e for e in done.values()):
        logger.warning(
            "the journal holds entries of objdisc 0.1, which recorded no file identity: images changed since "
            "those were journaled are not noticed (use --overwrite to redo them all)"
        )


@dataclass
class _Plan:
    """What one run needs once its options are resolved: built by :func:`_plan`, used by the steps."""

    config: RunConfig
    dataset: Dataset
    rank: distributed.Rank
    device: torch.device
    precision: str
    spec: BackboneSpec
    weights: Any
    neurons: RegisterNeurons | None
    settings: dict[str, Any]
    made_by: dict[str, Any]
    method: MethodBase
    features: FeatureSpec
    backbone: Backbone | None
    cache: FeatureCache | None
    cache_features: Sequence[FeatureSpec]
    patch_resize: bool = False

    @property
    def saliency_maps(self) -> bool:
        """Each image's saliency map is written (and scored where there is ground truth)."""
        return writes_maps(self.dataset, self.config)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def journal_dir(self) -> Path:
        return self.out / "journal"


def writes_maps(dataset: Dataset, config: RunConfig) -> bool:
    """Whether the run writes each image's saliency map (OUT/masks): saliency datasets and ``--refine``."""
    return dataset.has_saliency or config.refine != "none"


def _plan(
    config: RunConfig,
    dataset: Dataset,
    rank: distributed.Rank,
    backbone: Backbone | None,
    cache_features: Sequence[FeatureSpec],
) -> _Plan:
    """Resolve device, precision, backbone, weights, settings and provenance (no model built yet)."""
    device = resolve_device(config.device, rank.local_rank)
    precision = resolve_precision(config.precision, device)
    spec = backbone.spec if backbone is not None else get_spec(config.backbone)
    depth = len(backbone.model.blocks) if backbone is not None else model_depth(spec, **config.model_kwargs)
    config.feature_spec.block(depth)  # the layer exists, before anything is written
    method = config.make_method()
    method.check_ready()
    if method.input_side(spec.patch_size) is not None and config.max_side is not None:
        raise OptionError(
            f"--max-side does not apply to {config.method}, which resizes every image itself (--fixed-size)"
        )
    weights = backbone.weights if backbone is not None else resolve_weights(spec, config.weights)
    neurons = backbone.test_time_registers if backbone is not None else config.register_neurons()
    made_by = producer(spec, weights, device, precision)
    made_by["discovery"] = config.discovery()
    if config.patch_resized(spec.patch_size):
        made_by["discovery"]["patch_resize"] = True
    if neurons is not None:
        made_by["test_time_registers"] = neurons.describe()
    cache = (
        FeatureCache(config.cache, cache_identity(spec, weights.sha256, precision, config, neurons))
        if config.cache
        else None
    )
    settings = box_settings(config, dataset, spec, weights.sha256, precision, neurons)
    return _Plan(
        config, dataset, rank, device, precision, spec, weights, neurons, settings, made_by,
        method, config.feature_spec, backbone, cache, cache_features,
        config.patch_resized(spec.patch_size),
    )  # fmt: skip


def _execute(plan: _Plan, records: list[ImageRecord], progress: bool | None, label: str | None) -> RunResult:
    """Resume from the journal, process this rank's images, and (rank 0) write the files."""
    rank = plan.rank
    if plan.config.overwrite and rank.main:
        clear_run(plan.out)
        clear_maps(plan.out)
    distributed.barrier(rank)
    stamps = {r.image_id: file_stamp(r.path) for r in records}
    done, legacy = read_journals(plan.journal_dir, plan.settings, legacy_settings(plan.settings), stamps)
    warn_changed_files(done, records, stamps)
    run_info = _run_info(plan, len(records))
    if rank.main:
        write_json_atomic(plan.out / "run.json", run_info)
    mine = [records[i] for i in distributed.shard(len(records), rank)]
    # Finished means a result for the file as it is now: images that failed before (unreadable,
    # out of memory) or whose file changed since are done again.
    todo = [r for r in mine if not _finished(done.get(r.image_id), r, stamps[r.image_id])]
    times, start = StageTimes(), time.perf_counter()
    if todo:
        logger.info(
            "rank %d: %d of %d images to do (%d already in the journal)",
            rank.rank, len(todo), len(mine), len(mine) - len(todo),
        )  # fmt: skip
        # A resumed objdisc 0.1 journal holds no masks: none are added, so all images agree.
        _process(plan, _engine(plan, todo, times), len(todo), progress, label, with_masks=not legacy)
    seconds = time.perf_counter() - start
    n_resumed = sum(_finished(done.get(r.image_id), r, stamps[r.image_id]) for r in records)
    distributed.barrier(rank)
    if not rank.main:
        return RunResult(plan.out, {}, plan.made_by)
    metrics = _finish(plan, records, stamps)
    metrics.update(
        seconds=round(seconds, 3),
        n_processed=len(records) - n_resumed,
        n_resumed=n_resumed,
        images_per_s=round(len(todo) * rank.world / seconds, 3) if todo and seconds > 0 else None,
        stage_seconds={k: round(v, 3) for k, v in asdict(times).items()},
    )
    write_json_atomic(plan.out / "metrics.json", metrics)
    write_json_atomic(plan.out / "run.json", {**run_info, "status": "finished", "finished": now_iso()})
    skipped = metrics["skipped"]
    if records and len(skipped) == len(records) and all(NON_FINITE in str(s["reason"]) for s in skipped):
        raise ObjdiscError(
            f"every one of the {len(records)} images gave {NON_FINITE} (NaN or inf; first: {skipped[0]['reason']}); "
            f"no object was found: check the weights file, or run with --precision fp32 (files in {plan.out})"
        )
    return RunResult(plan.out, metrics, plan.made_by)


def _run_info(plan: _Plan, n_records: int) -> dict[str, Any]:
    """``run.json`` while the run is going (``status`` running)."""
    return {
        "producer": plan.made_by,
        "options": plan.config.options(),
        "dataset": {"kind": plan.config.dataset, "name": plan.dataset.name, "image_root": str(plan.dataset.image_root)},
        "n_records": n_records,
        "world_size": plan.rank.world,
        "torch_threads": torch.get_num_threads(),
        "command": sys.argv,
        "started": now_iso(),
        "status": "running",
    }


def _engine(plan: _Plan, todo: list[ImageRecord], times: StageTimes) -> Iterator[ImageResult]:
    """The images' results: from the feature cache where every asked feature is there, else the model.

    An entry that turns out unusable when read goes back to the model with the uncached images.
    """
    cache, features = plan.cache, plan.features
    wanted = [features, *plan.cache_features]
    cached = [r for r in todo if all(cache.has(r.path, s) for s in wanted)] if cache else []
    cached_ids = {r.image_id for r in cached}
    misses: list[ImageRecord] = []
    if cached:
        assert cache is not None
        logger.info("rank %d: %d images from the feature cache %s", plan.rank.rank, len(cached), cache.folder)
        yield from discover_cached(
            cached, cache, features=features, method=plan.method, patch_size=plan.spec.patch_size,
            device=plan.device, times=times, misses=misses, patch_resize=plan.patch_resize,
        )  # fmt: skip
    rest = [r for r in todo if r.image_id not in cached_ids] + misses
    if not rest:
        return
    if plan.backbone is None:
        config = plan.config
        plan.backbone = create_backbone(
            config.backbone, plan.weights, plan.device, plan.neurons, config.resample_weights, **config.model_kwargs
        )
    plan.backbone.model.to(plan.device)
    config = plan.config
    yield from discover(
        plan.backbone, rest, features=features, method=plan.method, cache=cache, cache_features=plan.cache_features,
        batch_size=config.batch_size, workers=config.workers, device=plan.device, precision=plan.precision,
        max_side=config.max_side, max_patches=config.max_patches, batch_tokens=config.batch_tokens, times=times,
        patch_resize=plan.patch_resize,
    )  # fmt: skip


def _process(
    plan: _Plan,
    engine: Iterable[ImageResult],
    total: int,
    progress: bool | None,
    label: str | None = None,
    with_masks: bool = True,
) -> None:
    """Drain the engine, journaling each image as it finishes; the bar shows the evaluators' progress."""
    rank = plan.rank
    show = rank.main and (sys.stderr.isatty() if progress is None else progress)
    evaluators = [e for e in default_evaluators(plan.dataset, plan.config.metrics) if e.name == "corloc"]
    for evaluator in evaluators:
        evaluator.reset()
    mismatched = 0
    parts = [label] if label else []
    parts += [f"rank 0/{rank.world}"] if rank.world > 1 else []
    desc = " ".join(parts) or None
    with (
        Journal(plan.journal_dir, rank.rank, plan.settings) as journal,
        tqdm(total=total, unit="img", desc=desc, disable=not show) as bar,
    ):
        for result in engine:
            if plan.saliency_maps:
                result = saliency_result(result, plan.out, plan.config.refine)
            journal.append(journal_entry(result, with_masks))
            if result.objects is None:
                logger.warning("skipped %s", result.error)
            record = result.record
            if result.image_hw and record.width and record.height and result.image_hw != (record.height, record.width):
                mismatched += 1
                if mismatched <= SHOWN_WARNINGS:
                    logger.warning(
                        "%s: decoded %dx%d, annotated %dx%d: its boxes are for another size",
                        record.path, result.image_hw[1], result.image_hw[0], record.width, record.height,
                    )  # fmt: skip
            for evaluator in evaluators:
                evaluator.process(result.record, result.objects)
            if evaluators:  # before update(1), which redraws: the bar never lags an image
                bar.set_postfix_str(" ".join(e.progress() for e in evaluators), refresh=False)
            bar.update(1)
    if mismatched > SHOWN_WARNINGS:
        logger.warning(
            "... and %d more images not of their annotated size (metrics.json: size_mismatch)",
            mismatched - SHOWN_WARNINGS,
        )


def _finish(plan: _Plan, records: list[ImageRecord], stamps: dict[int, list[int] | None]) -> dict[str, Any]:
    """Rank 0: every rank's journal -> the run's files (in dataset order) and the metrics."""
    entries, _ = read_journals(plan.journal_dir, plan.settings, legacy_settings(plan.settings), stamps)
    missing = [r.file_name for r in records if entries.get(r.image_id, {}).get("file_name") != r.file_name]
    if missing:
        raise ObjdiscError(f"{len(missing)} images have no result in {plan.journal_dir} (first: {missing[0]})")
    evaluators = default_evaluators(plan.dataset, plan.config.metrics)
    pseudo = Path(plan.config.pseudo_labels) if plan.config.pseudo_labels is not None else None
    return write_outputs(plan.out, plan.dataset, records, entries, plan.made_by, evaluators, pseudo)


def summary(result: RunResult) -> str:
    """A one-screen text summary of a finished run."""
    from objdisc.evaluation import EVALUATORS

    m, p = result.metrics, result.producer
    lines = [
        f"backbone   {p['backbone']} ({p['timm_model']}, patch {p['patch_size']}, {p['num_registers']} registers)",
        f"weights    {p['weights']['source']} sha256 {p['weights']['sha256'][:16]}…",
        f"device     {p['device_name']} · {p['precision']}",
        f"method     {p['discovery']['method']} on {p['discovery']['features']} of block {p['discovery']['layer']}",
        f"dataset    {m['dataset']}: {m['n_images']} images, {m['n_objects']} objects, {m['n_skipped']} skipped"
        + (f", {m['n_excluded']} excluded" if m["n_excluded"] else ""),
    ]
    for name, block in m["metrics"].items():
        evaluator = EVALUATORS.get(name)
        if evaluator is not None:
            lines.append(evaluator.summary_line(block))
    rate = f"{m['images_per_s']:.2f} images/s" if m["images_per_s"] else "nothing left to process"
    resumed = f" · {m['n_resumed']} resumed from the journal" if m["n_resumed"] else ""
    lines.append(f"time       {m['seconds']:.1f} s · {rate}{resumed}")
    for item in m["skipped"][:5]:
        lines.append(f"skipped    {item['reason']}")
    if m["n_skipped"] > 5:
        lines.append(f"skipped    … {m['n_skipped'] - 5} more in metrics.json")
    maps = "".join(f", {name}/" for name in ("masks", "soft") if (result.out / name).is_dir())
    lines.append(f"output     {result.out}/ (predictions.json, gt.json, metrics.json, run.json{maps})")
    return "\n".join(lines)
