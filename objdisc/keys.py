"""Last-block attention keys from a timm ViT, with one hook per model.

A forward pre-hook on the last block's ``attn.qkv`` receives that block's normalised input,
computes only the key third of the qkv projection with the model's own weights, applies the
model's own ``k_norm``, and stops the forward pass: the last block's queries, values,
attention output and MLP, and the final norm, are never computed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _KeysReady(Exception):
    """Carries the keys out of the forward pass once the hook has them."""

    def __init__(self, keys: torch.Tensor) -> None:
        super().__init__("keys ready")
        self.keys = keys


class KeyExtractor:
    """Pulls last-block keys ``(B, N_patches, C)`` out of a timm ``VisionTransformer``.

    The hook is registered once, at construction, and removed by :meth:`close` (or on
    leaving a ``with`` block). Keys are heads concatenated (``C = heads * head_dim``),
    prefix tokens (CLS and registers) dropped by the model's own ``num_prefix_tokens``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.attn = model.blocks[-1].attn
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self._handle = self.attn.qkv.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        (x,) = args  # (B, T, D): the last block's norm1 output, prefix tokens included
        heads, head_dim = self.attn.num_heads, self.attn.head_dim
        dim = heads * head_dim
        if isinstance(module, torch.nn.Linear):
            # qkv rows are laid out (3, heads, head_dim): the key third is rows [dim, 2 * dim).
            bias = module.bias[dim : 2 * dim] if module.bias is not None else None
            k = F.linear(x, module.weight[dim : 2 * dim], bias)
        else:
            k = module(x)[..., dim : 2 * dim]
        b, t, _ = k.shape
        k = self.attn.k_norm(k.reshape(b, t, heads, head_dim).transpose(1, 2))  # (B, H, T, hd)
        raise _KeysReady(k.transpose(1, 2).reshape(b, t, dim))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Keys of the patch tokens.

        Args:
            images: ``(B, 3, H, W)`` normalised images, ``H`` and ``W`` multiples of the
                patch size.

        Returns:
            ``(B, (H / p) * (W / p), C)`` keys, row-major over the patch grid, in the
            model's compute dtype.
        """
        try:
            self.model.forward_features(images)
        except _KeysReady as ready:
            return ready.keys[:, self.num_prefix_tokens :]
        raise RuntimeError("the last block's qkv was never called; is this a timm VisionTransformer?")

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()

    def __enter__(self) -> KeyExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
