"""``objdisc run``: the options (:class:`RunConfig`), resolved once into a plan, executed by the engine.

:func:`resolve` checks every option and resolves the inputs once, before anything is written:
the method object (built here and only here), the features, the backbone spec, the register
neurons, the dataset and its records, the device type and precision, the weights file and its
sha256, and the settings derived from them (:class:`~objdisc.engine.plan.RunPlan`). The engine
(:func:`objdisc.engine.runner.execute`) runs that plan. :func:`run` is both: the command, and its
Python API.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.datasets import DATASETS, Dataset, DatasetArgs, ImageRecord
from objdisc.datasets.checks import check_annotated_sizes, check_images_found, warn_dataset, warn_no_ground_truth
from objdisc.engine.limits import DEFAULT_MAX_PATCHES
from objdisc.engine.out_folder import check_creatable, check_not_a_run_file, check_out, claim_file
from objdisc.engine.plan import RunPlan, cache_identity, journal_settings, writes_maps
from objdisc.engine.runner import RunResult, execute
from objdisc.engine.saliency_maps import REFINERS, check_map_names
from objdisc.errors import OptionError
from objdisc.evaluation import EVALUATORS, default_evaluators
from objdisc.evaluation.coco_export import is_pseudo_label_file
from objdisc.methods import Method, make_method, method_class
from objdisc.methods.options import options_of
from objdisc.models.args import ModelArgs, ResolvedModel
from objdisc.models.feature_spec import FeatureSpec
from objdisc.models.specs import BackboneSpec

if TYPE_CHECKING:
    from objdisc.models.backbones import Backbone

logger = logging.getLogger(__name__)

# run.json's "options": the flat keys objdisc has always written, in this order.
_MODEL_KEYS = ("backbone", "weights", "resample_weights", "test_time_registers", "ttr_top", "model_kwargs")
_DATA_KEYS = ("dataset", "data_root", "images", "annotations", "split", "no_hard", "classes")
_OPTION_ORDER = (
    "backbone", "dataset", "out", "weights", "data_root", "images", "annotations", "split", "no_hard",
    "batch_size", "batch_tokens", "workers", "device", "precision", "limit", "max_side", "max_patches",
    "overwrite", "features", "layer", "method", "method_options", "cache", "test_time_registers", "ttr_top",
    "model_kwargs", "resample_weights", "metrics", "pseudo_labels", "patch_resize", "refine", "post_workers",
    "classes", "shard",
)  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    """Everything ``objdisc run`` takes: plain data, checked by :func:`resolve`.

    Attributes:
        model: which model (:class:`~objdisc.models.args.ModelArgs`).
        data: which images (:class:`~objdisc.datasets.DatasetArgs`).
        out: the run folder.
        method: a name of :data:`objdisc.methods.METHODS`; ``method_options`` its own options
            (``{"k_patches": 50}``; the method's defaults for the others).
        features: the feature kind the method reads (default: the method's own: keys for LOST
            and TokenCut, the CLS attention for DINO-seg), of block ``layer``.
        The others: as ``objdisc run --help`` says.
    """

    model: ModelArgs
    data: DatasetArgs
    out: Path
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
    metrics: tuple[str, ...] | None = None
    pseudo_labels: Path | None = None
    patch_resize: bool | None = None
    refine: str = "none"
    post_workers: int | None = None
    shard: str | None = None

    @classmethod
    def flat(cls, backbone: str, dataset: str, out: str | Path, **options: Any) -> RunConfig:
        """A config from the flat option names of ``objdisc run`` (``weights=``, ``images=``, ``workers=``, ...).

        Raises:
            TypeError: an option ``objdisc run`` does not have.
        """
        model = {k: options.pop(k) for k in _MODEL_KEYS[1:] if k in options}
        data = {k: options.pop(k) for k in _DATA_KEYS[1:] if k in options}
        return cls(ModelArgs(backbone, **model), DatasetArgs(dataset, **data), Path(out), **options)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RunConfig:
        """A config from ``run.json`` ``options`` (objdisc 0.1's ``k_patches`` / ``gram_bias`` / ``tau``
        become the method's options)."""
        known = {k: v for k, v in options.items() if k in _OPTION_ORDER}
        if "method_options" not in options:
            owned = {o.name for o in options_of(method_class(options.get("method", "lost")))}
            known["method_options"] = {k: options[k] for k in ("k_patches", "gram_bias", "tau") if k in owned}
        if known.get("metrics") is not None:
            known["metrics"] = tuple(known["metrics"])
        paths = ("weights", "data_root", "images", "annotations", "cache", "pseudo_labels")
        known |= {k: Path(known[k]) for k in paths if known.get(k) is not None}
        return cls.flat(known.pop("backbone"), known.pop("dataset"), known.pop("out"), **known)

    def options(self) -> dict[str, Any]:
        """JSON-able options, as recorded in ``run.json`` (flat, the keys objdisc has always written)."""
        values = {
            **{k: getattr(self.model, k) for k in _MODEL_KEYS},
            **{k: getattr(self.data, k) for k in _DATA_KEYS},
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "data")},
        }
        return {k: (str(values[k]) if isinstance(values[k], Path) else values[k]) for k in _OPTION_ORDER}


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard i/N`` -> ``(i, N)``: the ``i``-th of ``N`` exact, contiguous parts of the images
    (after ``--limit``), numbered from 0, as torchrun's ranks split them.

    Raises:
        OptionError: not ``i/N`` with ``0 <= i < N``.
    """
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise OptionError(f"--shard {text}: give i/N, the i-th of N shards counted from 0 (e.g. 0/8 ... 7/8)") from None
    if n < 1:
        raise OptionError(f"--shard {text}: N, the number of shards, must be at least 1")
    if not 0 <= i < n:
        raise OptionError(f"--shard {text}: shards of {n} are numbered 0 to {n - 1}")
    return i, n


def select_records(config: RunConfig, dataset: Dataset) -> list[ImageRecord]:
    """The images a run takes of its dataset: the first ``--limit``, then the ``--shard`` of them.

    Raises:
        OptionError: a bad ``--shard``, or a shard holding no image.
    """
    records = dataset.records[: config.limit] if config.limit is not None else dataset.records
    if config.shard is None:
        return list(records)
    index, count = parse_shard(config.shard)
    taken = records[len(records) * index // count : len(records) * (index + 1) // count]
    if not taken:
        raise OptionError(f"--shard {config.shard}: this shard holds no image (the set has fewer than {count})")
    return list(taken)


def default_out(backbone: str, dataset: str) -> Path:
    """``objdisc run``'s default ``--out``: ``runs/<backbone>-<dataset>`` (``timm:hf-hub:org/name``
    makes no nested folders)."""
    safe = backbone.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{safe}-{dataset}"


@dataclass(frozen=True)
class Discovery:
    """The method side of a run, resolved: the method object, its features and how images are sized.

    Attributes:
        method: the method, built once with its options.
        features: the feature kind and block it reads.
        patch_resize: images resized to the nearest patch multiple (``--patch-resize``).
        record: features, layer, the method and its options, and ``refine`` when on, JSON-able:
            what decides the objects besides the model and the images.
    """

    method: Method
    features: FeatureSpec
    patch_resize: bool
    record: dict[str, Any]

    def run_record(self) -> dict[str, Any]:
        """``run.json``'s ``producer.discovery``: :attr:`record`, the method's options that do not
        decide the objects (its eigen-solver), and ``patch_resize`` when on."""
        return {**self.record, **self.method.options(), **({"patch_resize": True} if self.patch_resize else {})}


def _method_and_features(config: RunConfig) -> tuple[Method, FeatureSpec, dict[str, Any]]:
    """The method object (the run's one construction), its features and the discovery record.

    Raises:
        OptionError: an unknown method, an option it does not take or refuses, a feature kind it
            does not read, an unknown ``--refine``.
    """
    method = make_method(config.method, **config.method_options)
    kinds = type(method).feature_kinds
    kind = config.features if config.features is not None else kinds[0]
    features = FeatureSpec(kind, config.layer)
    if kind not in kinds:
        raise OptionError(f"--features {kind}: {config.method} reads {' or '.join(kinds)}")
    if config.refine not in REFINERS:
        raise OptionError(f"--refine {config.refine}: unknown; use one of {', '.join(REFINERS)}")
    refine = {"refine": config.refine} if config.refine != "none" else {}
    return method, features, {"features": kind, "layer": config.layer, **method.options(deciding_only=True), **refine}


def _patch_resize(config: RunConfig, method: Method, patch_size: int) -> bool:
    """Whether images are resized to the nearest patch multiple (``--patch-resize``; by default
    on the saliency datasets, as TokenCut's get_saliency.py, unless the method sizes images itself).

    Raises:
        OptionError: ``--patch-resize`` with ``--max-side``, or with a method's own input size.
    """
    own = method.input_side(patch_size)
    if config.patch_resize is None:
        saliency = config.data.dataset in DATASETS and DATASETS[config.data.dataset].saliency
        return saliency and own is None and config.max_side is None and not type(method).pads
    if config.patch_resize and config.max_side is not None:
        raise OptionError("--patch-resize and --max-side: give one (each decides the image's size)")
    if config.patch_resize and own is not None:
        raise OptionError(
            f"--patch-resize: {config.method} resizes every image itself (--fixed-size {own}); "
            "pass --fixed-size 0 to size the images by --patch-resize"
        )
    return config.patch_resize


def _finish_discovery(
    config: RunConfig, method: Method, features: FeatureSpec, record: dict[str, Any], spec: BackboneSpec
) -> Discovery:
    """The discovery of an already built method, once the model's patch size is known."""
    if method.input_side(spec.patch_size) is not None and config.max_side is not None:
        raise OptionError(
            f"--max-side does not apply to {config.method}, which resizes every image itself (--fixed-size)"
        )
    return Discovery(method, features, _patch_resize(config, method, spec.patch_size), record)


def resolve_discovery(config: RunConfig, spec: BackboneSpec) -> Discovery:
    """The method side of ``config`` for a model of ``spec`` (what ``objdisc visualize`` redoes).

    Raises:
        OptionError: any option of the method side the model or the method refuses.
    """
    return _finish_discovery(config, *_method_and_features(config), spec)


def check_outputs(config: RunConfig) -> None:
    """Refuse, before any work and without creating anything, an output the run could not write at
    the end: ``--out`` (a file, busy, others' files, read-only), ``--pseudo-labels`` (a folder, a
    file objdisc did not write, a read-only place, one of the run's own files), ``--cache``.

    Raises:
        OptionError: naming the option and what to do.
    """
    out = Path(config.out)
    check_out(out)
    if config.pseudo_labels is not None:  # objdisc's own file is replaced; any other refused
        pseudo = Path(config.pseudo_labels)
        check_not_a_run_file(pseudo, out, "--pseudo-labels")
        claim_file(pseudo, "objdisc run --pseudo-labels", True, is_pseudo_label_file, "--pseudo-labels")
    if config.cache is not None:
        cache = Path(config.cache)
        if cache.exists() and not cache.is_dir():
            raise OptionError(f"--cache {cache}: is a file, not a folder; give a folder for the feature cache")
        if cache.is_dir() and not os.access(cache, os.W_OK | os.X_OK):
            raise OptionError(f"--cache {cache}: the folder is not writable; choose a writable place")
        if not cache.exists():
            check_creatable(cache, "--cache", "the folder")


SIZE_SAMPLE = 64  # images whose header is read to check --max-patches before a run


def check_patch_limit(
    records: Sequence[ImageRecord], config: RunConfig, patch_size: int, input_side: int | None
) -> None:
    """Refuse a ``--max-patches`` no image can meet (every image would be skipped).

    With a method's own input size (MaskCut's 480) the grid is known; otherwise the headers of up to
    :data:`SIZE_SAMPLE` images spread over the set are read.

    Raises:
        OptionError: naming the limit, the smallest grid and the fix.
    """
    from objdisc.images import header_size, patch_count

    limit = config.max_patches
    if limit is None:
        return
    if input_side is not None:
        side = round(input_side / patch_size) * patch_size
        n = (side // patch_size) ** 2
        if n > limit:
            raise OptionError(
                f"--max-patches {limit:,}: {config.method} resizes every image to {side}x{side} pixels, {n:,} patches "
                f"of {patch_size} px; give --max-patches {n:,} or more (or a smaller --fixed-size)"
            )
        return
    step = max(1, len(records) // SIZE_SAMPLE)
    smallest: tuple[int, str, tuple[int, int]] | None = None
    for record in records[::step][:SIZE_SAMPLE]:
        try:
            with open(record.path, "rb") as f:
                size = header_size(f.read(1 << 18))
        except OSError:
            continue
        if size is None:
            continue
        n = patch_count(size, patch_size, config.max_side)
        if n <= limit:
            return
        if smallest is None or n < smallest[0]:
            smallest = (n, record.file_name, size)
    if smallest is not None:
        n, name, (h, w) = smallest
        raise OptionError(
            f"--max-patches {limit:,}: none of the images looked at fits (the smallest, {name} at {w}x{h} pixels, "
            f"makes {n:,} patches of {patch_size} px): every image would be skipped; raise --max-patches or pass "
            "--max-side"
        )


def resolve(
    config: RunConfig, backbone: Backbone | None = None, cache_features: Sequence[FeatureSpec] = ()
) -> RunPlan:
    """Check every option and resolve the run's inputs once (nothing is written).

    Args:
        config: the options.
        backbone: an already built backbone (else built from ``config.model`` when needed).
        cache_features: with ``config.cache``, more features to cache from the same forward pass
            (what ``objdisc sweep`` uses to fill the cache for every point at once).

    Raises:
        ObjdiscError: a bad option, model, weights file, neurons file or dataset, each named.
    """
    import torch

    from objdisc.models.backbones import model_depth, resolve_weights
    from objdisc.utils.device import resolve_device, resolve_precision

    method, features, record = _method_and_features(config)  # option errors first, before any slow work
    check_outputs(config)  # every path the run will write, before any slow work and without touching it
    model_args = config.model
    if backbone is None:
        spec = model_args.spec()  # an unknown or unreadable model, before anything else is read
        neurons = model_args.register_neurons(spec)
    else:
        resolved = model_args.resolve(backbone)  # checks the backbone's registers against the options
        spec, neurons = resolved.spec, resolved.neurons
    dataset = config.data.load(exclude=config.out)
    warn_dataset(dataset)
    default_evaluators(dataset, config.metrics)  # an asked metric the dataset cannot give, before any work
    records = select_records(config, dataset)
    check_images_found(records, "--images" if config.data.images is not None else "--data-root")
    warn_no_ground_truth(dataset, records)
    check_annotated_sizes(records, config.data.annotations or config.data.data_root)
    if writes_maps(dataset.has_saliency, config.refine):
        check_map_names(r.file_name for r in records)
    device_type = resolve_device(config.device).type
    precision = resolve_precision(config.precision, torch.device(device_type))
    depth = len(backbone.model.blocks) if backbone is not None else model_depth(spec, **model_args.model_kwargs)
    features.block(depth)  # the layer exists, before anything is written
    method.check_ready()
    discovery = _finish_discovery(config, method, features, record, spec)
    patch_resize = discovery.patch_resize
    check_patch_limit(records, config, spec.patch_size, method.input_side(spec.patch_size))
    weights = backbone.weights if backbone is not None else resolve_weights(spec, model_args.weights)
    model = ResolvedModel(model_args, spec, weights, neurons, backbone)
    settings = journal_settings(
        model, dataset.name, config.data.no_hard, config.max_side, precision, patch_resize, record
    )
    side = method.input_side(spec.patch_size)
    return RunPlan(
        out=Path(config.out),
        dataset=dataset,
        records=records,
        model=model,
        method=method,
        features=features,
        device_type=device_type,
        precision=precision,
        settings=settings,
        discovery=discovery.run_record(),
        options=config.options(),
        legacy=method.legacy_settings(settings),
        metrics=config.metrics,
        batch_size=config.batch_size,
        batch_tokens=config.batch_tokens,
        workers=config.workers,
        max_side=config.max_side,
        max_patches=config.max_patches,
        patch_resize=patch_resize,
        refine=config.refine,
        overwrite=config.overwrite,
        pseudo_labels=Path(config.pseudo_labels) if config.pseudo_labels is not None else None,
        cache=Path(config.cache) if config.cache is not None else None,
        cache_identity=cache_identity(model, precision, config.max_side, side, patch_resize),
        cache_features=cache_features,
        post_workers=_post_workers(config, method),
    )


def _post_workers(config: RunConfig, method: Method) -> int:
    """``--post-workers``; by default, where each image has heavy host work after the method (a
    method that reads the image again, as MaskCut's CRF; the bilateral solver), the cores the main
    process and the decode workers leave free, else 0 (mask encoding alone stays in the main process)."""
    from objdisc.engine.discover import default_workers
    from objdisc.engine.post_pool import default_post_workers

    if config.post_workers is not None:
        return config.post_workers
    if not (type(method).needs_image or config.refine != "none"):
        return 0
    return default_post_workers(config.workers if config.workers is not None else default_workers())


def run(
    config: RunConfig,
    backbone: Backbone | None = None,
    progress: bool | None = None,
    cache_features: Sequence[FeatureSpec] = (),
    label: str | None = None,
) -> RunResult:
    """``objdisc run``: the objects of every image, every metric that applies, and the files in ``config.out``.

    :func:`resolve` then :func:`objdisc.engine.runner.execute` (which says what is written).
    Rerunning into the same ``out`` resumes: finished images are not processed again, and a fully
    finished run only rewrites its files (the model is not even built).

    Args:
        config: the options.
        backbone: an already built backbone (else built from ``config`` when needed).
        progress: show a tqdm bar (rank 0 only); ``None`` shows it only on a terminal.
        cache_features: see :func:`resolve`.
        label: the progress bar's title (``objdisc sweep``: which grid point).
    """
    return execute(resolve(config, backbone, cache_features), progress, label)


def fetch_dataset(data: DatasetArgs, progress: bool | None = None) -> str:
    """``--download``: fetch the dataset if it is missing; returns the line saying what was done.

    Raises:
        OptionError: a dataset kind that cannot be downloaded.
    """
    from objdisc.datasets import resolve_data_root
    from objdisc.datasets.download.get import DOWNLOADABLE, get_dataset

    if data.dataset not in DOWNLOADABLE:
        raise OptionError(f"--download works for {', '.join(DOWNLOADABLE)}, not {data.dataset}")
    return get_dataset(data.dataset, resolve_data_root(data.data_root), progress=progress)


def summary(result: RunResult) -> str:
    """A one-screen text summary of a finished run."""
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


__all__ = [
    "Discovery",
    "RunConfig",
    "RunResult",
    "check_outputs",
    "check_patch_limit",
    "default_out",
    "fetch_dataset",
    "parse_shard",
    "resolve",
    "resolve_discovery",
    "run",
    "select_records",
    "summary",
]
