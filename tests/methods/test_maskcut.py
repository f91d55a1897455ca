"""MaskCut on hand-made features with known answers, against a plain dense-eigh reference, its
filters, its pixel chain and its options; the dense CRF it refines with."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from conftest import invoke, make_voc, refused, write_image
from PIL import Image

from objdisc.errors import OptionError
from objdisc.methods import MaskCut, make_method
from objdisc.methods.maskcut import cuts, maskcut_batch, orient
from objdisc.refinement.crf import dense_crf
from objdisc.refinement.pixel_chain import finalize_masks, unrefined_masks


def grid_mask(h: int, w: int, cells: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    for y, x in cells:
        mask[y, x] = True
    return mask


def three_groups(h: int = 8, w: int = 8) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Background e0; object A (top-left 3 x 3 away from the corner) e1; object B (2 x 3) e2:
    cosine 1 inside a group, 0 across."""
    a = grid_mask(h, w, [(y, x) for y in range(1, 4) for x in range(1, 4)])
    b = grid_mask(h, w, [(y, x) for y in range(5, 7) for x in range(4, 7)])
    feats = torch.zeros(h * w, 3)
    feats[:, 0] = 1.0
    feats[torch.from_numpy(a.ravel())] = torch.tensor([0.0, 1.0, 0.0])
    feats[torch.from_numpy(b.ravel())] = torch.tensor([0.0, 0.0, 1.0])
    return feats, a, b


def test_orient_follows_the_corner_rule_then_the_seed_and_ignores_the_sign():
    h, w = 3, 4
    vec = np.full(h * w, -1.0)
    vec[[0, 3, 8]] = 2.0  # three corners above the mean: that side is background
    for v in (vec, -vec):
        foreground, seed = orient(v, (h, w))
        assert foreground.tolist() == [not c for c in (vec > vec.mean()).tolist()]
        assert foreground[seed] is not False and foreground[seed]
    two = np.full(h * w, -1.0)
    two[[0, 3, 5]] = [1.0, 1.0, 3.0]  # two corners and the largest |x| above the mean: that side
    for v in (two, -two):
        foreground, seed = orient(v, (h, w))
        assert foreground.tolist() == (two > two.mean()).tolist() and seed == 5


def test_a_degenerate_graph_is_the_whole_image():
    foreground, seed = orient(np.zeros(12), (3, 4))
    assert foreground.all() and seed == 0


def test_two_objects_are_found_one_per_cut_and_the_rest_dropped():
    feats, a, b = three_groups()
    (rounds,) = cuts(feats[None], (8, 8), 3, tau=0.5, eps=1e-5)
    found = [r for r in rounds if r[0] is not None]
    components = [scipy.ndimage.label(m)[0] == scipy.ndimage.label(m)[0].flat[s] for m, s, _, _ in found]
    assert sorted(int(c.sum()) for c in components[:2]) == [6, 9]
    assert {c.tobytes() for c in components[:2]} == {a.tobytes(), b.tobytes()}
    for mask, seed, lam, _ in found:
        assert mask.flat[seed] and 0.0 <= lam <= 1.0


def reference_cuts(feats: np.ndarray, grid_hw, n: int, tau: float, eps: float = 1e-5) -> list[np.ndarray]:
    """maskcut_forward's loop written plainly with the dense generalised eigh, objdisc's orient rule."""
    h, w = grid_hw
    masks, previous, painted = [], None, np.zeros(h * w, dtype=bool)
    feats = feats.astype(np.float64)
    for k in range(n):
        if k:
            painted |= previous.ravel()
            feats = np.where(painted[:, None], 0.0, feats)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        unit = feats / np.maximum(norms, 1e-12)
        weights = np.where(unit @ unit.T > tau, 1.0, eps)
        degree = np.diag(weights.sum(1))
        _, vectors = scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 2])
        foreground, seed = orient(vectors[:, 0], grid_hw)
        labels, _ = scipy.ndimage.label(foreground.reshape(h, w))
        component = labels == labels.flat[seed]
        if k and (component.sum() <= 0.01 * h * w or _iou(previous, component) > 0.5):
            component = np.zeros((h, w), dtype=bool)
        else:
            masks.append(component)
        previous = component
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.mark.parametrize("seed", range(8))
def test_the_masks_equal_the_dense_reference(seed: int):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(6, 11)), int(rng.integers(6, 11))
    centres = rng.standard_normal((4, 16))
    labels = rng.integers(0, 4, size=(h, w))
    labels = scipy.ndimage.median_filter(labels, size=3)  # blobs, so that components are objects
    feats = centres[labels.ravel()] + 0.3 * rng.standard_normal((h * w, 16))
    expected = reference_cuts(feats, (h, w), 3, tau=0.2)
    batch = maskcut_batch(torch.from_numpy(feats).float()[None], (h, w), 8, torch.tensor([[h * 8, w * 8]]), 3, 0.2)
    (objects,) = batch.to_host(8, [(h * 8, w * 8)])
    assert [m.tobytes() for m in objects.masks] == [m.tobytes() for m in expected]
    assert all(0.0 <= s <= 1.0 for s in objects.scores) and (objects.seeds >= 0).all()


def test_a_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.standard_normal((3, 64, 8)).astype(np.float32))
    hws = [(64, 64), (60, 61), (57, 64)]
    batch = maskcut_batch(feats, (8, 8), 8, torch.tensor(hws), 3, 0.15).to_host(8, hws)
    for i in range(3):
        (one,) = maskcut_batch(feats[i : i + 1], (8, 8), 8, torch.tensor([hws[i]]), 3, 0.15).to_host(8, [hws[i]])
        assert one.boxes.tolist() == batch[i].boxes.tolist() and np.array_equal(one.masks, batch[i].masks)


def test_the_pixel_chain_without_crf_is_maskcut_pys():
    """Nearest upsampling to the square, earlier masks' pixels removed, PIL's bicubic to the
    original size, threshold at half the maximum; boxes from the final masks."""
    feats, _, _ = three_groups()
    found = maskcut_batch(feats[None], (8, 8), 16, torch.tensor([[128, 128]]), 3, 0.5)
    (objects,) = found.to_host(16, [(128, 128)])
    original = np.zeros((90, 150, 3), dtype=np.uint8)
    final = finalize_masks(objects, lambda: original, (90, 150), 128, crf=False)
    square = unrefined_masks(objects, (128, 128), 128, (90, 150))
    for k, mask in enumerate(final.pixel_masks()):
        expected = np.asarray(Image.fromarray(np.uint8(square[k] * 255)).resize((150, 90)))
        np.testing.assert_array_equal(mask, expected > expected.max() / 2)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert final.boxes[k].tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    assert sum(m.sum() for m in square) == sum(np.logical_or.reduce(square).ravel())  # no pixel twice


def test_the_crf_snaps_a_rough_mask_to_the_object():
    image = np.full((60, 80, 3), 30, dtype=np.uint8)
    image[15:45, 20:60] = 220  # a bright object
    rough = np.zeros((60, 80))
    rough[12:40, 25:64] = 1  # shifted by a few pixels
    refined = dense_crf(image, rough) > 0.5
    truth = np.zeros((60, 80), dtype=bool)
    truth[15:45, 20:60] = True
    assert _iou(refined, truth) > _iou(rough > 0.5, truth) and _iou(refined, truth) > 0.9


def test_without_pydensecrf_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    import builtins

    real = builtins.__import__

    def no_crf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError("no module named pydensecrf")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crf)
    with pytest.raises(ImportError, match=r"pip install 'objdisc\[crf\]'.*--no-crf"):
        dense_crf(np.zeros((4, 4, 3), dtype=np.uint8), np.ones((4, 4)))


def test_a_run_without_pydensecrf_is_refused_before_the_model(tmp_path, weights_file, two_images, monkeypatch):
    import objdisc.refinement.crf as crf

    monkeypatch.setattr(crf, "crf_available", lambda: False)
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", two_images]
    result = invoke(*args, "--method", "maskcut", "--workers", "0", "--out", tmp_path / "o")
    refused(result, "--crf", "pip install 'objdisc[crf]'", "--no-crf")
    assert not (tmp_path / "o" / "journal").exists()
    result = invoke(
        *args, "--method", "maskcut", "--no-crf", "--fixed-size", "64", "--workers", "0", "--out", tmp_path / "p"
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"masks": 0}, "--masks must be at least 1"),
        ({"tau": float("nan")}, "--tau must be a finite number"),
        ({"tau": float("inf")}, "--tau must be a finite number"),
        ({"fixed_size": -1}, "--fixed-size must be at least 0"),
        ({"eps": 0.0}, "--eps must be > 0"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str):
    with pytest.raises(OptionError, match=message):
        make_method("maskcut", **options)


def test_a_fixed_size_below_one_patch_and_mask_ap_without_masks_are_refused(tmp_path, weights_file, two_images):
    args = ["run", "-b", "dinov2_reg", "--weights", weights_file("dinov2_reg"), "--method", "maskcut", "--workers", "0"]
    folder = ["-d", "folder", "--images", two_images]
    refused(invoke(*args, *folder, "--fixed-size", "10", "--out", tmp_path / "a"), "--fixed-size 10", "one patch (14")
    make_voc(tmp_path / "voc")
    voc = ["-d", "voc07", "--data-root", tmp_path / "voc"]
    result = invoke(*args, *voc, "--metrics", "mask_ap", "--out", tmp_path / "b")
    refused(result, "--metrics mask_ap", "no ground-truth masks")
    refused(invoke(*args, *folder, "--max-side", "64", "--out", tmp_path / "c"), "--max-side does not apply to maskcut")
    assert not any((tmp_path / name / "journal").exists() for name in "abc")


def test_maskcut_runs_through_the_cli_with_the_crf(tmp_path, weights_file):
    images = tmp_path / "images"
    for i in range(2):
        write_image(images / f"{i}.jpg", (70, 84), (10, 15, 60, 55), seed=i)
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", images]
    result = invoke(*args, "--method", "maskcut", "--fixed-size", "96", "--workers", "0", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert MaskCut(fixed_size=96).input_side(16) == 96
