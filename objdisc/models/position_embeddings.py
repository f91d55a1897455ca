"""How each family's release code resizes learned position embeddings to a new patch grid.

A ViT trained on an ``M x M`` grid sees images of other sizes through a resized copy of its
patch position embeddings. The resizing is part of the model: the same weights give other
features when it changes. timm (with ``dynamic_img_size=True``) resizes with
``F.interpolate(size=(h, w), mode="bicubic", antialias=True)`` in float32. The release code
of DINO and DINOv2 without registers does not, and objdisc reproduces the release:

- ``dino``: facebookresearch/dino ``VisionTransformer.interpolate_pos_encoding`` (also the file
  LOST ships): nothing on the trained square grid; else bicubic, no antialias,
  ``scale_factor=((h + 0.1) / M, (w + 0.1) / M)``, in the parameter's dtype.
- ``dinov2``: facebookresearch/dinov2 ``interpolate_pos_encoding`` with the hub arguments of
  the no-register models (``interpolate_antialias=False, interpolate_offset=0.1``): the same,
  computed in float32 and cast back.
- ``timm``: DINOv2 with registers (hub arguments ``interpolate_antialias=True,
  interpolate_offset=0.0``, i.e. ``size=(h, w)``) is exactly timm's; DeiT-III, OpenCLIP and
  timm's own register ViTs have no variable-size release path, so timm's is theirs.

The ``0.1`` is DINO's historical guard against float error in the output size
(facebookresearch/dino issue 8); PyTorch also uses the scale factor, not the size, to place
the samples, so it shifts every interpolated value slightly. Both it and the antialias flag
matter: the report that found this saw differences remain with either one alone.

A recipe is applied per model instance by :func:`apply_recipe` (the instance's
``_pos_embed`` is replaced), never by patching timm's module functions, which every other
model shares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PosEmbedRecipe:
    """One way of resizing ``(1, M*M, C)`` patch position embeddings to an ``(h, w)`` grid.

    Attributes:
        name: short name recorded in journals, caches and ``run.json``.
        offset: added to the new grid size in ``scale_factor = (h + offset) / M``; ``0``
            interpolates to ``size=(h, w)`` instead.
        antialias: bicubic antialiasing (only matters when shrinking).
        float32: interpolate in float32 and cast back; ``False`` interpolates in the
            parameter's own dtype.
        source: the code this reproduces.
    """

    name: str
    offset: float
    antialias: bool
    float32: bool
    source: str


TIMM = PosEmbedRecipe("timm", 0.0, True, True, "timm resample_abs_pos_embed (size=, antialias, float32)")
DINO = PosEmbedRecipe(
    "dino-release",
    0.1,
    False,
    False,
    "facebookresearch/dino vision_transformer.py interpolate_pos_encoding",
)
DINOV2 = PosEmbedRecipe(
    "dinov2-release",
    0.1,
    False,
    True,
    "facebookresearch/dinov2 interpolate_pos_encoding, hub interpolate_antialias=False, interpolate_offset=0.1",
)

RECIPES: dict[str, PosEmbedRecipe] = {r.name: r for r in (TIMM, DINO, DINOV2)}


def resize_patch_pos_embed(
    pos: torch.Tensor, grid_hw: tuple[int, int], trained_hw: tuple[int, int], recipe: PosEmbedRecipe
) -> torch.Tensor:
    """Resize patch position embeddings as ``recipe``'s release code does.

    Args:
        pos: ``(1, M_h * M_w, C)`` patch position embeddings (no prefix-token entries),
            row-major over the trained grid.
        grid_hw: the new grid ``(h, w)`` in patches.
        trained_hw: the trained grid ``(M_h, M_w)`` in patches.
        recipe: how to resize.

    Returns:
        ``(1, h * w, C)`` in ``pos``'s dtype; ``pos`` itself on the trained grid.
    """
    h, w = grid_hw
    m_h, m_w = trained_hw
    if (h, w) == (m_h, m_w):
        return pos
    dtype, dim = pos.dtype, pos.shape[-1]
    work = pos.float() if recipe.float32 else pos
    work = work.reshape(1, m_h, m_w, dim).permute(0, 3, 1, 2)
    if recipe.offset:
        scale = ((h + recipe.offset) / m_h, (w + recipe.offset) / m_w)
        out = F.interpolate(work, scale_factor=scale, mode="bicubic", antialias=recipe.antialias)
    else:
        out = F.interpolate(work, size=(h, w), mode="bicubic", antialias=recipe.antialias)
    if tuple(out.shape[-2:]) != (h, w):  # the release code asserts the same
        raise RuntimeError(f"position embedding resized to {tuple(out.shape[-2:])}, expected {(h, w)}")
    return out.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(dtype)


def _pos_embed(model: torch.nn.Module, recipe: PosEmbedRecipe, x: torch.Tensor) -> torch.Tensor:
    """``VisionTransformer._pos_embed`` for ``(B, h, w, C)`` patch tokens, resized by ``recipe``.

    Returns ``(B, prefix + h * w, C)``: CLS, registers, then patches, as timm orders them.
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    prefix = [] if model.cls_token is None else [model.cls_token.expand(b, -1, -1)]
    if model.reg_token is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    n_embed_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    pos = model.pos_embed
    patch_pos = resize_patch_pos_embed(pos[:, n_embed_prefix:], (h, w), tuple(model.patch_embed.grid_size), recipe)
    if model.no_embed_class:
        x = torch.cat([*prefix, x + patch_pos], dim=1)
    else:
        x = torch.cat([*prefix, x], dim=1) + torch.cat([pos[:, :n_embed_prefix], patch_pos], dim=1)
    return model.pos_drop(x)


def apply_recipe(model: torch.nn.Module, recipe: PosEmbedRecipe) -> None:
    """Make this model instance resize its position embeddings by ``recipe``.

    ``timm`` leaves the model as timm built it. Other recipes need a timm
    ``VisionTransformer`` with learned absolute position embeddings and
    ``dynamic_img_size=True``.

    Raises:
        ValueError: the model has no learned absolute position embedding to resize.
    """
    if recipe == TIMM:
        return
    if getattr(model, "pos_embed", None) is None or not getattr(model, "dynamic_img_size", False):
        raise ValueError(
            f"{type(model).__name__}: recipe {recipe.name!r} needs learned position embeddings "
            "and dynamic_img_size=True"
        )
    model._pos_embed = functools.partial(_pos_embed, model, recipe)
    model.objdisc_pos_embed = recipe.name


def recipe_of(model: torch.nn.Module) -> str:
    """The name of the recipe :func:`apply_recipe` gave ``model`` (``timm`` when none)."""
    return getattr(model, "objdisc_pos_embed", TIMM.name)


__all__ = ["DINO", "DINOV2", "RECIPES", "TIMM", "PosEmbedRecipe", "apply_recipe", "recipe_of", "resize_patch_pos_embed"]
