from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from objdisc.errors import OptionError
from objdisc.geometry import component_box, seed_component
from objdisc.methods import TokenCut, make_method
from objdisc.methods.tokencut import second_eigenvector


def reference_tokencut(feats: np.ndarray, grid: tuple[int, int], patch: int, hw: tuple[int, int], tau: float = 0.2):
    """TokenCut's own steps: dense generalised eigh, split at the mean, flip to the seed side."""
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    weights = np.where(unit @ unit.T > tau, 1.0, 1e-5)
    degree = np.diag(weights.sum(1))
    _, vectors = scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 2])
    vec = vectors[:, 0]
    part = vec > vec.mean()
    magnitude = np.abs(vec)
    seed = int(np.flatnonzero(magnitude >= magnitude.max() * (1 - 1e-6))[0])  # objdisc's tie rule
    if not part[seed]:
        part = ~part
    component = seed_component(part.reshape(grid), seed)
    return component_box(component, patch, hw), seed, component


def object_features(grid: tuple[int, int], box: tuple[int, int, int, int], seed: int = 0, noise: float = 0.3):
    """Background patches near one direction, object patches (rows y1:y2, cols x1:x2) near another."""
    rng = np.random.default_rng(seed)
    h, w = grid
    background, foreground = rng.normal(size=(2, 32))
    feats = np.tile(background, (h, w, 1)) + noise * rng.normal(size=(h, w, 32))
    x1, y1, x2, y2 = box
    feats[y1:y2, x1:x2] = foreground + noise * rng.normal(size=(y2 - y1, x2 - x1, 32))
    return feats.reshape(h * w, 32)


@pytest.mark.parametrize(
    ("grid", "box"), [((9, 12), (2, 3, 6, 7)), ((10, 10), (0, 0, 3, 4)), ((12, 15), (8, 5, 15, 12))]
)
def test_known_cut_gives_the_object_box(grid, box):
    feats = object_features(grid, box)
    patch = 16
    hw = (grid[0] * patch - 5, grid[1] * patch - 7)
    found = TokenCut()(torch.from_numpy(feats).float()[None], grid, patch, torch.tensor([hw]))
    (result,) = found.to_host(patch, [hw])
    x1, y1, x2, y2 = box
    expected = (x1 * patch, y1 * patch, min(x2 * patch, hw[1]), min(y2 * patch, hw[0]))
    assert tuple(result.boxes[0].tolist()) == expected
    assert result.masks[0].sum() == (x2 - x1) * (y2 - y1)


@pytest.mark.parametrize("seed", range(12))
def test_equals_the_dense_reference_on_noisy_scenes(seed: int):
    rng = np.random.default_rng(seed)
    grid = (int(rng.integers(8, 14)), int(rng.integers(8, 14)))
    y1, x1 = int(rng.integers(0, grid[0] - 3)), int(rng.integers(0, grid[1] - 3))
    box = (x1, y1, int(rng.integers(x1 + 2, grid[1] + 1)), int(rng.integers(y1 + 2, grid[0] + 1)))
    feats = object_features(grid, box, seed, noise=0.9)
    hw = (grid[0] * 14, grid[1] * 14)
    expected_box, expected_seed, expected_component = reference_tokencut(feats, grid, 14, hw)
    (result,) = TokenCut()(torch.from_numpy(feats).float()[None], grid, 14, torch.tensor([hw])).to_host(14, [hw])
    assert tuple(result.boxes[0].tolist()) == expected_box and result.seeds[0] == expected_seed
    np.testing.assert_array_equal(result.masks[0], expected_component)


def test_fast_eigensolver_equals_the_dense_one():
    rng = np.random.default_rng(0)
    feats = object_features((20, 20), (4, 4, 11, 13), noise=1.2)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    weights = np.where(unit @ unit.T > 0.2, 1.0, 1e-5)
    fast = second_eigenvector(weights)  # 400 patches: the Lanczos path
    degree = np.diag(weights.sum(1))
    _, dense = scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 1])
    cosine = abs(fast @ dense[:, 0]) / np.linalg.norm(fast) / np.linalg.norm(dense[:, 0])
    assert cosine > 1 - 1e-9
    del rng


def test_batch_equals_single_images():
    feats = np.stack([object_features((8, 9), (1, 2, 5, 6), seed=s, noise=0.8) for s in range(3)])
    hws = [(8 * 16, 9 * 16)] * 3
    batch = TokenCut()(torch.from_numpy(feats).float(), (8, 9), 16, torch.tensor(hws)).to_host(16, hws)
    for i in range(3):
        (one,) = TokenCut()(torch.from_numpy(feats[i]).float()[None], (8, 9), 16, torch.tensor([hws[i]])).to_host(
            16, [hws[i]]
        )
        assert one.boxes.tolist() == batch[i].boxes.tolist() and one.seeds[0] == batch[i].seeds[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "tokencut", "gram_bias": 1.0}, "--gram-bias is an option of lost; tokencut does not take it"),
        ({"name": "tokencut", "k_patches": 5}, "--k-patches is an option of lost; tokencut does not take it"),
        ({"name": "lost", "tau": 0.3}, "--tau is an option of tokencut, maskcut, promerge; lost does not take it"),
        ({"name": "lost", "sigma": 0.3}, "--sigma is no method's option; lost does not take it"),
        ({"name": "ncut"}, "unknown method 'ncut'"),
        ({"name": "tokencut", "tau": float("nan")}, "--tau must be a finite number"),
        ({"name": "tokencut", "eps": 0.0}, "--eps must be > 0"),
    ],
)
def test_options_a_method_does_not_take_are_refused(kwargs, message):
    with pytest.raises(OptionError, match=message):
        make_method(**kwargs)


@pytest.mark.parametrize("n", [64, 1000])
def test_every_pair_passing_tau_has_a_defined_answer(n: int):
    # A blank frame: every weight 1. ARPACK started from the deflated vector said "starting
    # vector is zero" (n = 64) or returned a different vector on every call (n = 1000).
    vectors = [second_eigenvector(np.ones((n, n))) for _ in range(3)]
    assert all(np.array_equal(v, np.zeros(n)) for v in vectors)


def test_no_pair_passing_tau_is_degenerate_too():
    weights = np.full((80, 80), 1e-5)
    np.fill_diagonal(weights, 1.0)
    assert np.array_equal(second_eigenvector(weights), np.zeros(80))


def test_a_multiple_eigenvalue_gives_the_same_vector_every_time():
    weights = np.full((300, 300), 1e-5)  # three equal cliques: the second eigenvalue is double
    for c in range(3):
        weights[c * 100 : (c + 1) * 100, c * 100 : (c + 1) * 100] = 1.0
    first = second_eigenvector(weights)
    assert all(np.array_equal(first, second_eigenvector(weights)) for _ in range(3))


def test_a_degenerate_graph_boxes_the_whole_image():
    feats = torch.ones(2, 8 * 9, 16)  # identical features: every pair passes tau
    hws = [(120, 140), (128, 144)]
    for found in TokenCut()(feats, (8, 9), 16, torch.tensor(hws)).to_host(16, hws):
        assert found.seeds[0] == 0 and found.masks[0].all()
    assert [f.boxes[0].tolist() for f in TokenCut()(feats, (8, 9), 16, torch.tensor(hws)).to_host(16, hws)] == [
        [0, 0, 140, 120],
        [0, 0, 144, 128],
    ]


def test_uniform_grey_images_through_the_cli(tmp_path, weights_file):
    import json

    import cv2
    from click.testing import CliRunner

    from objdisc.cli import cli

    images = tmp_path / "images"
    images.mkdir()
    for name, (h, w) in {"a.png": (128, 128), "b.png": (400, 640)}.items():
        assert cv2.imwrite(str(images / name), np.full((h, w, 3), 128, np.uint8))
    args = ["run", "-b", "dinov2_reg", "--weights", str(weights_file("dinov2_reg")), "-d", "folder"]
    args += ["--images", str(images), "--method", "tokencut", "--out", str(tmp_path / "out")]
    outputs = []
    for _ in range(2):  # the same features give the same boxes, run after run
        result = CliRunner().invoke(cli, [*args, "--overwrite"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / "out" / "predictions.json").read_text())
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics["skipped"] == []
    assert outputs[0] == outputs[1]
    boxes = sorted(p["bbox"] for p in json.loads(outputs[0]))
    assert boxes == [[0, 0, 128, 128], [0, 0, 640, 400]]
