"""Patch features from inside a timm ViT: keys, queries, values or CLS attention of any block, one hook per block.

A forward pre-hook on ``blocks[layer].attn`` receives that block's normalised input (and, for
RoPE models, the rotary table). It computes only the asked projections (``q``, ``k`` and/or
``v``) with the block's own weights and biases, applies the block's own ``q_norm`` /
``k_norm``, drops the prefix tokens by the model's own ``num_prefix_tokens`` (and a test-time
register after the patches, :mod:`objdisc.models.test_time_registers`), and, once the
deepest asked block is reached, stops the forward pass: nothing after it is computed.

Three attention layouts are read: timm's ``Attention`` (one fused ``qkv`` Linear with its
bias), ``EvaAttention`` with a fused ``qkv`` and separate ``q_bias`` / ``k_bias`` / ``v_bias``
(DINOv3's ``_qkvb`` models, whose forward never calls the ``qkv`` module, so a hook on it
would never fire), and ``EvaAttention`` with separate ``q_proj`` / ``k_proj`` / ``v_proj``.

CLS attention (kind ``attn``, what DINO-seg reads): the block's attention of the CLS token to
every token, per head, as the model computes it (``softmax((q_cls k^T) * scale)`` over all
tokens, after ``q_norm`` / ``k_norm`` and, for RoPE models, the rotary embedding of the patch
tokens, as EVA attention applies it), then the prefix tokens dropped by the model's own count:
``(B, N, heads)``. The product is scaled after the matmul as the DINO release's
``get_last_selfattention`` does (timm's unfused path scales ``q`` first: a float32 rounding
apart). Models without a CLS token are refused. Kind ``kattn`` (what FOUND reads) is the keys
followed by that attention: ``(B, N, C + heads)``.

RoPE (DINOv3): k, q and v features are taken **before** the rotary embedding. LOST and TokenCut compare
patches with a plain dot product; after RoPE, ``k_i . k_j = k_i^T R(p_j - p_i) k_j`` mixes
the patches' content with their relative offset, so one object's patches would score alike
only when close together. Attention compares rotated queries with rotated keys, never keys
with keys, so the unrotated key is the content part of what attention reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from objdisc.errors import OptionError
from objdisc.models.feature_spec import FEATURE_KINDS, LAST_KEYS, FeatureSpec
from objdisc.models.test_time_registers import extra_tokens


class _FeaturesReady(Exception):
    """Carries the features out of the forward pass once the deepest hook has them."""


class FeatureExtractor:
    """Pulls patch features ``(B, N_patches, C)`` out of a timm ViT for one or more :class:`FeatureSpec`.

    Hooks are registered once, at construction, one per distinct block, and removed by
    :meth:`close` (or on leaving a ``with`` block). Features are heads concatenated
    (``C = heads * head_dim``), row-major over the patch grid, in the model's compute dtype.
    With ``stop=False`` the forward pass runs to its end, so other hooks on the model (e.g. a
    :class:`~objdisc.models.token_probe.TokenProbe`) see the same pass.
    """

    def __init__(self, model: torch.nn.Module, specs: Sequence[FeatureSpec] = (LAST_KEYS,), stop: bool = True) -> None:
        if not specs:
            raise ValueError("no features asked for")
        self.model = model
        self.stop = stop
        self.specs = tuple(dict.fromkeys(specs))
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        if any(spec.kind in ("attn", "kattn") for spec in self.specs) and getattr(model, "cls_token", None) is None:
            raise OptionError(
                f"features attn (the CLS token's attention) need a CLS token; {type(model).__name__} "
                "of this backbone has none"
            )
        depth = len(model.blocks)
        self._blocks = {spec: spec.block(depth) for spec in self.specs}
        self._last = max(self._blocks.values())
        self._out: dict[FeatureSpec, torch.Tensor] = {}
        self._handles = []
        for index in sorted(set(self._blocks.values())):
            kinds = {s.kind for s, b in self._blocks.items() if b == index}
            hook = self._make_hook(index, kinds)
            self._handles.append(model.blocks[index].attn.register_forward_pre_hook(hook, with_kwargs=True))

    def _make_hook(self, index: int, kinds: set[str]) -> Any:
        def hook(attn: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["x"]  # (B, T, D): the block's norm1 output, prefix tokens included
            end = x.shape[1] - extra_tokens(self.model)  # a test-time register sits after the patches
            for kind in sorted(kinds):
                if kind == "kattn":  # keys, then the CLS attention per head (FOUND)
                    full = torch.cat([_project(attn, x, "k"), _cls_attention(attn, x, kwargs.get("rope"))], dim=-1)
                elif kind == "attn":
                    full = _cls_attention(attn, x, kwargs.get("rope"))
                else:
                    full = _project(attn, x, kind)
                feats = full[:, self.num_prefix_tokens : end]
                for spec, block in self._blocks.items():
                    if block == index and spec.kind == kind:
                        self._out[spec] = feats
            if index == self._last and self.stop:
                raise _FeaturesReady

        return hook

    def extract(self, images: torch.Tensor) -> dict[FeatureSpec, torch.Tensor]:
        """Every asked feature of a batch.

        Args:
            images: ``(B, 3, H, W)`` normalised images, ``H`` and ``W`` multiples of the patch size.

        Returns:
            ``{spec: (B, (H / p) * (W / p), C) tensor}``.
        """
        self._out = {}
        try:
            self.model.forward_features(images)
        except _FeaturesReady:
            pass
        out, self._out = self._out, {}
        if len(out) != len(self.specs):
            raise RuntimeError("the model's attention blocks were never called; is this a timm ViT?")
        return out

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The first spec's features ``(B, N_patches, C)`` (see :meth:`extract`)."""
        return self.extract(images)[self.specs[0]]

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _project(attn: torch.nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """One of q/k/v of an attention module for input ``x`` ``(B, T, D)`` -> ``(B, T, heads * head_dim)``."""
    order = "qkv".index(kind)  # position in the fused projection
    heads, head_dim = attn.num_heads, attn.head_dim
    dim = heads * head_dim
    qkv = getattr(attn, "qkv", None)
    if isinstance(qkv, torch.nn.Linear):
        # qkv rows are laid out (3, heads, head_dim): q, k, v thirds.
        rows = slice(order * dim, (order + 1) * dim)
        if qkv.bias is not None:
            bias = qkv.bias[rows]
        elif getattr(attn, "q_bias", None) is not None:  # EvaAttention, DINOv3 `_qkvb`
            bias = (attn.q_bias, attn.k_bias, attn.v_bias)[order]
        else:
            bias = None
        out = F.linear(x, qkv.weight[rows], bias)
    elif getattr(attn, "k_proj", None) is not None:  # EvaAttention with separate projections
        out = (attn.q_proj, attn.k_proj, attn.v_proj)[order](x)
    elif qkv is not None:  # an unusual qkv module: run it whole, take the third
        out = qkv(x)[..., order * dim : (order + 1) * dim]
    else:
        raise RuntimeError(f"{type(attn).__name__}: no qkv, no q/k/v projections; not a supported attention")
    if kind == "v":
        return out
    norm = attn.q_norm if kind == "q" else attn.k_norm
    b, t, _ = out.shape
    return norm(out.reshape(b, t, heads, head_dim)).reshape(b, t, dim)


def _cls_attention(attn: torch.nn.Module, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    """The CLS token's (token 0) attention to every token: ``(B, T, D)`` input -> ``(B, T, heads)``."""
    b, t, _ = x.shape
    heads = attn.num_heads
    q = _project(attn, x, "q").reshape(b, t, heads, -1).transpose(1, 2)  # (B, heads, T, head_dim)
    k = _project(attn, x, "k").reshape(b, t, heads, -1).transpose(1, 2)
    if rope is not None:  # as EVA attention: the prefix tokens are not rotated
        from timm.layers import apply_rot_embed_cat

        npt = int(getattr(attn, "num_prefix_tokens", 0))
        half = getattr(attn, "rotate_half", False)
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2)
    scores = (q[:, :, :1] @ k.transpose(-2, -1)) * attn.scale  # (B, heads, 1, T)
    return scores.softmax(dim=-1)[:, :, 0].transpose(1, 2)


class KeyExtractor(FeatureExtractor):
    """Last-block keys: ``FeatureExtractor(model, [FeatureSpec("k", -1)])``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, [FeatureSpec("k", -1)])


__all__ = ["FEATURE_KINDS", "LAST_KEYS", "FeatureExtractor", "FeatureSpec", "KeyExtractor"]
