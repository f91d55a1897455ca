"""The fast bilateral solver (Barron and Poole, ECCV 2016) as TokenCut refines saliency masks with.

TokenCut's ``unsupervised_saliency_detection/bilateral_solver.py``, run by its ``get_saliency.py``:

1. the reference image in YUV (JPEG's full-range BT.601: ``Y = .299 R + .587 G + .114 B``,
   ``U``, ``V`` offset by 128); every pixel gets the 5-d grid vertex
   ``(x // s, y // s, Y // l, U // c, V // c)`` (truncated), with spatial ``s = 16``, luma
   ``l = 16``, chroma ``c = 8`` (get_saliency.py's values; the function's own defaults, 24 / 4 / 4, are not what it
   runs); the occupied vertices are the grid;
2. ``S``: the splat matrix (vertex x pixel, 1 where the pixel falls); ``B``: the blur, per
   dimension 1 between vertices one step apart (the grid's ``[1, 2, 1]`` kernel is
   ``2 * 5 * I + B``);
3. bistochastization, 10 rounds: ``m = S 1``, ``n = 1``, ``n <- sqrt(n m / blur(n))``, then
   ``m = n blur(n)``;
4. ``A = λ (diag(m) - diag(n) blur diag(n)) + diag(S c)``, ``b = S (t c)`` with the target
   ``t`` (the 0/1 mask), the confidence ``c = 0.999`` everywhere and ``λ = 256``;
5. ``A y = b`` by conjugate gradients with the Jacobi preconditioner ``1 / max(diag(A), 1e-5)``,
   from ``y0 = S (t c) / S c``, at most 25 iterations, stopping when ``|r| < 1e-5 |b|``
   (scipy's ``cg``: the official code calls it with ``tol=``, which scipy 1.14 removed; objdisc
   runs its own loop, checked against ``scipy.sparse.linalg.cg`` with ``rtol``);
6. the output is ``S^T y``: a soft map, which TokenCut scores as it is (its metrics threshold
   it), not the binary mask it draws.

:func:`refined_mask` makes the binary mask objdisc writes and draws: ``soft > 0.5``, holes filled,
its largest 4-connected component. (get_saliency.py takes the component with the second largest
pixel count *counting the background*, which is the largest object only when the background is
larger than every object; it only draws that mask, it never scores it.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGMA_SPATIAL, SIGMA_LUMA, SIGMA_CHROMA = 16.0, 16.0, 8.0
LAMBDA = 256.0
CONFIDENCE = 0.999
CG_ITERATIONS, CG_TOLERANCE, DIAGONAL_MIN = 25, 1e-5, 1e-5
BISTOCHASTIC_ROUNDS = 10
DIMENSIONS = 5

# JPEG / BT.601 full range, rows Y, U, V
RGB_TO_YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
YUV_OFFSET = np.array([0.0, 128.0, 128.0])


@dataclass(frozen=True)
class BilateralGrid:
    """The occupied vertices of an image's bilateral grid.

    Attributes:
        splat: ``(V, N)`` sparse, 1 at (the pixel's vertex, the pixel), pixels row-major.
        neighbours: ``(V, V)`` sparse, 1 between vertices one step apart in one dimension.
    """

    splat: object  # scipy.sparse.csr_matrix
    neighbours: object

    @property
    def n_vertices(self) -> int:
        return int(self.splat.shape[0])  # type: ignore[attr-defined]

    def blur(self, x: np.ndarray) -> np.ndarray:
        """The grid's ``[1, 2, 1]`` blur in every dimension: ``2 * 5 * x + B x``."""
        return 2 * DIMENSIONS * x + self.neighbours @ x  # type: ignore[operator]


def vertex_coordinates(
    rgb: np.ndarray, sigma_spatial: float = SIGMA_SPATIAL, sigma_luma: float = SIGMA_LUMA,
    sigma_chroma: float = SIGMA_CHROMA,
) -> np.ndarray:  # fmt: skip
    """``(N, 5)`` int64 grid coordinates ``(x, y, Y, U, V)`` of each pixel, row-major (step 1)."""
    height, width = rgb.shape[:2]
    yuv = rgb.reshape(-1, 3).astype(np.float64) @ RGB_TO_YUV.T + YUV_OFFSET
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.stack(
        [
            (cols / sigma_spatial).astype(np.int64),
            (rows / sigma_spatial).astype(np.int64),
            (yuv[:, 0] / sigma_luma).astype(np.int64),
            (yuv[:, 1] / sigma_chroma).astype(np.int64),
            (yuv[:, 2] / sigma_chroma).astype(np.int64),
        ],
        axis=1,
    )


def bilateral_grid(coordinates: np.ndarray) -> BilateralGrid:
    """The grid of ``(N, 5)`` integer vertex coordinates (step 2)."""
    import scipy.sparse

    n_pixels = len(coordinates)
    low = coordinates.min(axis=0) - 1
    extent = coordinates.max(axis=0) - low + 2  # room for a step either side
    strides = np.cumprod(np.concatenate(([1], extent[:-1]))).astype(np.int64)
    keys = (coordinates - low) @ strides
    vertices, vertex_of = np.unique(keys, return_inverse=True)
    n = len(vertices)
    splat = scipy.sparse.csr_matrix((np.ones(n_pixels), (vertex_of, np.arange(n_pixels))), shape=(n, n_pixels))
    rows, cols = [], []
    for stride in strides:
        for step in (-stride, stride):
            wanted = vertices + step
            at = np.clip(np.searchsorted(vertices, wanted), 0, n - 1)
            found = np.flatnonzero(vertices[at] == wanted)
            rows.append(found)
            cols.append(at[found])
    r, c = np.concatenate(rows), np.concatenate(cols)
    neighbours = scipy.sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return BilateralGrid(splat, neighbours)


def bistochastize(grid: BilateralGrid, rounds: int = BISTOCHASTIC_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """``(m, n)`` of step 3, each ``(V,)``."""
    m = np.asarray(grid.splat @ np.ones(grid.splat.shape[1])).ravel()  # type: ignore[attr-defined,operator]
    n = np.ones(grid.n_vertices)
    for _ in range(rounds):
        n = np.sqrt(n * m / grid.blur(n))
    return n * grid.blur(n), n


def conjugate_gradients(
    matrix: object, b: np.ndarray, x0: np.ndarray, inverse_diagonal: np.ndarray,
    iterations: int = CG_ITERATIONS, tolerance: float = CG_TOLERANCE,
) -> np.ndarray:  # fmt: skip
    """Preconditioned conjugate gradients for a symmetric positive definite ``matrix`` (step 5).

    Args:
        matrix: ``(V, V)`` sparse.
        b: ``(V,)`` right-hand side.
        x0: ``(V,)`` start.
        inverse_diagonal: ``(V,)`` the Jacobi preconditioner.
        iterations: at most this many updates.
        tolerance: stop before an update once the residual's norm is below ``tolerance |b|``.

    Returns:
        ``(V,)`` the solution after the last update.
    """
    limit = tolerance * np.linalg.norm(b)
    if limit == 0:  # b = 0: the solution is 0
        return np.zeros_like(b)
    x = x0.astype(np.float64, copy=True)
    r = b - matrix @ x if x.any() else b.copy()  # type: ignore[operator]
    direction = np.zeros_like(b)
    rho_previous = 1.0
    for k in range(iterations):
        if np.linalg.norm(r) < limit:
            break
        z = inverse_diagonal * r
        rho = float(np.dot(r, z))
        direction = z.copy() if k == 0 else direction * (rho / rho_previous) + z
        q = matrix @ direction  # type: ignore[operator]
        alpha = rho / float(np.dot(direction, q))
        x += alpha * direction
        r -= alpha * q
        rho_previous = rho
    return x


def bilateral_solve(
    rgb: np.ndarray, target: np.ndarray, *, confidence: float = CONFIDENCE, sigma_spatial: float = SIGMA_SPATIAL,
    sigma_luma: float = SIGMA_LUMA, sigma_chroma: float = SIGMA_CHROMA, lam: float = LAMBDA,
) -> np.ndarray:  # fmt: skip
    """The solver's soft output for a mask on its image (module docstring).

    Args:
        rgb: ``(H, W, 3)`` uint8 reference image.
        target: ``(H, W)`` float target (the 0/1 mask).
        confidence: the confidence of every pixel.
        sigma_spatial, sigma_luma, sigma_chroma: the grid's cell sizes in pixels and levels.
        lam: the smoothness weight.

    Returns:
        ``(H, W)`` float64, about 0 to 1 (not clipped).
    """
    import scipy.sparse

    if rgb.shape[:2] != target.shape:
        raise ValueError(f"a {target.shape} target for a {rgb.shape[:2]} image")
    grid = bilateral_grid(vertex_coordinates(rgb, sigma_spatial, sigma_luma, sigma_chroma))
    m, n = bistochastize(grid)
    t = target.reshape(-1).astype(np.float64)
    c = np.full(t.shape, confidence)
    weight = np.asarray(grid.splat @ c).ravel()  # type: ignore[operator]
    b = np.asarray(grid.splat @ (t * c)).ravel()  # type: ignore[operator]
    scale = scipy.sparse.diags(n)
    blurred = scipy.sparse.identity(len(n)) * (2 * DIMENSIONS) + grid.neighbours  # type: ignore[operator]
    smooth = scipy.sparse.diags(m) - scale @ blurred @ scale
    matrix = (lam * smooth + scipy.sparse.diags(weight)).tocsr()
    inverse_diagonal = 1.0 / np.maximum(matrix.diagonal(), DIAGONAL_MIN)
    y = conjugate_gradients(matrix, b, b / weight, inverse_diagonal)
    return np.asarray(grid.splat.T @ y).reshape(target.shape)  # type: ignore[attr-defined]


def refined_mask(soft: np.ndarray) -> np.ndarray:
    """The binary mask of a soft output: ``soft > 0.5``, holes filled, the largest 4-connected
    component (the lowest label on a tie); empty when nothing is above 0.5.

    Returns:
        ``(H, W)`` bool.
    """
    import scipy.ndimage

    filled = scipy.ndimage.binary_fill_holes(soft > 0.5)
    labels, count = scipy.ndimage.label(filled)
    if count == 0:
        return filled
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


__all__ = [
    "BilateralGrid",
    "bilateral_grid",
    "bilateral_solve",
    "bistochastize",
    "conjugate_gradients",
    "refined_mask",
    "vertex_coordinates",
]
