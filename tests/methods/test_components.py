from __future__ import annotations

import numpy as np
import pytest
import torch

from objdisc.geometry import component_box, seed_component
from objdisc.methods.components import seed_component_batch
from objdisc.methods.lost import lost_device


def snake(h: int, w: int) -> np.ndarray:
    """A one-patch-wide boustrophedon path: its far end is ~h*w/2 steps from its start."""
    mask = np.zeros((h, w), dtype=bool)
    mask[::2, :] = True
    for row in range(1, h, 2):
        mask[row, w - 1 if row % 4 == 1 else 0] = True
    return mask


def spiral(n: int) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        mask[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return mask


def cases() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    out = [(rng.random((9, 13)) < p, int(rng.integers(9 * 13))) for p in (0.3, 0.5, 0.6, 0.8) for _ in range(6)]
    out += [(snake(9, 13), 0), (spiral(13)[:9], 0), (np.zeros((9, 13), bool), 40), (np.ones((9, 13), bool), 116)]
    return out


def test_device_components_equal_scipy_on_random_snake_and_spiral_masks():
    masks, seeds = zip(*cases(), strict=True)
    hws = torch.tensor([[9 * 8 - 3, 13 * 8 - 5]] * len(masks))
    found = seed_component_batch(
        torch.from_numpy(np.stack(masks)), torch.tensor(seeds), 8, hws, torch.zeros(len(masks), 9, 13)
    )
    assert not found.converged.all(), "the snake must need the host fallback"
    results = found.to_host(8, [(9 * 8 - 3, 13 * 8 - 5)] * len(masks))
    for mask, seed, result in zip(masks, seeds, results, strict=True):
        expected = seed_component(mask, seed)
        np.testing.assert_array_equal(result.masks[0], expected)
        assert tuple(result.boxes[0].tolist()) == component_box(expected, 8, (9 * 8 - 3, 13 * 8 - 5))
        assert result.seeds[0] == seed


def test_converged_components_are_exact_without_the_host():
    rng = np.random.default_rng(1)
    masks = rng.random((16, 7, 11)) < 0.55
    seeds = rng.integers(77, size=16)
    found = seed_component_batch(
        torch.from_numpy(masks), torch.from_numpy(seeds), 14, torch.tensor([[90, 150]] * 16), torch.zeros(16, 7, 11)
    )
    for i in np.flatnonzero(found.converged[:, 0].numpy()):
        component = found.masks[i, 0].numpy()
        np.testing.assert_array_equal(component, seed_component(masks[i], int(seeds[i])))
        assert tuple(found.boxes[i, 0].tolist()) == component_box(component, 14, (90, 150))


@pytest.fixture
def no_host_sync(monkeypatch):
    """Make every tensor -> host conversion raise, as a CUDA sync would cost."""

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside the batch computation")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def test_lost_on_the_device_never_syncs_with_the_host(no_host_sync):
    keys = torch.randn(3, 6 * 5, 16)
    found = lost_device(keys, (6, 5), 14, torch.tensor([[80, 70]] * 3), k_patches=10, gram_bias=0.5)
    assert found.boxes.shape == (3, 1, 4) and found.masks.shape == (3, 1, 6, 5)
