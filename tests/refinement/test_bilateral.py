"""The bilateral solver: its grid against a brute-force construction, its conjugate gradients
against scipy's, its output on an image with a known answer, the binary mask made from it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from objdisc.refinement.bilateral import (
    CG_ITERATIONS,
    CG_TOLERANCE,
    bilateral_grid,
    bilateral_solve,
    conjugate_gradients,
    refined_mask,
    vertex_coordinates,
)


def two_regions(height: int = 40, width: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A dark background with a bright red rectangle (the object), a little seeded noise."""
    rng = np.random.default_rng(0)
    rgb = np.full((height, width, 3), 30.0) + rng.normal(0, 2, (height, width, 3))
    truth = np.zeros((height, width), dtype=bool)
    truth[8:30, 10:34] = True
    rgb[truth] = [220.0, 40.0, 40.0]
    return np.clip(rgb, 0, 255).astype(np.uint8), truth


def test_the_grid_is_the_occupied_vertices_and_their_one_step_neighbours():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)
    coords = vertex_coordinates(rgb, 8, 64, 64)
    yuv = (
        rgb.astype(float)
        @ np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]).T
    )
    y, x = np.mgrid[:20, :23]
    assert coords[:, 0].tolist() == (x.ravel() // 8).tolist() and coords[:, 1].tolist() == (y.ravel() // 8).tolist()
    assert coords[:, 2].tolist() == (yuv[..., 0].ravel() // 64).astype(int).tolist()
    assert coords[:, 3].tolist() == ((yuv[..., 1].ravel() + 128) // 64).astype(int).tolist()
    grid = bilateral_grid(coords)
    vertices = sorted({tuple(c) for c in coords.tolist()})
    assert grid.n_vertices == len(vertices)
    # the splat maps each pixel to its vertex: pixels of one vertex share a row
    splat = grid.splat.toarray()
    assert (splat.sum(axis=0) == 1).all() and splat.sum() == len(coords)
    rows = {tuple(coords[np.flatnonzero(splat[v])[0]]): v for v in range(len(vertices))}
    neighbours = grid.neighbours.toarray()
    for a, b in itertools.product(vertices, vertices):
        one_step = sum(abs(i - j) for i, j in zip(a, b, strict=True)) == 1
        assert neighbours[rows[a], rows[b]] == (1.0 if one_step else 0.0), (a, b)


def test_conjugate_gradients_equal_scipys():
    rng = np.random.default_rng(2)
    n = 60
    a = scipy.sparse.random(n, n, density=0.1, random_state=3)
    matrix = (a @ a.T + scipy.sparse.identity(n) * 0.5).tocsr()
    b, x0 = rng.normal(size=n), rng.normal(size=n)
    inverse = 1.0 / matrix.diagonal()
    for iterations in (3, CG_ITERATIONS):
        ours = conjugate_gradients(matrix, b, x0, inverse, iterations)
        theirs, _ = scipy.sparse.linalg.cg(
            matrix, b, x0=x0, M=scipy.sparse.diags(inverse), maxiter=iterations, rtol=CG_TOLERANCE
        )
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_a_rough_mask_snaps_to_the_object():
    rgb, truth = two_regions()
    rough = np.zeros(truth.shape)
    rough[4:26, 14:40] = 1.0  # shifted: covers background, misses part of the object
    soft = bilateral_solve(rgb, rough, sigma_spatial=8)
    assert soft.shape == truth.shape and soft.dtype == np.float64
    mask = refined_mask(soft)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(mask, truth) > 0.95 > 0.6 > iou(rough > 0.5, truth)


def test_a_constant_target_stays_constant():
    rgb, _ = two_regions()
    for value in (0.0, 1.0):
        soft = bilateral_solve(rgb, np.full(rgb.shape[:2], value))
        np.testing.assert_allclose(soft, value, atol=1e-9)


def test_the_binary_mask_fills_holes_and_keeps_the_largest_component():
    soft = np.zeros((10, 12))
    soft[1:6, 1:6] = 0.9
    soft[3, 3] = 0.1  # a hole
    soft[7:9, 8:11] = 0.8  # a smaller component
    mask = refined_mask(soft)
    expected = np.zeros((10, 12), dtype=bool)
    expected[1:6, 1:6] = True
    assert (mask == expected).all()
    assert not refined_mask(np.zeros((4, 4))).any()


def test_a_target_of_another_size_is_refused():
    rgb, _ = two_regions()
    with pytest.raises(ValueError, match="target"):
        bilateral_solve(rgb, np.zeros((4, 4)))
