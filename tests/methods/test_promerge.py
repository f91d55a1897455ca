"""ProMerge on hand-made features with known answers, its steps one by one, against a plain
point-by-point transcription of its definition, and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import folder_run

from objdisc.methods import ProMerge, make_method
from objdisc.methods.promerge import _candidates, _cascade, _merge, promerge_batch
from objdisc.objects import Geometry, Objects
from objdisc.refinement.pixel_chain import finalize_masks, unrefined_masks


def scene(h: int = 16, w: int = 16, noise: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Orthogonal groups: background (label 0, every border) and three objects; ``(N, C)``
    features and the ``(h, w)`` labels."""
    labels = np.zeros((h, w), dtype=int)
    labels[3:8, 3:9] = 1  # 30 patches
    labels[10:14, 6:13] = 2  # 28 patches
    labels[3:6, 11:14] = 3  # 9 patches
    rng = np.random.default_rng(seed)
    feats = np.eye(8)[labels.ravel()] + noise * rng.standard_normal((h * w, 8))
    return torch.from_numpy(feats).float(), labels


def run_one(feats: torch.Tensor, grid: tuple[int, int], **options) -> Objects:
    (objects,) = promerge_batch(
        feats[None], grid, 8, torch.tensor([[grid[0] * 8, grid[1] * 8]]), ProMerge(**options)
    ).to_host(8, [(grid[0] * 8, grid[1] * 8)])
    return objects


def test_the_defaults_are_run_script_shs():
    assert ProMerge().options() == {
        "method": "promerge",
        "stride": 4,
        "tau": 0.2,
        "cc_area": 0.5,
        "iou_filter": 0.8,
        "fg_include": 0.1,
        "intersection_merge": 0.5,
        "merge_ioa": 0.1,
        "dino_merge": 0.1,
        "fixed_size": 480,
        "crf": True,
    }
    assert make_method("promerge", stride=2).stride == 2


def test_each_object_of_a_clean_scene_is_found_once_largest_first_with_score_one():
    feats, labels = scene()
    objects = run_one(feats, labels.shape, stride=1)
    assert [m.tobytes() for m in objects.masks] == [(labels == k).tobytes() for k in (1, 2, 3)]
    assert objects.scores.tolist() == [1.0, 1.0, 1.0]
    assert objects.boxes.tolist() == [[24, 24, 72, 64], [48, 80, 104, 112], [88, 24, 112, 48]]
    for mask, seed in zip(objects.masks, objects.seeds, strict=True):
        assert mask.flat[seed]  # a point of the cluster


def test_no_background_candidate_or_too_small_a_background_gives_no_object():
    def found(labels: np.ndarray) -> int:
        return len(run_one(torch.from_numpy(np.eye(8)[labels.ravel()]).float(), labels.shape, stride=1))

    ring = np.full((16, 16), 4)  # background = the outer ring, 60 of 256 patches
    ring[[0, -1], :] = 0
    ring[:, [0, -1]] = 0
    ring[5:9, 5:9] = 1
    assert found(ring) > 0
    # background = the top row and the left column, 39 of 400 patches: under a tenth; the four
    # quadrants of the rest reach no more than half of any border
    corner = np.zeros((20, 20), dtype=int)
    corner[1:10, 1:10], corner[1:10, 10:], corner[10:, 1:10], corner[10:, 10:] = 4, 5, 6, 7
    assert found(corner) == 0
    corner[:11, 9:] = 5  # the top-right quadrant now holds most of two borders: a background of 121
    assert found(corner) > 0
    # every point's mask is the whole grid: all are background candidates, no foreground
    assert len(run_one(torch.ones(64, 8), (8, 8), stride=1)) == 0


def test_mask_splitting_keeps_components_of_at_least_cc_area_of_the_points_own():
    h, w = 6, 6
    mask = np.zeros((h, w), dtype=bool)
    mask[1:3, 1:4] = True  # 6 patches, holds the point
    mask[4:6, 4:6] = True  # 4 patches: 4 >= 0.5 * 6, kept
    mask[5, 0] = True  # 1 patch, the last component in raster order: dropped
    got = _candidates(mask.reshape(1, -1), np.array([False]), np.array([1 * w + 1]), (h, w), 0.5)
    assert [int(m.sum()) for m in got.foreground] == [6, 4] and got.points.tolist() == [7, 7]
    assert got.background is None  # no background candidate
    # the point outside its own mask: the last component's size is the base (the reference's index -1)
    got = _candidates(mask.reshape(1, -1), np.array([False]), np.array([0]), (h, w), 0.5)
    assert [int(m.sum()) for m in got.foreground] == [6, 4, 1]


def test_the_background_is_the_majority_of_the_background_candidates():
    n = 100
    masks = np.zeros((4, n), dtype=bool)
    masks[0, :60] = masks[1, :50] = masks[2, 10:70] = True  # background candidates
    masks[3, 80:90] = True
    got = _candidates(masks, np.array([True, True, True, False]), np.array([0, 0, 0, 80]), (10, 10), 0.5)
    votes = masks[:3].sum(0)
    assert got.background is not None and np.array_equal(got.background, votes * 2 > 3)
    np.testing.assert_allclose(got.votes, votes / 3, rtol=1e-6)


def test_the_cascade_refuses_masks_in_the_background_like_it_or_with_nothing_new():
    n = 20
    background = np.zeros(n, dtype=bool)
    background[:10] = True
    masks = np.zeros((4, n), dtype=bool)
    masks[0, 12:14] = True  # outside the background: kept
    masks[1, 12:14] = True  # nothing new once mask 0 is in: 0/0, refused
    masks[2, 7:12] = True  # 3 of its 4 new patches (12 is taken) in the background: 0.75 < 0.8, kept
    masks[3, 15:18] = True  # new, but its mean feature is like the background's: refused
    from objdisc.methods.promerge import _Candidates

    candidates = _Candidates(masks, np.arange(4), background, np.zeros(n, np.float32))
    dots = np.array([0.0, 0.0, 0.05, 0.1], dtype=np.float32)  # 0.1 is not below fg_include 0.1
    kept = _cascade(candidates, dots, ProMerge())
    # smallest first: masks 0 and 1 (2 patches) in order, then 3 (3), then 2 (5)
    assert kept.tolist() == [0, 2]
    masks[2, 7:12] = False
    masks[2, 6:11] = True  # 4 of 5 in the background: 0.8 is not below 0.8
    assert _cascade(candidates, dots, ProMerge()).tolist() == [0]


def test_merging_by_overlap_and_by_overlap_with_similar_features():
    n = 40
    unit = torch.zeros(n, 4)
    unit[:20, 0] = 1.0
    unit[20:, 1] = 1.0  # two kinds of patch, orthogonal
    masks = np.zeros((4, n), dtype=bool)
    masks[0, 0:12] = True  # 12
    masks[1, 6:16] = True  # 10, overlaps mask 0 by 6 (0.6 > 0.5): merged
    masks[2, 16:19] = True  # 3, disjoint: a cluster of its own
    masks[3, 18:30] = True  # 12? no: built below
    masks[3] = False
    masks[3, 17:21] = True  # 4: overlaps cluster {16..18} by 2 (0.5: not > 0.5, > 0.1); features 3/4 x0, 1/4 x1
    clusters = _merge(masks, np.arange(4), unit, ProMerge())
    assert [np.flatnonzero(c).tolist() for c, _ in clusters] == [list(range(16)), list(range(16, 21))]
    # the same overlap with dissimilar features stays apart
    masks[3] = False
    masks[3, 18:24] = True  # 6: overlap 1 with {16, 17, 18} (1/6 > 0.1); its mean is mostly x1
    clusters = _merge(masks, np.arange(4), unit, ProMerge(dino_merge=0.9))
    assert [np.flatnonzero(c).tolist() for c, _ in clusters] == [list(range(16)), list(range(18, 24)), [16, 17, 18]]


def reference_promerge(feats: torch.Tensor, grid: tuple[int, int], settings: ProMerge) -> list[bytes]:
    """The definition, point by point and mask by mask (float32 torch, as the release code)."""
    h, w = grid
    f = feats.T.reshape(-1, h, w)  # (C, h, w)
    unit = f / (torch.linalg.norm(f, dim=0) + 1e-5)
    foreground, backgrounds = [], []
    for r in range(0, h, settings.stride):
        for c in range(0, w, settings.stride):
            seed = f[:, r, c]
            mask = ((unit * (seed / (torch.linalg.norm(seed) + 1e-5))[:, None, None]).sum(0) > settings.tau).numpy()
            sides = sum(int(side.mean() > 0.5) for side in (mask[0], mask[-1], mask[:, 0], mask[:, -1]))
            if sides > 1:
                backgrounds.append(mask)
                continue
            labels, n = scipy.ndimage.label(mask)
            sizes = [(labels == k).sum() for k in range(1, n + 1)]
            base = sizes[labels[r, c] - 1]
            for k in sorted(range(n), key=lambda k: -sizes[k]):
                if sizes[k] < settings.cc_area * base:
                    break
                foreground.append(labels == k + 1)
    if not foreground or not backgrounds:
        return []
    background = np.mean(backgrounds, axis=0) > 0.5
    if background.mean() < 0.1:
        return []

    def mean(mask: np.ndarray) -> torch.Tensor:
        return unit[:, torch.from_numpy(mask)].mean(-1)

    kept, covered = [], np.zeros_like(background)
    for mask in sorted(foreground, key=lambda m: m.sum()):
        new = mask & ~covered
        if new.sum() and (new & background).sum() / new.sum() < settings.iou_filter:
            if mean(mask) @ mean(background) < settings.fg_include:
                covered |= mask
                kept.append(mask)
    clusters: list[np.ndarray] = []
    for mask in sorted(kept, key=lambda m: -m.sum()):
        joined = []
        for cluster in clusters:
            inter = (cluster & mask).sum()
            if inter and (
                inter / mask.sum() > settings.intersection_merge
                or (inter / mask.sum() > settings.merge_ioa and mean(mask) @ mean(cluster) >= settings.dino_merge)
            ):
                joined.append(cluster)
        clusters = [c for c in clusters if not any(c is j for j in joined)]
        clusters.append(np.logical_or.reduce([mask, *joined]))
    return sorted(c.tobytes() for c in clusters)


@pytest.mark.parametrize("seed", range(6))
def test_the_clusters_equal_the_plain_definition(seed: int):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(12, 20)), int(rng.integers(12, 20))
    labels = scipy.ndimage.median_filter(rng.integers(0, 5, size=(h, w)), size=3)
    labels[:2], labels[-2:], labels[:, :2], labels[:, -2:] = 0, 0, 0, 0
    centres = rng.standard_normal((5, 24))
    feats = torch.from_numpy(centres[labels.ravel()] + 0.6 * rng.standard_normal((h * w, 24))).float()
    settings = ProMerge(stride=2)
    expected = reference_promerge(feats, (h, w), settings)
    got = run_one(feats, (h, w), stride=2)
    assert sorted(m.tobytes() for m in got.masks) == expected
    assert len(expected) == [1, 1, 17, 6, 3, 4][seed]  # the cases are not empty


def test_a_batch_equals_one_image_at_a_time():
    feats = torch.stack([scene(seed=s)[0] for s in range(3)])
    hws = [(128, 128)] * 3
    batch = promerge_batch(feats, (16, 16), 8, torch.tensor(hws), ProMerge(stride=2)).to_host(8, hws)
    for i in range(3):
        one = run_one(feats[i], (16, 16), stride=2)
        assert np.array_equal(one.masks, batch[i].masks) and one.boxes.tolist() == batch[i].boxes.tolist()


def test_the_pixel_chain_keeps_overlapping_masks_whole():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 1:3, 1:3] = True  # shares patch (1, 1) with the first
    geometry = Geometry(patch_size=8, grid_hw=(4, 4), model_hw=(32, 32), image_hw=(32, 32))
    objects = Objects(np.zeros((2, 4), np.int64), np.ones(2), np.array([0, 5]), masks, None, None, geometry)
    shared = unrefined_masks(objects, (32, 32), 32, (32, 32), exclusive=False)
    assert [int(m.sum()) for m in shared] == [256, 256]
    assert [int(m.sum()) for m in unrefined_masks(objects, (32, 32), 32, (32, 32))] == [256, 192]
    final = finalize_masks(objects, lambda: np.zeros((40, 48, 3), np.uint8), (40, 48), 32, False, exclusive=False)
    assert len(final) == 2 and final.pixel_masks()[1].sum() > 0


def test_a_run_writes_masks_and_pseudo_labels(tmp_path, weights_file, two_images):
    out = tmp_path / "o"
    result = folder_run(
        weights_file("dinov2_reg"), two_images, out, "--method", "promerge", "--no-crf", "--fixed-size", "112",
        "--stride", "1", "--pseudo-labels", tmp_path / "labels.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    discovery = json.loads((out / "run.json").read_text())["producer"]["discovery"]
    assert discovery["method"] == "promerge" and discovery["stride"] == 1 and discovery["fixed_size"] == 112
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels["images"]) == 2 and labels["categories"][0]["name"] == "fg"
