"""A run resolved: what :func:`objdisc.engine.runner.execute` needs, every option already checked.

:class:`RunPlan` holds the resolved inputs of one run (the dataset's records, the model's spec,
weights and register neurons, the method object, the features, the device type and precision)
and the settings derived from them once: the journal's settings (what decides the objects; a
journal made with other values is refused), the feature cache's identity and the ``run.json``
records. ``objdisc run`` builds it (:func:`objdisc.commands.run.resolve`) and passes it down; the
engine never reads an option twice, nor builds the method or the spec again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from objdisc.datasets import Dataset, ImageRecord
    from objdisc.methods import Method
    from objdisc.models.args import ResolvedModel
    from objdisc.models.feature_spec import FeatureSpec
    from objdisc.models.specs import BackboneSpec
    from objdisc.models.test_time_registers import RegisterNeurons

SETTINGS_FORMAT = 2  # journal settings: 2 = K objects per image, method options owned by the method


@dataclass
class RunPlan:
    """One run, resolved.

    Attributes:
        out: the run folder.
        dataset: the loaded dataset.
        records: the images of this run (the first ``--limit`` of the dataset), in dataset order.
        model: spec, weights and register neurons; the model itself is built on first need.
        method: the method object, built once.
        features: which features the method reads.
        device_type: ``cpu`` or ``cuda`` (each torchrun process takes its local GPU).
        precision: ``fp32``, ``bf16`` or ``fp16``, resolved for the device.
        settings: the journal's settings (:func:`journal_settings`).
        legacy: the settings an objdisc 0.1 journal of the same run held, where one could
            (:meth:`objdisc.methods.base.Method.legacy_settings`), or ``None``.
        discovery: features, layer, method and its options (and ``refine``, ``patch_resize``),
            as ``run.json`` records them.
        options: the options as given, JSON-able (``run.json`` ``options``).
        metrics: the metric names asked for, or ``None``: every one the dataset allows.
        batch_size, batch_tokens, workers, max_side, max_patches: the engine's knobs
            (:func:`objdisc.engine.discover.discover`).
        patch_resize: images are resized to the nearest patch multiple.
        refine: the saliency refinement (``none`` or ``bilateral``).
        overwrite: start over (objdisc's own files in ``out`` are deleted first).
        pseudo_labels: also write the objects as a COCO instances file here.
        cache: the feature cache folder, or ``None``.
        cache_identity: what decides the cached features besides the image.
        cache_features: more features to cache from the same forward pass (``objdisc sweep``).
        post_workers: processes for each image's host work after the method (0: the main process).
    """

    out: Path
    dataset: Dataset
    records: list[ImageRecord]
    model: ResolvedModel
    method: Method
    features: FeatureSpec
    device_type: str
    precision: str
    settings: dict[str, Any]
    discovery: dict[str, Any]
    options: dict[str, Any]
    legacy: dict[str, Any] | None = None
    metrics: tuple[str, ...] | None = None
    batch_size: int = 8
    batch_tokens: int | None = None
    workers: int | None = None
    max_side: int | None = None
    max_patches: int | None = None
    patch_resize: bool = False
    refine: str = "none"
    overwrite: bool = False
    pseudo_labels: Path | None = None
    cache: Path | None = None
    cache_identity: dict[str, Any] = field(default_factory=dict)
    cache_features: Sequence[FeatureSpec] = ()
    post_workers: int = 0

    @property
    def saliency_maps(self) -> bool:
        """Each image's saliency map is written (and scored where there is ground truth)."""
        return writes_maps(self.dataset.has_saliency, self.refine)

    @property
    def journal_dir(self) -> Path:
        return self.out / "journal"


def writes_maps(has_saliency: bool, refine: str) -> bool:
    """Whether a run writes each image's saliency map (OUT/masks): saliency datasets and ``--refine``."""
    return has_saliency or refine != "none"


def pos_embed_setting(spec: BackboneSpec) -> dict[str, str]:
    """The position-embedding recipe, for journals and caches: only where it is not timm's.

    DINO and DINOv2 without registers follow their release code's resizing, which changed
    their features from objdisc's first releases (timm's resizing): the key makes those
    journals refused and those cache entries misses. The other families' features did not
    change, so their journals and caches stay valid.
    """
    return {} if spec.pos_embed == "timm" else {"pos_embed": spec.pos_embed}


def resample_setting(resample_weights: bool) -> dict[str, Any]:
    """``--resample-weights``, for journals and caches: only when asked, so that other runs' stay valid."""
    return {"resample_weights": True} if resample_weights else {}


def ttr_setting(neurons: RegisterNeurons | None) -> dict[str, Any]:
    """Test-time registers, for journals and caches: only when there are some, so that the
    journals and caches of plain runs stay valid."""
    return {} if neurons is None else {"test_time_registers": neurons.identity()}


def journal_settings(
    model: ResolvedModel,
    dataset_name: str,
    no_hard: bool,
    max_side: int | None,
    precision: str,
    patch_resize: bool,
    discovery: dict[str, Any],
) -> dict[str, Any]:
    """What decides the objects; a journal made with other values is refused.

    Args:
        discovery: features, layer, method and its options (and ``refine``), without ``patch_resize``.
    """
    spec = model.spec
    return {
        "format": SETTINGS_FORMAT,
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(model.neurons),
        **resample_setting(model.args.resample_weights),
        "weights_sha256": model.weights.sha256,
        "dataset": dataset_name,
        "no_hard": no_hard,
        "max_side": max_side,
        "precision": precision,
        "model_kwargs": model.args.model_kwargs,
        **({"patch_resize": True} if patch_resize else {}),
        **discovery,
    }


def cache_identity(
    model: ResolvedModel, precision: str, max_side: int | None, input_side: int | None, patch_resize: bool
) -> dict[str, Any]:
    """What decides the cached features besides the image (see :mod:`objdisc.engine.feature_cache`).

    Args:
        input_side: the method's own input size (MaskCut's 480), or ``None``.
    """
    spec = model.spec
    return {
        **({"input_side": input_side} if input_side is not None else {}),
        **({"patch_resize": True} if patch_resize else {}),
        "timm_model": spec.timm_name,
        **pos_embed_setting(spec),
        **ttr_setting(model.neurons),
        **resample_setting(model.args.resample_weights),
        "weights_sha256": model.weights.sha256,
        "precision": precision,
        "max_side": max_side,
        "model_kwargs": model.args.model_kwargs,
    }


__all__ = [
    "SETTINGS_FORMAT",
    "RunPlan",
    "cache_identity",
    "journal_settings",
    "pos_embed_setting",
    "resample_setting",
    "ttr_setting",
    "writes_maps",
]
