"""The normalised cut's eigenpair: the second smallest eigenvalue of ``(D - W) x = lambda D x``.

TokenCut and MaskCut cut a patch graph ``W`` (``(N, N)``, symmetric, positive entries) by the
eigenvector ``x`` of the second smallest generalised eigenvalue ``lambda``. Two solvers give it:

- on the host, one graph at a time (:func:`second_eigenpair`): Lanczos (ARPACK) on the normalised
  graph ``M = D^-1/2 W D^-1/2`` with its known top eigenvector ``D^1/2 1`` deflated, from a fixed
  start, the dense generalised solve as fallback and for graphs under 64 patches;
- on the graphs' device, a batch at a time (:func:`second_eigenpairs`, ``--eigen device``): the
  same Lanczos iteration on the same deflated operator from the same start, written in torch
  (float64, full re-orthogonalisation, batched matrix products), so that a GPU solves the batch's
  graphs together instead of copying each to the host. It stops an image once its Ritz pair's
  residual ``||M x - theta x||`` is below ``1e-12 theta``, ARPACK's own test with a hundredth of its
  tolerance; an image that has not converged after :data:`MAX_STEPS` steps, or a degenerate one,
  is solved on the host as above. Both answer the same eigenvector to about ``1e-10 / gap``;
  a mask differs only where a patch's entry lies that close to the mean (measured in
  ``benchmarks/maskcut.py`` and ``benchmarks/gpu.py``; the tests compare both on seeded graphs).

``--eigen auto`` (the default) takes the device solver when the features are on a GPU and the
host one on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SOLVERS = ("auto", "host", "device")
MAX_STEPS = 300  # Lanczos steps on the device before an image falls back to the host
CHECK_EVERY = 10  # steps between convergence checks (each one syncs with the device)
TOLERANCE = 1e-12  # relative residual of the Ritz pair
BREAKDOWN = 1e-12  # a Lanczos residual this small ends the basis (an invariant subspace)



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


def second_eigenpairs(weights: torch.Tensor, solver: str = "auto") -> list[tuple[np.ndarray, float]]:
    """:func:`second_eigenpair` of each graph of a batch, by ``solver`` (module docstring).

    Args:
        weights: ``(B, N, N)`` symmetric float64 graphs with positive entries, on any device.
        solver: ``auto`` (the device's solver on a GPU, the host's on the CPU), ``host`` or
            ``device`` (the batched torch Lanczos, also on the CPU).

    Returns:
        Per graph, the ``(N,)`` float64 eigenvector on the host (scale and sign arbitrary) and
        ``lambda`` in ``[0, 1]``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"eigen solver {solver!r}: use one of {', '.join(SOLVERS)}")
    if solver == "auto":
        solver = "host" if weights.device.type == "cpu" else "device"
    n = weights.shape[-1]
    if solver == "host" or n < _DENSE_BELOW:
        return [second_eigenpair(w.cpu().numpy()) for w in weights]
    found = lanczos_batch(weights)
    return [pair if pair is not None else second_eigenpair(weights[i].cpu().numpy()) for i, pair in enumerate(found)]


def lanczos_batch(
    weights: torch.Tensor, max_steps: int = MAX_STEPS, tolerance: float = TOLERANCE
) -> list[tuple[np.ndarray, float] | None]:
    """The second eigenpair of each graph by Lanczos on its device (module docstring).

    Args:
        weights: ``(B, N, N)`` symmetric float64 graphs, ``N >= 2``; left unchanged.
        max_steps: Lanczos steps at most (capped at ``N - 1``, the deflated operator's rank).
        tolerance: relative residual ``||M x - theta x|| / |theta|`` under which an image stops.

    Returns:
        Per graph ``(x (N,) float64 on the host, lambda)``, or ``None`` where it is degenerate
        (every off-diagonal weight equal) or did not converge: the caller solves those on the host.
    """
    import torch

    b, n = weights.shape[0], weights.shape[-1]
    device = weights.device
    degree = weights.sum(-1)  # (B, N)
    scale = degree.rsqrt()
    normalised = weights * scale[:, :, None] * scale[:, None, :]  # M = D^-1/2 W D^-1/2, (B, N, N)
    top = degree.sqrt()
    top = top / top.norm(dim=-1, keepdim=True)  # M's eigenvector of eigenvalue 1, deflated

    def apply(v: torch.Tensor) -> torch.Tensor:  # (B, N) -> (M - t t^T) v
        return torch.bmm(normalised, v[:, :, None])[:, :, 0] - top * (top * v).sum(-1, keepdim=True)

    start = torch.from_numpy(np.random.default_rng(0).standard_normal(n)).to(device).expand(b, n)
    v = start - top * (top * start).sum(-1, keepdim=True)  # as the host solver's start
    v = v / v.norm(dim=-1, keepdim=True)
    steps = min(max_steps, n - 1)
    basis = torch.zeros(b, steps, n, dtype=torch.float64, device=device)
    alphas = torch.zeros(b, steps, dtype=torch.float64, device=device)
    betas = torch.zeros(b, steps, dtype=torch.float64, device=device)
    results: list[tuple[np.ndarray, float] | None] = [None] * b
    pending = ~_uniform(weights).cpu().numpy()
    previous = torch.zeros_like(v)
    for j in range(steps):
        basis[:, j] = v
        w = apply(v)
        alpha = (w * v).sum(-1)
        w = w - alpha[:, None] * v - (betas[:, j - 1, None] * previous if j > 0 else 0.0)
        for _ in range(2):  # full re-orthogonalisation, twice (Kahan's "twice is enough")
            w = w - torch.bmm((torch.bmm(basis[:, : j + 1], w[:, :, None])).transpose(1, 2), basis[:, : j + 1])[:, 0]
        beta = w.norm(dim=-1)
        alphas[:, j], betas[:, j] = alpha, beta
        # an invariant subspace found (beta ~ 0): the basis ends there, later steps add zeros
        previous, v = v, torch.where(beta[:, None] > BREAKDOWN, w / beta.clamp_min(BREAKDOWN)[:, None], 0.0)
        if (j + 1) % CHECK_EVERY and j + 1 < steps:
            continue
        done = _converged(alphas[:, : j + 1].cpu().numpy(), betas[:, : j + 1].cpu().numpy(), pending, tolerance)
        for i, (theta, y) in done.items():
            x = (torch.from_numpy(y).to(device)[None] @ basis[i, : j + 1])[0] * scale[i]
            vector = x.cpu().numpy()
            results[i] = (vector, float(1.0 - theta)) if np.linalg.norm(vector) > 0 else None
            pending[i] = False
        if not pending.any():
            break
    return results


def _converged(
    alphas: np.ndarray, betas: np.ndarray, pending: np.ndarray, tolerance: float
) -> dict[int, tuple[float, np.ndarray]]:
    """Per pending image whose largest Ritz pair has converged: ``(theta, y (m,))``, the Ritz
    value and its vector in the Lanczos basis.

    Args:
        alphas: ``(B, m)`` diagonals of the tridiagonal matrices ``T``.
        betas: ``(B, m)`` off-diagonals; ``betas[:, -1]`` the residual's norm.
        pending: ``(B,)`` the images still running.
        tolerance: relative residual ``|beta_m y_m| / |theta|``.
    """
    import scipy.linalg

    m = alphas.shape[1]
    out: dict[int, tuple[float, np.ndarray]] = {}
    for i in np.flatnonzero(pending):
        values, vectors = scipy.linalg.eigh_tridiagonal(alphas[i], betas[i, : m - 1])
        theta, y = float(values[-1]), vectors[:, -1]
        residual = abs(betas[i, -1] * y[-1])
        if residual <= tolerance * max(abs(theta), 1e-300):
            out[int(i)] = (theta, y)
    return out


def _uniform(weights: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: every off-diagonal weight of the graph is the same (:func:`uniform_graph`)."""
    n = weights.shape[-1]
    first = weights[:, 0, 1][:, None, None]
    equal = (weights == first).sum((1, 2)) - (weights.diagonal(dim1=1, dim2=2) == first[:, :, 0]).sum(-1)
    return equal == n * (n - 1)


__all__ = ["MAX_STEPS", "SOLVERS", "lanczos_batch", "second_eigenpair", "second_eigenpairs", "uniform_graph"]
