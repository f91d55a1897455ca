"""The step LOST and TokenCut share: seed's 4-connected component -> box, on the device.

Both methods end the same way: a foreground ``(h, w)`` patch mask and a seed patch; the
prediction is the bounding box of the mask's 4-connected component holding the seed, times
the patch size, clipped to the unpadded image. :func:`seed_component_batch` does this for a
batch with tensor ops only, so the batch loop never waits for the device; the results reach
the host once, in :meth:`~objdisc.objects.ObjectsBatch.to_host`.

The component is grown from the seed by 4-neighbour dilation inside the mask, a fixed
``h + w`` steps (enough for any component whose every patch has a monotone path to the seed,
i.e. nearly every real one). Whether a component is still growing after those steps is
tracked on the device too; the rare such image (a spiral, a snake) is finished on the host
with scipy's labelling, so the result is exact in every case.
"""

from __future__ import annotations

import torch

from objdisc.objects import ObjectsBatch


def check_batch(feats: torch.Tensor, grid_hw: tuple[int, int], image_hws: torch.Tensor) -> None:
    """The shape checks every method makes: ``(B, N, C)`` features on an ``(h, w)`` grid, ``(B, 2)`` sizes.

    Raises:
        ValueError: naming the mismatch.
    """
    if feats.ndim != 3:
        raise ValueError(f"features must be (B, N, C), got shape {tuple(feats.shape)}")
    b, n, _ = feats.shape
    if grid_hw[0] * grid_hw[1] != n:
        raise ValueError(f"grid {grid_hw} has {grid_hw[0] * grid_hw[1]} patches but features have N={n}")
    if tuple(image_hws.shape) != (b, 2):
        raise ValueError(f"{image_hws.shape[0]} image sizes for a batch of {b}")


def seed_component_batch(
    masks: torch.Tensor, seeds: torch.Tensor, patch_size: int, image_hws: torch.Tensor, score_map: torch.Tensor
) -> ObjectsBatch:
    """Seed components and their boxes for a batch, one object per image, without leaving the device.

    Args:
        masks: ``(B, h, w)`` bool foreground masks.
        seeds: ``(B,)`` int64 row-major seed indices. Where the seed is not in its mask the
            component is the seed patch alone.
        patch_size: patch side in pixels.
        image_hws: ``(B, 2)`` int64 unpadded image sizes ``(H, W)`` in pixels.
        score_map: ``(B, h, w)`` per-patch map kept alongside.

    Returns:
        :class:`~objdisc.objects.ObjectsBatch` on the masks' device, ``K = 1``, score 1: the
        component is the object's mask, ``masks`` the foreground it was taken from.
    """
    b, h, w = masks.shape
    flat = masks.reshape(b, h * w)
    seed_hot = torch.zeros_like(flat)
    seed_hot[torch.arange(b, device=masks.device), seeds] = True
    seed_in = (flat & seed_hot).any(1, keepdim=True)
    allowed = torch.where(seed_in, flat, seed_hot).reshape(b, h, w)
    component = seed_hot.reshape(b, h, w)
    for _ in range(h + w):
        component = _dilate4(component) & allowed
    converged = (_dilate4(component) & allowed).eq(component).flatten(1).all(1)
    return ObjectsBatch(
        boxes=_boxes(component, patch_size, image_hws)[:, None],
        scores=torch.ones((b, 1), dtype=torch.float32, device=masks.device),
        valid=torch.ones((b, 1), dtype=torch.bool, device=masks.device),
        seeds=seeds[:, None],
        masks=component[:, None],
        score_map=score_map,
        converged=converged[:, None],
        foreground=masks[:, None],
    )


def _dilate4(x: torch.Tensor) -> torch.Tensor:
    """4-neighbour binary dilation of ``(B, h, w)`` bool grids (no wrap-around)."""
    out = x.clone()
    out[:, 1:, :] |= x[:, :-1, :]
    out[:, :-1, :] |= x[:, 1:, :]
    out[:, :, 1:] |= x[:, :, :-1]
    out[:, :, :-1] |= x[:, :, 1:]
    return out


def _boxes(component: torch.Tensor, patch_size: int, image_hws: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` non-empty components -> ``(B, 4)`` int64 clipped pixel boxes."""
    _, h, w = component.shape
    rows = component.any(2).to(torch.uint8)  # (B, h)
    cols = component.any(1).to(torch.uint8)  # (B, w)
    # argmax returns the first maximum: the first True from either end.
    y1 = rows.argmax(1)
    y2 = h - rows.flip(1).argmax(1)
    x1 = cols.argmax(1)
    x2 = w - cols.flip(1).argmax(1)
    hws = image_hws.to(component.device)
    return torch.stack(
        [
            x1 * patch_size,
            y1 * patch_size,
            torch.minimum(x2 * patch_size, hws[:, 1]),
            torch.minimum(y2 * patch_size, hws[:, 0]),
        ],
        dim=1,
    ).long()


