"""Token norms inside a timm ViT, for the artifact diagnostics: one forward pass, hooks removed after.

:class:`TokenProbe` records, for a batch, the output of every block (the residual stream,
before the model's final norm) and the patch embedding. "Output tokens" in objdisc's norm
diagnostics are the last block's output before the final norm: the registers paper's
high-norm artifacts are a property of that residual stream (the final LayerNorm rescales every
token and would hide them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from objdisc.models.test_time_registers import extra_tokens


@dataclass(frozen=True)
class TokenNorms:
    """Norms of one image's tokens.

    Attributes:
        patch: ``(L, h, w)`` float32 L2 norms of the patch tokens after each of the ``L`` blocks.
        registers: ``(L, R)`` float32 norms of the register tokens (``R`` may be 0).
        cls: ``(L,)`` float32 norms of the CLS token (empty when the model has none).
        extra: ``(L, E)`` float32 norms of the tokens after the patches (a test-time register;
            ``E`` is 0 without).
        neighbour_cos: ``(h, w)`` float32 mean cosine similarity of each patch embedding
            (the patch_embed output, before position embeddings) to its 4-neighbours.
    """

    patch: torch.Tensor
    registers: torch.Tensor
    cls: torch.Tensor
    neighbour_cos: torch.Tensor
    extra: torch.Tensor | None = None


class TokenProbe:
    """Records block outputs and the patch embedding of a timm ViT, for token norms.

    The hooks are registered once, at construction, and removed by :meth:`close` (or on
    leaving a ``with`` block). Call the probe on a batch to run a forward pass and read it, or
    run the forward pass elsewhere (e.g. a :class:`~objdisc.models.features.FeatureExtractor` with
    ``stop=False``) and :meth:`read` what the hooks saw.

    Args:
        model: the timm ViT.
        num_registers: register tokens (from the backbone table).
        class_token: whether the model has a CLS token before the registers.
    """

    def __init__(self, model: torch.nn.Module, num_registers: int, class_token: bool = True) -> None:
        self.model = model
        self.num_registers = num_registers
        self.class_token = class_token
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self._outputs: list[torch.Tensor] = []
        self._embedded: list[torch.Tensor] = []
        self._handles = [block.register_forward_hook(lambda m, i, o: self._outputs.append(o)) for block in model.blocks]
        self._handles.append(model.patch_embed.register_forward_hook(lambda m, i, o: self._embedded.append(o)))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[TokenNorms]:
        """Norms for a batch of normalised, padded images ``(B, 3, H, W)``; one entry per image."""
        self._outputs.clear()
        self._embedded.clear()
        self.model.forward_features(images)
        return self.read(images.shape)

    @torch.no_grad()
    def read(self, image_shape: torch.Size | tuple[int, ...]) -> list[TokenNorms]:
        """Norms from the last forward pass the hooks saw, for images of ``(B, 3, H, W)`` shape."""
        outputs, embedded = self._outputs[:], self._embedded[:]
        self._outputs.clear()
        self._embedded.clear()
        if len(outputs) != len(self.model.blocks) or len(embedded) != 1:
            raise RuntimeError("read() needs exactly one complete forward pass since the last read")
        b, _, height, width = image_shape
        p = self.model.patch_embed.patch_size
        h, w = height // p[0], width // p[1]
        stream = torch.stack(outputs, 1).float()  # (B, L, T, D)
        norms = stream.norm(dim=-1)  # (B, L, T)
        cls_count = int(self.class_token)
        end = norms.shape[-1] - extra_tokens(self.model)
        patches = norms[:, :, self.num_prefix_tokens : end].reshape(b, len(outputs), h, w)
        extra = norms[:, :, end:]
        registers = norms[:, :, cls_count : cls_count + self.num_registers]
        cls = norms[:, :, 0] if self.class_token else norms.new_zeros(b, len(outputs), 0)
        cos = neighbour_cosine(embedded[0].float().reshape(b, h, w, -1))
        return [TokenNorms(patches[i], registers[i], cls[i], cos[i], extra[i]) for i in range(b)]

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> TokenProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def neighbour_cosine(grid: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of each cell to its 4-neighbours.

    Args:
        grid: ``(B, h, w, D)`` features.

    Returns:
        ``(B, h, w)``: the mean over the neighbours that exist (edges have 2 or 3).
    """
    unit = F.normalize(grid, dim=-1)
    total = torch.zeros(grid.shape[:3], dtype=unit.dtype, device=unit.device)
    count = torch.zeros_like(total)
    vertical = (unit[:, 1:] * unit[:, :-1]).sum(-1)  # (B, h-1, w)
    horizontal = (unit[:, :, 1:] * unit[:, :, :-1]).sum(-1)  # (B, h, w-1)
    total[:, 1:] += vertical
    total[:, :-1] += vertical
    total[:, :, 1:] += horizontal
    total[:, :, :-1] += horizontal
    count[:, 1:] += 1
    count[:, :-1] += 1
    count[:, :, 1:] += 1
    count[:, :, :-1] += 1
    return total / count.clamp(min=1)


__all__ = ["TokenNorms", "TokenProbe", "neighbour_cosine"]
