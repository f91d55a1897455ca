"""DINO-seg on hand-made attention maps with known answers, against a plain reference, and its
quirks as LOST's code has them (the component choice) written down as tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objdisc.errors import OptionError
from objdisc.methods import DinoSeg, make_method
from objdisc.methods.dinoseg import dinoseg_batch, kept_patches, pick_component


def reference_kept(attention: np.ndarray, keep_mass: float) -> np.ndarray:
    """The smallest set of most-attended patches holding more than ``keep_mass`` of the attention,
    as a plain loop: ascending order (lower index first on ties), cumulated share > 1 - keep_mass."""
    order = sorted(range(len(attention)), key=lambda i: (attention[i], i))
    total = float(np.sum(attention, dtype=np.float64))
    kept = np.zeros(len(attention), dtype=bool)
    running = 0.0
    for i in order:
        running += attention[i] / total
        kept[i] = running > 1 - keep_mass
    return kept


def test_kept_patches_hold_the_asked_mass():
    attention = torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]])  # sorted: .05 .1 .15 .3 .4 -> cum .05 .15 .3 .6 1
    assert kept_patches(attention, 0.6)[0].tolist() == [False, True, False, True, False]
    assert kept_patches(attention, 0.75)[0].tolist() == [False, True, False, True, True]


@pytest.mark.parametrize("seed", range(10))
def test_kept_patches_equal_the_plain_loop_on_dyadic_maps(seed: int):
    # Multiples of 1/64 that sum to a power of two: every sum is exact, ties are many.
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 8, size=(3, 64)).astype(np.float32)
    values[:, -1] += 512 - values.sum(1)  # each row sums to 512
    got = kept_patches(torch.from_numpy(values), 0.6).numpy()
    for head in range(3):
        np.testing.assert_array_equal(got[head], reference_kept(values[head], 0.6))


def grid(*rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


def test_lost_component_skips_the_last_label_as_lost_does():
    kept = grid(
        "#..##",
        "#....",
        "...##",
    )  # labels in raster order: 1 = left (2 patches), 2 = top right (2), 3 = bottom right (2)
    assert pick_component(kept, "lost").tolist() == grid("#....", "#....", ".....").tolist()
    bigger_last = grid("#...#", "...##", "...##")  # label 2 (5 patches) is the last: never chosen
    assert pick_component(bigger_last, "lost").tolist() == grid("#....", ".....", ".....").tolist()
    assert pick_component(bigger_last, "largest").tolist() == grid("....#", "...##", "...##").tolist()


def test_a_single_component_gives_the_background_as_lost_does():
    kept = grid("..#..", ".###.", ".....")
    assert pick_component(kept, "lost").tolist() == (~kept).tolist()
    assert pick_component(kept, "largest").tolist() == kept.tolist()
    everything = np.ones((2, 3), dtype=bool)  # LOST's code fails here; objdisc takes the whole image
    assert pick_component(everything, "lost").all() and pick_component(everything, "largest").all()


def test_equal_sizes_go_to_the_first_label():
    kept = grid("#.#.#")
    assert pick_component(kept, "largest").tolist() == grid("#....").tolist()
    assert pick_component(kept, "lost").tolist() == grid("#....").tolist()


def test_the_box_reaches_into_the_padding_as_lost_does_unless_clipped():
    h, w, heads = 3, 4, 2
    attn = torch.full((1, h * w, heads), 0.01)
    attn[0, [7, 11], 1] = 1.0  # head 1: the right column's two lower patches
    attn[0, [0, 1], 0] = 1.0
    found = dinoseg_batch(attn, (h, w), 16, torch.tensor([[40, 60]]), head=1, component="largest")
    (objects,) = found.to_host(16, [(40, 60)])
    assert objects.boxes.tolist() == [[48, 16, 64, 48]]  # the grid box, past the 60 x 40 image
    clipped = dinoseg_batch(attn, (h, w), 16, torch.tensor([[40, 60]]), head=1, component="largest", clip=True)
    assert clipped.boxes[0].tolist() == [[48, 16, 60, 40]]
    assert objects.seeds.tolist() == [-1] and objects.scores.tolist() == [1.0]
    np.testing.assert_array_equal(objects.score_map, attn[0, :, 1].reshape(h, w).numpy())


def test_a_head_the_model_lacks_is_refused_naming_the_count():
    with pytest.raises(OptionError, match="--head 6: this model's attention has 6 heads"):
        DinoSeg(head=6)(torch.rand(1, 4, 6), (2, 2), 16, torch.tensor([[32, 32]]))


def test_dinoseg_reads_the_cls_attention_only():
    from objdisc.commands.run import RunConfig, resolve_discovery
    from objdisc.models.specs import get_spec

    assert make_method("dinoseg").feature_kinds == ("attn",)
    config = RunConfig.flat("dino", "folder", "o", method="dinoseg")
    assert resolve_discovery(config, get_spec("dino")).features.kind == "attn"
    with pytest.raises(OptionError, match="--features k: dinoseg reads attn"):
        resolve_discovery(RunConfig.flat("dino", "folder", "o", method="dinoseg", features="k"), get_spec("dino"))
