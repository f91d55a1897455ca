"""Model construction: a :class:`Backbone` built from its spec (:mod:`objdisc.models.specs`) and weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.models.specs import BackboneSpec, get_spec

if TYPE_CHECKING:  # torch and timm take seconds to import; `objdisc backbones` needs neither
    import torch

    from objdisc.models.test_time_registers import RegisterNeurons
    from objdisc.models.weights import WeightsInfo

logger = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A built model with what produced it.

    Attributes:
        spec: the table entry.
        model: the timm ``VisionTransformer`` in eval mode, no classifier head.
        weights: where the weights came from and their sha256.
        test_time_registers: the register neurons of the model's test-time register
            (:mod:`objdisc.models.test_time_registers`), or ``None``.
    """

    spec: BackboneSpec
    model: torch.nn.Module
    weights: WeightsInfo
    test_time_registers: RegisterNeurons | None = None

    @property
    def patch_size(self) -> int:
        """Patch side in pixels, read off the model."""
        return int(self.model.patch_embed.patch_size[0])

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens, read off the model."""
        return int(self.model.num_prefix_tokens)


def build_model(spec: BackboneSpec, init: bool = True, **model_kwargs: Any) -> torch.nn.Module:
    """Random-init timm model for ``spec``: no head, ``dynamic_img_size=True``, position
    embeddings resized as the family's release code does (:attr:`BackboneSpec.pos_embed`).

    Args:
        spec: the backbone.
        init: run timm's weight initialisation; ``False`` skips it where the model allows
            (timm's ``VisionTransformer``: ``weight_init="skip"``), for a model whose every weight
            is loaded from a file next (half the build time of a ViT-S).
        model_kwargs: go to ``timm.create_model`` (e.g. ``depth=2`` in tests).
    """
    from objdisc.models.position_embeddings import RECIPES, apply_recipe

    kwargs: dict[str, Any] = {"num_classes": 0, "dynamic_img_size": True, **model_kwargs}
    model = _create(spec.timm_name, init, kwargs)
    apply_recipe(model, RECIPES[spec.pos_embed])
    return model


def _create(timm_name: str, init: bool, kwargs: dict[str, Any]) -> Any:
    """``timm.create_model`` without weights; without its initialisation when ``init`` is off and
    the model class takes ``weight_init`` (others build as usual)."""
    import timm

    if not init and "weight_init" not in kwargs:
        try:
            return timm.create_model(timm_name, pretrained=False, weight_init="skip", **kwargs)
        except TypeError:  # no weight_init argument (EVA and others)
            pass
    return timm.create_model(timm_name, pretrained=False, **kwargs)


def model_depth(spec: BackboneSpec, **model_kwargs: Any) -> int:
    """How many blocks the model has, read off it built on the meta device (no memory, no weights),
    remembered per model and arguments for the process's life.

    ``model_kwargs``: the extra ``timm.create_model`` arguments the run uses (``depth=2`` in tests).
    """
    import torch

    key = (spec.timm_name, repr(sorted(model_kwargs.items())))
    if key not in _DEPTHS:
        with torch.device("meta"):
            model = _create(spec.timm_name, False, {"num_classes": 0, **model_kwargs})
        _DEPTHS[key] = len(model.blocks)
    return _DEPTHS[key]


_DEPTHS: dict[tuple[str, str], int] = {}


def resolve_weights(spec: BackboneSpec, weights: str | Path | WeightsInfo | None = None) -> WeightsInfo:
    """Which file holds the weights, from where, and its sha256, without building the model.

    Args:
        spec: the backbone.
        weights: a local file (or a transformers ``save_pretrained`` folder), an already resolved
            :class:`WeightsInfo`, or ``None`` for timm's pretrained weights from the Hugging Face
            hub cache (downloaded on first use).
    """
    from objdisc.models.transformers_layout import check_config, weights_file_in
    from objdisc.models.weights import WeightsError, WeightsInfo, resolve_hub_weights
    from objdisc.utils.hashing import sha256_file

    if isinstance(weights, WeightsInfo):
        return weights
    if weights is None:
        path, source = resolve_hub_weights(spec.pretrained_cfg)
    else:
        path, source = Path(weights).expanduser(), "local"
        if path.is_dir():  # a transformers save_pretrained folder
            check_config(path)
            path = weights_file_in(path)
        elif path.is_file():
            check_config(path.parent)
        else:
            raise WeightsError(f"{path}: weights file not found")
    return WeightsInfo(path=str(path), source=source, sha256=sha256_file(path))


def create_backbone(
    name: str | BackboneSpec,
    weights: str | Path | WeightsInfo | None = None,
    device: str | torch.device = "cpu",
    test_time_registers: RegisterNeurons | None = None,
    resample_weights: bool = False,
    **model_kwargs: Any,
) -> Backbone:
    """Build a backbone and load its weights.

    Args:
        name: backbone name or alias (see :data:`BACKBONES`, :data:`ALIASES`), or its resolved spec.
        weights: local ``.safetensors`` / ``.pth`` file, in timm's layout or the upstream
            DINO / DINOv2 release layout; a resolved :class:`WeightsInfo`; or ``None``: timm's
            pretrained weights from the Hugging Face hub cache, downloaded on first use.
        device: where the model lives.
        test_time_registers: register neurons to give the model a test-time register
            (:class:`objdisc.models.test_time_registers.TestTimeRegisters`), or ``None``.
        resample_weights: load a file of another patch size or position grid by letting timm
            resample it (refused otherwise, naming the backbones that fit).
        model_kwargs: extra ``timm.create_model`` arguments.

    Returns:
        The :class:`Backbone`, in eval mode with gradients off.
    """
    from objdisc.models.weights import load_weights_file

    spec = name if isinstance(name, BackboneSpec) else get_spec(name)
    info = resolve_weights(spec, weights)
    model = build_model(spec, init=False, **model_kwargs)  # every weight comes from the file
    load_weights_file(model, Path(info.path), resample=resample_weights)
    model.eval().requires_grad_(False).to(device)
    if test_time_registers is not None:
        from objdisc.models.test_time_registers import TestTimeRegisters

        TestTimeRegisters(model, test_time_registers)
    logger.info("built %s (%s) with weights %s sha256=%s", spec.name, spec.timm_name, info.path, info.sha256)
    return Backbone(spec, model, info, test_time_registers)
