"""LOST on hand-made keys with known answers, and against a loop-by-loop reference."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from objdisc import Objects, lost, lost_batch


def box_of(objects: Objects) -> tuple[int, ...]:
    """The one object's box of a one-object result."""
    assert len(objects) == 1 and objects.scores.tolist() == [1.0]
    return tuple(int(v) for v in objects.boxes[0])


def reference_lost(keys: np.ndarray, grid_hw, patch, image_hw, k=100):
    """LOST's definition (objdisc.methods.lost), written as plainly as possible (float64 is exact for
    the integer-valued keys these tests use)."""
    h, w = grid_hw
    n = len(keys)
    a = keys.astype(np.float64) @ keys.astype(np.float64).T
    degree = [sum(1 for j in range(n) if j != i and a[i, j] > 0) for i in range(n)]
    order = sorted(range(n), key=lambda i: (degree[i], i))
    seed = order[0]
    similars = [p for p in order[:k] if a[seed, p] > 0]
    mask = (sum(a[p] for p in similars) > 0).reshape(h, w) if similars else np.zeros((h, w), bool)
    comp = np.zeros((h, w), bool)
    sy, sx = divmod(seed, w)
    if mask[sy, sx]:
        queue = deque([(sy, sx)])
        comp[sy, sx] = True
        while queue:
            y, x = queue.popleft()
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not comp[yy, xx]:
                    comp[yy, xx] = True
                    queue.append((yy, xx))
    else:
        comp[sy, sx] = True
    ys, xs = np.nonzero(comp)
    box = (
        xs.min() * patch,
        ys.min() * patch,
        min((xs.max() + 1) * patch, image_hw[1]),
        min((ys.max() + 1) * patch, image_hw[0]),
    )
    return tuple(int(v) for v in box), seed, comp


def two_clusters(grid_hw, fg_cells):
    """Background keys e0, foreground keys -e0 + e1: fg.bg < 0, fg.fg > 0, bg.bg > 0."""
    h, w = grid_hw
    keys = torch.zeros(h * w, 4)
    keys[:, 0] = 1.0
    for y, x in fg_cells:
        keys[y * w + x] = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    return keys


def test_two_clusters_finds_the_small_cluster():
    fg = [(1, 2), (1, 3), (2, 2), (2, 3)]
    result = lost(two_clusters((4, 5), fg), (4, 5), 16, (64, 80))
    assert result.seeds[0] == 1 * 5 + 2  # lowest-degree patches are the fg ones; lowest index wins
    assert box_of(result) == (32, 16, 64, 48)
    expected = np.zeros((4, 5), bool)
    for y, x in fg:
        expected[y, x] = True
    np.testing.assert_array_equal(result.masks[0], expected)
    assert result.score_map[1, 2] == 3 and result.score_map[0, 0] == 15


def test_ties_pick_the_lowest_index():
    keys = torch.ones(12, 3)  # every patch has degree 11
    result = lost(keys, (3, 4), 8, (24, 32))
    assert result.seeds[0] == 0
    assert result.masks[0].all()
    assert box_of(result) == (0, 0, 32, 24)


def test_ties_between_clusters_pick_the_lowest_index():
    # Two 2-patch clusters, negative to each other and to the background: every fg patch has
    # degree 1, so the seed is the lowest fg index and only its own cluster is kept.
    keys = two_clusters((3, 6), [])
    keys[[4, 5]] = torch.tensor([-1.0, 1.0, 0.0, -2.0])
    keys[[12, 13]] = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    result = lost(keys, (3, 6), 10, (30, 60))
    assert result.score_map.ravel()[[4, 5, 12, 13]].tolist() == [1, 1, 1, 1]
    assert result.seeds[0] == 4
    assert box_of(result) == (40, 0, 60, 10)


def test_seed_at_the_border_is_clipped_to_the_unpadded_image():
    # 3x4 grid of 14 px patches = 42x56 padded; the image is 40x50.
    keys = two_clusters((3, 4), [(2, 3), (1, 3)])
    result = lost(keys, (3, 4), 14, (40, 50))
    assert result.seeds[0] == 1 * 4 + 3
    assert box_of(result) == (42, 14, 50, 40)


@pytest.mark.parametrize("k", [5, 100, 10_000])
def test_k_larger_than_n_uses_every_patch(k):
    keys = two_clusters((2, 3), [(0, 0)])
    result = lost(keys, (2, 3), 8, (16, 24), k_patches=k)
    assert result.seeds[0] == 0 and box_of(result) == (0, 0, 8, 8)


def test_k_limits_the_seed_expansion():
    # An L-shaped fg cluster; with k=1 only the seed's own row counts, still the whole cluster
    # because A[seed] > 0 on all fg patches; a bg patch with a small positive affinity to the
    # seed but a high degree is excluded by k.
    keys = two_clusters((3, 3), [(0, 0), (0, 1), (1, 0)])
    full = lost(keys, (3, 3), 4, (12, 12))
    assert box_of(full) == (0, 0, 8, 8)
    one = lost(keys, (3, 3), 4, (12, 12), k_patches=1)
    assert one.seeds[0] == 0 and box_of(one) == (0, 0, 8, 8)


def test_component_is_four_connected():
    # Two fg patches touching only diagonally: the seed's component is one patch.
    keys = two_clusters((3, 3), [(0, 0), (1, 1)])
    result = lost(keys, (3, 3), 10, (30, 30))
    assert result.seeds[0] == 0
    assert result.masks[0].sum() == 1 and box_of(result) == (0, 0, 10, 10)


def test_zero_seed_key_gives_the_seed_patch():
    keys = torch.ones(6, 2)
    keys[4] = 0.0  # degree 0: the seed, with A[seed, seed] = 0
    result = lost(keys, (2, 3), 5, (10, 15))
    assert result.seeds[0] == 4
    assert box_of(result) == (5, 5, 10, 10)


@pytest.mark.parametrize("seed", range(25))
def test_matches_reference_on_integer_keys(seed):
    # Small integer keys: many exact ties and exact zeros, the cases an implementation gets wrong.
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 9, size=2)
    keys = rng.integers(-2, 3, size=(h * w, int(rng.integers(1, 5)))).astype(np.float32)
    k = int(rng.integers(1, h * w + 3))
    image_hw = (int(h * 14 - rng.integers(0, 14)), int(w * 14 - rng.integers(0, 14)))
    box, ref_seed, comp = reference_lost(keys, (h, w), 14, image_hw, k)
    result = lost(torch.from_numpy(keys), (int(h), int(w)), 14, image_hw, k_patches=k)
    assert result.seeds[0] == ref_seed
    assert box_of(result) == box
    np.testing.assert_array_equal(result.masks[0], comp)


def test_batch_equals_single_images():
    rng = np.random.default_rng(0)
    keys = torch.from_numpy(rng.standard_normal((3, 20, 8)).astype(np.float32))
    sizes = [(40, 50), (38, 47), (40, 41)]
    batched = lost_batch(keys, (4, 5), 10, sizes, k_patches=7)
    for i in range(3):
        single = lost(keys[i], (4, 5), 10, sizes[i], k_patches=7)
        assert box_of(batched[i]) == box_of(single) and batched[i].seeds[0] == single.seeds[0]
        np.testing.assert_array_equal(batched[i].masks[0], single.masks[0])


def test_affinity_is_float32_even_under_autocast():
    rng = np.random.default_rng(1)
    keys = torch.from_numpy(rng.standard_normal((30, 16)).astype(np.float32)).bfloat16()
    expected = lost(keys.float(), (5, 6), 8, (40, 48))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lost(keys, (5, 6), 8, (40, 48))
    assert box_of(got) == box_of(expected) and got.seeds[0] == expected.seeds[0]


@pytest.mark.parametrize(
    ("keys_shape", "grid", "sizes", "message"),
    [((1, 6, 2), (2, 2), [(8, 8)], "grid"), ((1, 4, 2), (2, 2), [], "image sizes")],
)
def test_bad_arguments_are_named(keys_shape, grid, sizes, message):
    with pytest.raises(ValueError, match=message):
        lost_batch(torch.ones(keys_shape), grid, 4, sizes)


def test_no_tf32_restores_the_settings():
    from objdisc.utils.device import no_tf32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    with no_tf32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_one_image_may_come_as_the_extractors_batch_of_one():
    keys = two_clusters((4, 5), [(1, 2), (1, 3)])
    assert box_of(lost(keys[None], (4, 5), 16, (64, 80))) == box_of(lost(keys, (4, 5), 16, (64, 80)))
    with pytest.raises(ValueError, match="lost_batch"):
        lost(torch.stack([keys, keys]), (4, 5), 16, (64, 80))


def test_lost_is_a_method_of_the_registry_with_its_options():
    from objdisc.errors import OptionError
    from objdisc.methods import Lost, make_method

    method = make_method("lost", k_patches=7)
    assert method == Lost(k_patches=7) and method.options() == {"method": "lost", "k_patches": 7, "gram_bias": 0.0}
    with pytest.raises(OptionError, match="--k-patches must be at least 1"):
        Lost(k_patches=0)
    with pytest.raises(OptionError, match="--tau is an option of tokencut, maskcut, promerge; lost does not take it"):
        make_method("lost", tau=0.3)
