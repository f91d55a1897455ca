"""The backbone table and model construction.

One frozen :class:`BackboneSpec` per backbone in :data:`BACKBONES`, keyed by short names,
plus :data:`ALIASES`. Everything else about a backbone (mean/std, licence, hub id) is read
from timm's own pretrained config, never retyped here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.errors import BackboneError

if TYPE_CHECKING:  # torch and timm take seconds to import; `objdisc backbones` needs neither
    import torch

    from objdisc.ttr import RegisterNeurons
    from objdisc.weights import WeightsInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    Attributes:
        name: objdisc's short name, e.g. ``dinov2_reg_vits14``.
        timm_name: timm model name with pretrained tag, e.g.
            ``vit_small_patch14_reg4_dinov2.lvd142m``.
        family: ``dino``, ``dinov2``, ``dinov2_reg``, ``dinov3``, ``deit3``, ``openclip`` or
            ``timm_reg``.
        patch_size: patch side in pixels.
        num_registers: register tokens besides CLS (0 for no-register models).
        params_m: parameter count of the trunk (no head), millions.
        license: licence of the pretrained weights (as timm's pretrained config says; a test
            checks the two agree).
        class_token: whether the model has a CLS token (timm's ``*_gap`` models do not).
        twin: on a register model, the same model trained without registers (for the "+reg"
            column of ``objdisc table``).
    """

    name: str
    timm_name: str
    family: str
    patch_size: int
    num_registers: int
    params_m: float
    license: str = "apache-2.0"
    class_token: bool = True
    twin: str | None = None

    @property
    def pos_embed(self) -> str:
        """How position embeddings are resized to other grids: a recipe of :mod:`objdisc.posembed`."""
        return FAMILY_POS_EMBED[self.family][0]

    @property
    def pos_embed_note(self) -> str:
        """Whose resizing that is, in a few words (``objdisc backbones``)."""
        return FAMILY_POS_EMBED[self.family][1]

    @property
    def num_prefix_tokens(self) -> int:
        """CLS (if any) + registers: what the model drops before the patch tokens."""
        return int(self.class_token) + self.num_registers

    @property
    def pretrained_cfg(self) -> Any:
        """timm's ``PretrainedCfg`` for :attr:`timm_name` (mean/std, licence, hub id, url)."""
        import timm
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.timm_name)
        if cfg is None:
            raise BackboneError(f"timm {timm.__version__} has no pretrained config {self.timm_name!r}; upgrade timm")
        return cfg

    @property
    def mean(self) -> tuple[float, float, float]:
        """RGB normalisation mean (on images scaled to [0, 1])."""
        return tuple(float(v) for v in self.pretrained_cfg.mean)  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        """RGB normalisation std (on images scaled to [0, 1])."""
        return tuple(float(v) for v in self.pretrained_cfg.std)  # type: ignore[return-value]


# family -> (position-embedding recipe of objdisc.posembed, whose it is). The release code is
# the reference: DINO and DINOv2 without registers resize differently from timm; DINOv2 with
# registers resizes as timm does; DINOv3 has RoPE (no learned table), whose coordinates timm
# computes as the release does; the others have no variable-size release path to follow.
FAMILY_POS_EMBED: dict[str, tuple[str, str]] = {
    "dino": ("dino-release", "release (dino: +0.1 offset, no antialias)"),
    "dinov2": ("dinov2-release", "release (dinov2: +0.1 offset, no antialias, fp32)"),
    "dinov2_reg": ("timm", "release = timm (antialias, size=)"),
    "dinov3": ("timm", "RoPE, release = timm"),
    "deit3": ("timm", "timm (no variable-size release)"),
    "openclip": ("timm", "timm (no variable-size release)"),
    "timm_reg": ("timm", "timm (no variable-size release)"),
}


def _spec(name: str, timm_name: str, family: str, patch: int, regs: int, params: float, **kw: Any) -> BackboneSpec:
    return BackboneSpec(name, timm_name, family, patch, regs, params, **kw)


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        _spec("dino_vits16", "vit_small_patch16_224.dino", "dino", 16, 0, 21.67),
        _spec("dino_vits8", "vit_small_patch8_224.dino", "dino", 8, 0, 21.67),
        _spec("dino_vitb16", "vit_base_patch16_224.dino", "dino", 16, 0, 85.80),
        _spec("dino_vitb8", "vit_base_patch8_224.dino", "dino", 8, 0, 85.81),
        _spec("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m", "dinov2", 14, 0, 22.06),
        _spec("dinov2_vitb14", "vit_base_patch14_dinov2.lvd142m", "dinov2", 14, 0, 86.58),
        _spec("dinov2_vitl14", "vit_large_patch14_dinov2.lvd142m", "dinov2", 14, 0, 304.37),
        _spec("dinov2_vitg14", "vit_giant_patch14_dinov2.lvd142m", "dinov2", 14, 0, 1136.48),
        _spec(
            "dinov2_reg_vits14",
            "vit_small_patch14_reg4_dinov2.lvd142m",
            "dinov2_reg",
            14,
            4,
            22.06,
            twin="dinov2_vits14",
        ),
        _spec(
            "dinov2_reg_vitb14",
            "vit_base_patch14_reg4_dinov2.lvd142m",
            "dinov2_reg",
            14,
            4,
            86.58,
            twin="dinov2_vitb14",
        ),
        _spec(
            "dinov2_reg_vitl14",
            "vit_large_patch14_reg4_dinov2.lvd142m",
            "dinov2_reg",
            14,
            4,
            304.37,
            twin="dinov2_vitl14",
        ),
        _spec(
            "dinov2_reg_vitg14",
            "vit_giant_patch14_reg4_dinov2.lvd142m",
            "dinov2_reg",
            14,
            4,
            1136.48,
            twin="dinov2_vitg14",
        ),
        # DINOv3: 4 registers and RoPE; features are read before the rotary embedding
        # (see objdisc.features). The weights are gated on the hub: accept the licence there first.
        # timm's `_qkvb` variants: the release attention has q and v biases (the k third masked
        # to 0); timm's plain dinov3 models have none and drop them from a release file.
        _spec(
            "dinov3_vits16", "vit_small_patch16_dinov3_qkvb.lvd1689m", "dinov3", 16, 4, 21.60, license="dinov3-license"
        ),
        _spec(
            "dinov3_vitb16", "vit_base_patch16_dinov3_qkvb.lvd1689m", "dinov3", 16, 4, 85.66, license="dinov3-license"
        ),
        # The registers paper reads values (--features v) for DeiT-III and OpenCLIP.
        _spec("deit3_vitb16", "deit3_base_patch16_224.fb_in22k_ft_in1k", "deit3", 16, 0, 85.82),
        _spec("openclip_vitb16", "vit_base_patch16_clip_224.laion2b", "openclip", 16, 0, 85.80),
        # timm's own register ViTs: global average pooling, no CLS token, 4 registers.
        _spec(
            "timm_reg_vitm16", "vit_medium_patch16_reg4_gap_256.sbb_in12k", "timm_reg", 16, 4, 38.37, class_token=False
        ),
        _spec(
            "timm_reg_vitbetwixt16",
            "vit_betwixt_patch16_reg4_gap_256.sbb_in12k",
            "timm_reg",
            16,
            4,
            59.76,
            class_token=False,
        ),
    ]
}

ALIASES: dict[str, str] = {
    "dino": "dino_vits16",
    "dinov2": "dinov2_vits14",
    "dinov2_reg": "dinov2_reg_vits14",
    "dinov3": "dinov3_vits16",
    "deit3": "deit3_vitb16",
    "openclip": "openclip_vitb16",
}


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name or alias; unknown names list the known ones."""
    key = ALIASES.get(name, name)
    if key not in BACKBONES:
        known = ", ".join([*BACKBONES, *ALIASES])
        raise BackboneError(f"unknown backbone {name!r}; known: {known}")
    return BACKBONES[key]


@dataclass
class Backbone:
    """A built model with what produced it.

    Attributes:
        spec: the table entry.
        model: the timm ``VisionTransformer`` in eval mode, no classifier head.
        weights: where the weights came from and their sha256.
        test_time_registers: the register neurons of the model's test-time register
            (:mod:`objdisc.ttr`), or ``None``.
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


def build_model(spec: BackboneSpec, **model_kwargs: Any) -> torch.nn.Module:
    """Random-init timm model for ``spec``: no head, ``dynamic_img_size=True``, position
    embeddings resized as the family's release code does (:attr:`BackboneSpec.pos_embed`).

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``depth=2`` in tests).
    """
    import timm

    from objdisc.posembed import RECIPES, apply_recipe

    kwargs: dict[str, Any] = {"num_classes": 0, "dynamic_img_size": True, **model_kwargs}
    model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    apply_recipe(model, RECIPES[spec.pos_embed])
    return model


def resolve_weights(spec: BackboneSpec, weights: str | Path | WeightsInfo | None = None) -> WeightsInfo:
    """Which file holds the weights, from where, and its sha256, without building the model.

    Args:
        spec: the backbone.
        weights: a local file (or a transformers ``save_pretrained`` folder), an already resolved
            :class:`WeightsInfo`, or ``None`` for timm's pretrained weights from the Hugging Face
            hub cache (downloaded on first use).
    """
    from objdisc.hashing import sha256_file
    from objdisc.hf_layout import check_config, weights_file_in
    from objdisc.weights import WeightsError, WeightsInfo, resolve_hub_weights

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
    name: str,
    weights: str | Path | WeightsInfo | None = None,
    device: str | torch.device = "cpu",
    test_time_registers: RegisterNeurons | None = None,
    **model_kwargs: Any,
) -> Backbone:
    """Build a backbone and load its weights.

    Args:
        name: backbone name or alias (see :data:`BACKBONES`, :data:`ALIASES`).
        weights: local ``.safetensors`` / ``.pth`` file, in timm's layout or the upstream
            DINO / DINOv2 release layout; a resolved :class:`WeightsInfo`; or ``None``: timm's
            pretrained weights from the Hugging Face hub cache, downloaded on first use.
        device: where the model lives.
        test_time_registers: register neurons to give the model a test-time register
            (:class:`objdisc.ttr.TestTimeRegisters`), or ``None``.
        model_kwargs: extra ``timm.create_model`` arguments.

    Returns:
        The :class:`Backbone`, in eval mode with gradients off.
    """
    from objdisc.weights import load_weights_file

    spec = get_spec(name)
    info = resolve_weights(spec, weights)
    model = build_model(spec, **model_kwargs)
    load_weights_file(model, Path(info.path))
    model.eval().requires_grad_(False).to(device)
    if test_time_registers is not None:
        from objdisc.ttr import TestTimeRegisters

        TestTimeRegisters(model, test_time_registers)
    logger.info("built %s (%s) with weights %s sha256=%s", spec.name, spec.timm_name, info.path, info.sha256)
    return Backbone(spec, model, info, test_time_registers)
