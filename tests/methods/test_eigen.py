"""The normalised cut's eigen-solvers: the batched torch Lanczos (``--eigen device``, run here on
the CPU) against the host's ARPACK solve, alone and inside MaskCut and TokenCut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import folder_run

import objdisc.methods.eigen as eigen
from objdisc.methods.eigen import lanczos_batch, second_eigenpair, second_eigenpairs
from objdisc.methods.maskcut import maskcut_batch
from objdisc.methods.tokencut import tokencut_device


def blob_features(seed: int, h: int, w: int, noise: float = 0.3, groups: int = 4) -> np.ndarray:
    """``(h * w, 16)`` features of a few blob-shaped groups plus noise (seeded)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, 16))
    labels = scipy.ndimage.median_filter(rng.integers(0, groups, size=(h, w)), size=3)
    return centres[labels.ravel()] + noise * rng.standard_normal((h * w, 16))


def graph(feats: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> np.ndarray:
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return np.where(unit @ unit.T > tau, 1.0, eps)


def aligned(a: np.ndarray, b: np.ndarray) -> float:
    """Largest entry difference of the two unit vectors, the sign of ``b`` matched to ``a``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    return float(min(np.abs(a - b).max(), np.abs(a + b).max()))


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_lanczos_gives_the_hosts_eigenpairs(noise: float):
    weights = np.stack([graph(blob_features(seed, 12, 14, noise)) for seed in range(4)])
    found = lanczos_batch(torch.from_numpy(weights))
    for w, pair in zip(weights, found, strict=True):
        assert pair is not None
        vec, lam = pair
        host_vec, host_lam = second_eigenpair(w)
        assert abs(lam - host_lam) < 1e-10 and 0.0 <= lam <= 1.0
        assert aligned(vec, host_vec) < 1e-8
        # the generalised eigen-equation itself, to the solver's tolerance
        degree = w.sum(1)
        residual = (np.diag(degree) - w) @ vec - lam * degree * vec
        assert np.linalg.norm(residual) < 1e-9 * np.linalg.norm(degree * vec)


def test_degenerate_small_and_unconverged_graphs_go_to_the_host(monkeypatch: pytest.MonkeyPatch):
    uniform = np.full((100, 100), 0.5)
    normal = graph(blob_features(0, 10, 10))
    found = lanczos_batch(torch.from_numpy(np.stack([uniform, normal])))
    assert found[0] is None and found[1] is not None
    pairs = second_eigenpairs(torch.from_numpy(np.stack([uniform, normal])), "device")
    assert np.array_equal(pairs[0][0], np.zeros(100)) and pairs[0][1] == 1.0
    # too few steps to converge: None, and second_eigenpairs answers with the host's solve
    assert lanczos_batch(torch.from_numpy(normal[None]), max_steps=3) == [None]
    monkeypatch.setattr(eigen, "lanczos_batch", lambda weights: [None] * len(weights))
    (vec, lam), = second_eigenpairs(torch.from_numpy(normal[None]), "device")
    host_vec, host_lam = second_eigenpair(normal)
    assert np.array_equal(vec, host_vec) and lam == host_lam
    # under 64 patches the dense solve answers, whichever solver is asked for
    small = graph(blob_features(1, 6, 7))
    (vec, lam), = second_eigenpairs(torch.from_numpy(small[None]), "device")
    assert np.array_equal(vec, second_eigenpair(small)[0])


def test_auto_takes_the_host_on_the_cpu_and_unknown_solvers_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(eigen, "lanczos_batch", lambda weights: pytest.fail("the device solver ran"))
    weights = torch.from_numpy(graph(blob_features(2, 10, 10))[None])
    (vec, _), = second_eigenpairs(weights, "auto")
    assert np.array_equal(vec, second_eigenpair(weights[0].numpy())[0])
    with pytest.raises(ValueError, match="use one of auto, host, device"):
        second_eigenpairs(weights, "gpu")


@pytest.mark.parametrize("seed", range(4))
def test_maskcut_and_tokencut_give_the_same_objects_with_either_solver(seed: int):
    h, w = 12, 13
    feats = torch.from_numpy(np.stack([blob_features(seed * 3 + i, h, w) for i in range(3)])).float()
    hws = [(h * 8, w * 8)] * 3
    host = maskcut_batch(feats, (h, w), 8, torch.tensor(hws), 3, 0.2, eigen="host").to_host(8, hws)
    device = maskcut_batch(feats, (h, w), 8, torch.tensor(hws), 3, 0.2, eigen="device").to_host(8, hws)
    for a, b in zip(host, device, strict=True):
        assert np.array_equal(a.masks, b.masks) and a.boxes.tolist() == b.boxes.tolist()
        assert a.seeds.tolist() == b.seeds.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
    host = tokencut_device(feats, (h, w), 8, torch.tensor(hws), 0.2, eigen="host").to_host(8, hws)
    device = tokencut_device(feats, (h, w), 8, torch.tensor(hws), 0.2, eigen="device").to_host(8, hws)
    for a, b in zip(host, device, strict=True):
        assert np.array_equal(a.masks, b.masks) and a.boxes.tolist() == b.boxes.tolist()
        assert a.seeds.tolist() == b.seeds.tolist()


def test_the_solver_is_recorded_but_a_run_resumes_whichever_was_taken(tmp_path, weights_file, two_images):
    out, weights = tmp_path / "o", weights_file("dinov2_reg")
    first = folder_run(weights, two_images, out, "--method", "tokencut", "--eigen", "host")
    assert first.exit_code == 0, first.output
    assert json.loads((out / "run.json").read_text())["producer"]["discovery"]["eigen"] == "host"
    again = folder_run(weights, two_images, out, "--method", "tokencut", "--eigen", "device")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["n_resumed"] == 2
    assert json.loads((out / "run.json").read_text())["producer"]["discovery"]["eigen"] == "device"
