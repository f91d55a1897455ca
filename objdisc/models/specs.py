"""The backbone table: one frozen :class:`BackboneSpec` per backbone, keyed by short names.

:data:`BACKBONES` plus :data:`ALIASES`, and :func:`timm_spec` for any timm ViT (``timm:NAME``).
Everything else about a backbone (mean/std, licence, hub id) is read from timm's own pretrained
config, never retyped here. Nothing here imports torch or timm until a spec is read off a model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from objdisc.errors import BackboneError


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
        other_prefix: prefix tokens besides CLS and registers (DeiT's distillation token).
        cfg: timm's pretrained config when it is not found by :attr:`timm_name` (``timm:``
            backbones from the hub).
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
    other_prefix: int = 0
    cfg: Any = field(default=None, compare=False, repr=False)

    @property
    def pos_embed(self) -> str:
        """How position embeddings are resized to other grids: a recipe of :mod:`objdisc.models.position_embeddings`."""
        return FAMILY_POS_EMBED[self.family][0]

    @property
    def pos_embed_note(self) -> str:
        """Whose resizing that is, in a few words (``objdisc backbones``)."""
        return FAMILY_POS_EMBED[self.family][1]

    @property
    def num_prefix_tokens(self) -> int:
        """CLS (if any) + registers (+ other prefix tokens): what the model drops before the patch tokens."""
        return int(self.class_token) + self.num_registers + self.other_prefix

    @property
    def pretrained_cfg(self) -> Any:
        """timm's ``PretrainedCfg`` for :attr:`timm_name` (mean/std, licence, hub id, url)."""
        if self.cfg is not None:
            return self.cfg
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


# family -> (position-embedding recipe of objdisc.models.position_embeddings, whose it is). The release code is
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
    "timm": ("timm", "timm"),
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
        # (see objdisc.models.features). The weights are gated on the hub: accept the licence there first.
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


TIMM_PREFIX = "timm:"


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name or alias, or read a ``timm:MODEL`` one off timm (:func:`timm_spec`);
    unknown names list the known ones."""
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name[len(TIMM_PREFIX) :])
    key = ALIASES.get(name, name)
    if key not in BACKBONES:
        known = ", ".join([*BACKBONES, *ALIASES])
        raise BackboneError(f"unknown backbone {name!r}; known: {known}, or timm:MODEL_NAME for any timm ViT")
    return BACKBONES[key]


@functools.lru_cache(maxsize=64)
def timm_spec(model_name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of any timm ViT, read off the model built on the meta device.

    Patch size, prefix tokens (CLS, registers, a distillation token, or none), parameters,
    mean/std and licence come from the model and its pretrained config. The position-embedding
    recipe is timm's, unless the model (with its pretrained tag) is one of the table's, whose
    family has a release recipe. ``hf-hub:org/name`` models read their config from the hub.

    Raises:
        BackboneError: an unknown model, or one objdisc cannot read (:func:`unreadable`).
    """
    import timm
    import torch
    from timm.models import PretrainedCfg

    label = f"{TIMM_PREFIX}{model_name}"
    if not model_name.startswith("hf-hub:") and not timm.is_model(model_name.split(".")[0]):
        raise BackboneError(f"{label}: timm {timm.__version__} has no model {model_name.split('.')[0]!r}")

    def build(**kwargs: Any) -> Any:
        with torch.device("meta"):  # the structure only: no memory, no initialisation
            return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)

    try:
        try:
            model = build(dynamic_img_size=True)
        except TypeError as exc:  # the model takes no dynamic_img_size: say what it is instead
            why = unreadable(build()) or f"it cannot take images of any size (dynamic_img_size: {exc})"
            raise BackboneError(f"{label}: {why}") from None
    except BackboneError:
        raise
    except Exception as exc:  # timm raises many types (a tag it lacks, a hub it cannot reach)
        raise BackboneError(f"{label}: timm cannot build it ({type(exc).__name__}: {exc})") from None
    why = unreadable(model)
    if why is not None:
        raise BackboneError(f"{label}: {why}")
    raw = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg = PretrainedCfg(**{k: v for k, v in raw.items() if k in PretrainedCfg.__dataclass_fields__})
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag and not model_name.startswith("hf-hub:") else model_name
    known = next((s for s in BACKBONES.values() if s.timm_name == full), None)
    patch = tuple(model.patch_embed.patch_size)
    reg_token = getattr(model, "reg_token", None)  # ViT and EVA alike
    registers = int(reg_token.shape[1]) if reg_token is not None else 0
    class_token = getattr(model, "cls_token", None) is not None
    return BackboneSpec(
        name=f"{TIMM_PREFIX}{full}",  # the exact model, pretrained tag included, in every label
        timm_name=full,
        family=known.family if known is not None else "timm",
        patch_size=int(patch[0]),
        num_registers=registers,
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        license=str(cfg.license or "unknown"),
        class_token=class_token,
        other_prefix=int(model.num_prefix_tokens) - int(class_token) - registers,
        cfg=cfg,
    )


def unreadable(model: Any) -> str | None:
    """Why objdisc cannot read ``model``'s patch features, or ``None`` when it can.

    It needs a patch embedding with a square patch and no CNN stem, ``num_prefix_tokens``, and
    ``blocks[i].attn`` in a layout :mod:`objdisc.models.features` reads (a fused ``qkv`` Linear, with
    its bias or separate q/k/v biases, or separate q/k/v projections).
    """
    import torch

    embed, blocks = getattr(model, "patch_embed", None), getattr(model, "blocks", None)
    if embed is None or blocks is None or not hasattr(model, "num_prefix_tokens"):
        return f"{type(model).__name__} is not a ViT with patch tokens (objdisc reads blocks[i].attn of a patch grid)"
    if getattr(embed, "backbone", None) is not None:
        return f"a hybrid model ({type(embed.backbone).__name__} stem): its tokens are CNN features, not patches"
    patch = getattr(embed, "patch_size", None)
    if patch is None or len(set(patch)) != 1:
        return f"patch size {patch}: objdisc needs square patches"
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "num_heads"):
            return f"block {i} has no attention objdisc can read ({type(block).__name__})"
        qkv = getattr(attn, "qkv", None)
        if isinstance(qkv, torch.nn.Linear):
            if qkv.bias is None and getattr(attn, "q_bias", None) is not None and getattr(attn, "k_bias", None) is None:
                return f"block {i}: {type(attn).__name__} has q/v biases but no k bias objdisc can read"
        elif getattr(attn, "k_proj", None) is None:
            return f"block {i}: {type(attn).__name__} is an attention layout objdisc does not read"
        if not hasattr(attn, "head_dim") or not hasattr(attn, "k_norm"):
            return f"block {i}: {type(attn).__name__} lacks head_dim / k_norm"
    return None


def timm_models(check: bool = False) -> list[str]:
    """Pretrained timm models of the families whose attention objdisc reads (ViT, DeiT, EVA).

    ``check`` builds each architecture on the meta device and keeps the readable ones (about a
    second each); without it the list is by module, and each model is checked on first use.
    """
    import timm

    modules = ("vision_transformer", "deit", "eva")
    names = sorted({n for m in modules for n in timm.list_models(module=m, pretrained=True)})
    if not check:
        return names
    good: dict[str, bool] = {}
    for name in names:
        arch = name.split(".")[0]
        if arch not in good:
            try:
                timm_spec(arch)
                good[arch] = True
            except BackboneError:
                good[arch] = False
    return [n for n in names if good[n.split(".")[0]]]
