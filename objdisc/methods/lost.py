"""LOST seed expansion (Siméoni et al., BMVC 2021): patch keys -> one box.

Pure tensor code, no I/O. The algorithm, exactly:

1. ``A = k k^T`` in float32 over the ``N`` patch keys (prefix tokens already dropped),
   minus ``gram_bias`` (0 unless asked: the registers paper's "bias added to the Gram matrix").
2. degree of a patch = number of *other* patches with ``A > 0``.
3. patches sorted by ascending degree, ties broken by the lowest patch index (stable sort);
   the seed is the first.
4. among the ``k_patches`` lowest-degree patches keep those with ``A[seed, .] > 0``.
5. mask = (sum of their ``A`` rows) ``> 0``, on the ``(h, w)`` patch grid.
6. keep the 4-connected component of the mask holding the seed; its grid box times the
   patch size, clipped to the unpadded image, is the prediction.

Degenerate case: if the seed's key is the zero vector, ``A[seed, seed] = 0`` so no patch is
kept in step 4 and the mask is empty; the component is then the seed patch alone.

torch is imported when LOST runs, so that the options (and ``objdisc --help``) stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from objdisc.methods.base import Method, objdisc_0_1_settings
from objdisc.methods.options import at_least, finite, option

if TYPE_CHECKING:
    import torch

    from objdisc.objects import Objects, ObjectsBatch


@dataclass(frozen=True)
class Lost(Method):
    """LOST seed expansion; one object per image, never syncs with the device."""

    k_patches: int = option(100, "LOST: how many lowest-degree patches may join the seed (LOST's k).",
                            checks=[at_least(1)], short="k")
    gram_bias: float = option(0.0, "LOST: subtracted from every entry of A = F F^T before LOST (registers paper).",
                              checks=[finite], short="gb")

    name: ClassVar[str] = "lost"
    title: ClassVar[str] = "LOST (Siméoni et al., BMVC 2021): seed of lowest degree, expanded"
    map_label: ClassVar[str] = "inverse degree (LOST)"
    legacy_settings = staticmethod(objdisc_0_1_settings)  # objdisc 0.1 journals resume

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        return lost_device(feats, grid_hw, patch_size, image_hws, self.k_patches, self.gram_bias)

    def display_map(self, score_map: np.ndarray) -> np.ndarray:
        """Inverse degree: the seed and its like are bright."""
        return 1.0 / np.maximum(score_map, 1.0)


def lost(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hw: tuple[int, int],
    k_patches: int = 100,
    gram_bias: float = 0.0,
) -> Objects:
    """Run LOST on the patch keys of one image.

    Args:
        keys: ``(N, C)`` float tensor of patch keys, row-major over ``grid_hw``, any device
            and dtype (the affinity is computed in float32). A batch of one, ``(1, N, C)``
            (what :class:`~objdisc.models.features.KeyExtractor` returns), is taken too.
        grid_hw: ``(h, w)`` patch grid, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hw: ``(H, W)`` size of the unpadded image in pixels, used to clip the box.
        k_patches: how many lowest-degree patches may join the seed.
        gram_bias: subtracted from every entry of ``A`` (0 = plain LOST).

    Returns:
        :class:`~objdisc.objects.Objects` with one object: ``boxes[0]`` the box in pixels,
        ``seeds[0]`` the seed, ``masks[0]`` the ``(h, w)`` component, ``score_map`` the degree.
    """
    if keys.ndim == 3 and keys.shape[0] == 1:
        keys = keys[0]
    if keys.ndim != 2:
        raise ValueError(
            f"keys must be (N, C) for one image, got shape {tuple(keys.shape)}; use lost_batch for a batch"
        )
    return lost_batch(keys[None], grid_hw, patch_size, [image_hw], k_patches, gram_bias)[0]


def lost_batch(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hws: Sequence[tuple[int, int]],
    k_patches: int = 100,
    gram_bias: float = 0.0,
) -> list[Objects]:
    """Run LOST on a batch of images sharing one patch grid.

    Args:
        keys: ``(B, N, C)`` float tensor of patch keys, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid shared by the batch, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hws: ``B`` unpadded image sizes ``(H, W)`` in pixels.
        k_patches: how many lowest-degree patches may join the seed (>= 1).
        gram_bias: subtracted from every entry of ``A`` before step 2 (0 = plain LOST).

    Returns:
        One :class:`~objdisc.objects.Objects` per image, in batch order (see :func:`lost`).
    """
    import torch

    sizes = torch.tensor([list(hw) for hw in image_hws], dtype=torch.long).reshape(-1, 2)
    return lost_device(keys, grid_hw, patch_size, sizes, k_patches, gram_bias).to_host(patch_size, image_hws)


def lost_device(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hws: torch.Tensor,
    k_patches: int = 100,
    gram_bias: float = 0.0,
) -> ObjectsBatch:
    """:func:`lost_batch` without leaving the device: no host sync, results as tensors.

    Args:
        keys: ``(B, N, C)`` patch features, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` int64 unpadded image sizes ``(H, W)`` in pixels (any device).
        k_patches: how many lowest-degree patches may join the seed (>= 1).
        gram_bias: subtracted from ``A`` before LOST.

    Returns:
        :class:`~objdisc.objects.ObjectsBatch`, ``K = 1``, ``score_map`` = degree (as float32).
    """
    from objdisc.methods.components import check_batch, seed_component_batch

    check_batch(keys, grid_hw, image_hws)
    b, h, w = keys.shape[0], *grid_hw
    if k_patches < 1:
        raise ValueError(f"k_patches must be >= 1, got {k_patches}")
    seed, degree, mask = _seed_and_mask(keys, k_patches, gram_bias)
    return seed_component_batch(mask.reshape(b, h, w), seed, patch_size, image_hws, degree.reshape(b, h, w).float())


def _seed_and_mask(keys: torch.Tensor, k_patches: int, gram_bias: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Steps 1-5 on device: ``(B, N, C)`` keys -> seed ``(B,)``, degree ``(B, N)``, mask ``(B, N)``."""
    import torch

    from objdisc.utils.device import no_tf32

    device_type = keys.device.type
    # The affinity is float32 whatever the model ran in: no autocast, no TF32.
    with torch.autocast(device_type=device_type, enabled=False), no_tf32():
        feats = keys.float()
        affinity = torch.bmm(feats, feats.transpose(1, 2))  # (B, N, N)
    if gram_bias:
        affinity -= gram_bias
    positive = affinity > 0
    degree = positive.sum(-1) - positive.diagonal(dim1=-2, dim2=-1).long()
    order = torch.sort(degree, dim=-1, stable=True).indices  # ascending, ties -> lowest index
    seed = order[:, 0]
    potentials = order[:, :k_patches]  # (B, k)
    seed_rows = affinity[torch.arange(len(seed), device=seed.device), seed]  # (B, N)
    keep = torch.gather(seed_rows, 1, potentials) > 0  # (B, k)
    rows = torch.gather(affinity, 1, potentials[..., None].expand(-1, -1, affinity.shape[-1]))
    summed = torch.where(keep[..., None], rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
    mask = summed.sum(1) > 0  # (B, N)
    return seed, degree, mask


__all__ = ["Lost", "lost", "lost_batch", "lost_device"]
