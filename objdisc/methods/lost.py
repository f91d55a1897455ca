"""LOST seed expansion (Siméoni et al., BMVC 2021): patch keys -> one box.

Pure tensor code, no I/O. The algorithm, exactly:

1. ``A = k k^T`` in float32 over the ``N`` patch keys (prefix tokens already dropped).
2. degree of a patch = number of *other* patches with ``A > 0``.
3. patches sorted by ascending degree, ties broken by the lowest patch index (stable sort);
   the seed is the first.
4. among the ``k_patches`` lowest-degree patches keep those with ``A[seed, .] > 0``.
5. mask = (sum of their ``A`` rows) ``> 0``, on the ``(h, w)`` patch grid.
6. keep the 4-connected component of the mask holding the seed; its grid box times the
   patch size, clipped to the unpadded image, is the prediction.

Degenerate case: if the seed's key is the zero vector, ``A[seed, seed] = 0`` so no patch is
kept in step 4 and the mask is empty; the component is then the seed patch alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch


@dataclass(frozen=True)
class LostResult:
    """LOST output for one image.

    Attributes:
        box: ``(x1, y1, x2, y2)`` integer pixels of the unpadded image, x2/y2 exclusive.
        seed: row-major index of the seed patch on the ``(h, w)`` grid.
        mask: ``(h, w)`` bool, the connected component holding the seed.
        degree: ``(h, w)`` int64, number of other patches with positive affinity.
    """

    box: tuple[int, int, int, int]
    seed: int
    mask: np.ndarray
    degree: np.ndarray


def lost(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hw: tuple[int, int],
    k_patches: int = 100,
) -> LostResult:
    """Run LOST on the patch keys of one image.

    Args:
        keys: ``(N, C)`` float tensor of patch keys, row-major over ``grid_hw``, any device
            and dtype (the affinity is computed in float32).
        grid_hw: ``(h, w)`` patch grid, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hw: ``(H, W)`` size of the unpadded image in pixels, used to clip the box.
        k_patches: how many lowest-degree patches may join the seed.

    Returns:
        The :class:`LostResult`.
    """
    if keys.ndim != 2:
        raise ValueError(f"keys must be (N, C), got shape {tuple(keys.shape)}")
    return lost_batch(keys[None], grid_hw, patch_size, [image_hw], k_patches)[0]


def lost_batch(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    patch_size: int,
    image_hws: Sequence[tuple[int, int]],
    k_patches: int = 100,
) -> list[LostResult]:
    """Run LOST on a batch of images sharing one patch grid.

    Args:
        keys: ``(B, N, C)`` float tensor of patch keys, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid shared by the batch, ``h * w == N``.
        patch_size: patch side in pixels.
        image_hws: ``B`` unpadded image sizes ``(H, W)`` in pixels.
        k_patches: how many lowest-degree patches may join the seed (>= 1).

    Returns:
        One :class:`LostResult` per image, in batch order.
    """
    b, n, _ = keys.shape
    h, w = grid_hw
    if h * w != n:
        raise ValueError(f"grid {grid_hw} has {h * w} patches but keys have N={n}")
    if len(image_hws) != b:
        raise ValueError(f"{len(image_hws)} image sizes for a batch of {b}")
    if k_patches < 1:
        raise ValueError(f"k_patches must be >= 1, got {k_patches}")

    seed, degree, mask = _seed_and_mask(keys, k_patches)
    seed_np = seed.cpu().numpy()
    degree_np = degree.reshape(b, h, w).cpu().numpy()
    mask_np = mask.reshape(b, h, w).cpu().numpy()
    results = []
    for i in range(b):
        component = seed_component(mask_np[i], int(seed_np[i]))
        box = component_box(component, patch_size, image_hws[i])
        results.append(LostResult(box, int(seed_np[i]), component, degree_np[i]))
    return results


def _seed_and_mask(keys: torch.Tensor, k_patches: int) -> tuple[torch.Tensor, ...]:
    """Steps 1-5 on device: ``(B, N, C)`` keys -> seed ``(B,)``, degree ``(B, N)``, mask ``(B, N)``."""
    device_type = keys.device.type
    # The affinity is float32 whatever the model ran in: no autocast, no TF32.
    with torch.autocast(device_type=device_type, enabled=False), no_tf32():
        feats = keys.float()
        affinity = torch.bmm(feats, feats.transpose(1, 2))  # (B, N, N)
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


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Exact float32 on CUDA: TF32 off for matmuls and cuDNN convolutions, then restored."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def seed_component(mask: np.ndarray, seed: int) -> np.ndarray:
    """The 4-connected component of ``mask`` holding the seed patch.

    Args:
        mask: ``(h, w)`` bool grid.
        seed: row-major index of the seed patch.

    Returns:
        ``(h, w)`` bool grid of that component; the seed patch alone when the seed is not
        in ``mask``.
    """
    labels, _ = scipy.ndimage.label(mask)  # default structure: 4-connectivity in 2-D
    label = labels.flat[seed]
    if label == 0:
        component = np.zeros(mask.shape, dtype=bool)
        component.flat[seed] = True
        return component
    return labels == label


def component_box(component: np.ndarray, patch_size: int, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Bounding box of a non-empty ``(h, w)`` patch component, in pixels.

    Args:
        component: ``(h, w)`` bool grid with at least one True.
        patch_size: patch side in pixels.
        image_hw: ``(H, W)`` unpadded image size; the box is clipped to it.

    Returns:
        ``(x1, y1, x2, y2)`` integer pixels, x2/y2 exclusive.
    """
    rows = np.flatnonzero(component.any(axis=1))
    cols = np.flatnonzero(component.any(axis=0))
    height, width = image_hw
    x1 = int(cols[0]) * patch_size
    y1 = int(rows[0]) * patch_size
    x2 = min((int(cols[-1]) + 1) * patch_size, int(width))
    y2 = min((int(rows[-1]) + 1) * patch_size, int(height))
    return (x1, y1, x2, y2)
