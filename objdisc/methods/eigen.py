"""The normalised cut's eigenpair: the second smallest eigenvalue of ``(D - W) x = lambda D x``.

TokenCut and MaskCut cut a patch graph ``W`` (``(N, N)``, symmetric, positive entries) by the
eigenvector ``x`` of the second smallest generalised eigenvalue ``lambda``. Two solvers give it:

- on the host, one graph at a time (:func:`second_eigenpair`): Lanczos (ARPACK) on the normalised
  graph ``M = D^-1/2 W D^-1/2`` with its known top eigenvector ``D^1/2 1`` deflated, from a fixed
  start, the dense generalised solve as fallback and for graphs under 64 patches;
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []


_DENSE_BELOW = 64  # patches; below this the dense solve is as fast and never fails


def second_eigenpair(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """``(x, lambda)``: the second smallest eigenvalue of ``(D - W) x = lambda D x`` and its vector.

    Args:
        weights: ``(N, N)`` symmetric float64 graph with positive entries.

    Returns:
        ``(N,)`` float64 eigenvector (scale and sign arbitrary) and ``lambda`` in ``[0, 1]`` (the
        normalised cut's value: small for a clean cut); zeros and ``1.0`` where the graph is
        degenerate (every off-diagonal weight equal: no cut exists, see :mod:`objdisc.methods.tokencut`).
    """
    import scipy.linalg
    import scipy.sparse.linalg

    n = len(weights)
    if n < 2:
        return np.ones(n), 1.0
    if uniform_graph(weights):
        return np.zeros(n), 1.0
    degree = weights.sum(1)
    if n >= _DENSE_BELOW:
        scale = 1.0 / np.sqrt(degree)
        normalised = weights * scale[:, None] * scale[None, :]
        top = np.sqrt(degree) / np.linalg.norm(np.sqrt(degree))  # M's known top eigenvector

        def matvec(v: np.ndarray) -> np.ndarray:
            v = v.ravel()
            return normalised @ v - top * (top @ v)

        operator = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        start = np.random.default_rng(0).standard_normal(n)
        start -= top * (top @ start)  # nothing along the deflated vector
        try:
            values, vec = scipy.sparse.linalg.eigsh(operator, k=1, which="LA", v0=start, tol=1e-10)
            return vec[:, 0] * scale, float(1.0 - values[0])  # M's eigenvalue is 1 - lambda
        except scipy.sparse.linalg.ArpackError:  # no convergence, or any other ARPACK failure
            pass
    values, vec = scipy.linalg.eigh(np.diag(degree) - weights, np.diag(degree), subset_by_index=[1, 1])
    return vec[:, 0], float(values[0])


def uniform_graph(weights: np.ndarray) -> bool:
    """Whether every off-diagonal weight of the ``(N, N)`` graph is the same (no cut exists)."""
    n = len(weights)
    first = weights[0, 1]
    off_diagonal_equal = np.count_nonzero(weights == first) - np.count_nonzero(np.diagonal(weights) == first)
    return bool(off_diagonal_equal == n * (n - 1))
