"""Position embeddings resized as each family's release code does, against an independent reference.

The reference is written from the release formulas, not from objdisc's code: bicubic
sampling by hand in float64 numpy (PyTorch's cubic kernel, a = -0.75, half-pixel centres,
border indices clamped) with the sample positions set by ``scale_factor = (h + 0.1) / M``,
as DINO's and DINOv2's ``interpolate_pos_encoding`` call ``F.interpolate`` (no antialias).
The keys of a one-block model are then rebuilt by hand from it (patch embedding + resized
position embedding, ``norm1``, the key rows of ``qkv``) and compared with objdisc's keys on
non-square grids, on the trained grid and at 224 x 224. The register model keeps timm's
resizing: its keys equal an untouched timm model's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from objdisc.engine.journal import Journal, JournalMismatchError, read_journals
from objdisc.models.backbones import build_model
from objdisc.models.features import KeyExtractor
from objdisc.models.position_embeddings import DINO, DINOV2, TIMM, apply_recipe, recipe_of, resize_patch_pos_embed
from objdisc.models.specs import get_spec


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel with PyTorch's a = -0.75."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _bicubic_axis(arr: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    """Resample ``arr`` along ``axis`` to ``out_len`` samples; sample d sits at (d + 0.5) / scale - 0.5."""
    n = arr.shape[axis]
    src = (np.arange(out_len) + 0.5) / scale - 0.5
    base = np.floor(src)
    t = src - base
    out = 0.0
    for j in range(-1, 3):
        idx = np.clip(base + j, 0, n - 1).astype(int)
        weight = _cubic(t - j)
        shape = [1] * arr.ndim
        shape[axis] = out_len
        out = out + np.take(arr, idx, axis=axis) * weight.reshape(shape)
    return out


def release_reference(pos: torch.Tensor, grid_hw: tuple[int, int], offset: float = 0.1) -> torch.Tensor:
    """DINO / DINOv2 release resizing of ``(1, M*M, C)`` patch embeddings, by hand in float64."""
    m = math.isqrt(pos.shape[1])
    h, w = grid_hw
    if (h, w) == (m, m):
        return pos
    grid = pos.double().numpy().reshape(m, m, -1)
    grid = _bicubic_axis(grid, 0, h, (h + offset) / m)
    grid = _bicubic_axis(grid, 1, w, (w + offset) / m)
    return torch.from_numpy(grid.reshape(1, h * w, -1)).float()


def _random_pos(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-smooth position embeddings: neighbouring entries unrelated, so any resampling difference shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.pos_embed.copy_(torch.randn(model.pos_embed.shape, generator=g))


def reference_keys(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last-block keys of a one-block, CLS-only model rebuilt by hand with the release resizing."""
    p = model.patch_embed.patch_size[0]
    h, w = x.shape[2] // p, x.shape[3] // p
    tokens = torch.nn.functional.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=p)
    tokens = tokens.flatten(2).transpose(1, 2)  # (B, h*w, C)
    pos = torch.cat([model.pos_embed[:, :1], release_reference(model.pos_embed[:, 1:], (h, w))], dim=1)
    seq = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1) + pos
    block = model.blocks[0]
    normed = block.norm1(seq)
    dim = seq.shape[-1]
    keys = normed @ block.attn.qkv.weight[dim : 2 * dim].T + block.attn.qkv.bias[dim : 2 * dim]
    return keys[:, 1:]


def keys_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with KeyExtractor(model) as extract, torch.no_grad():
        return extract(x)


@pytest.mark.parametrize("grid", [(5, 7), (9, 4), (37, 37), (16, 16), (23, 41), (40, 31)])
def test_dinov2_recipe_equals_the_hand_reference(grid: tuple[int, int]):
    pos = torch.randn(1, 37 * 37, 8, generator=torch.Generator().manual_seed(1))
    ours = resize_patch_pos_embed(pos, grid, (37, 37), DINOV2)
    # PyTorch places the samples and weighs them in float32; the reference is float64.
    torch.testing.assert_close(ours, release_reference(pos, grid), rtol=1e-5, atol=5e-5)
    if grid != (37, 37):  # timm's resizing is measurably different on the same embeddings
        timm_way = resize_patch_pos_embed(pos, grid, (37, 37), TIMM)
        assert (timm_way - ours).abs().max() > 1e-3


def test_dino_recipe_keeps_the_parameter_dtype_and_dinov2_computes_in_float32():
    pos = torch.randn(1, 14 * 14, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    dino = resize_patch_pos_embed(pos, (9, 20), (14, 14), DINO)
    dinov2 = resize_patch_pos_embed(pos, (9, 20), (14, 14), DINOV2)
    assert dino.dtype == dinov2.dtype == torch.bfloat16
    by_hand_fp32 = torch.nn.functional.interpolate(
        pos.float().reshape(1, 14, 14, 8).permute(0, 3, 1, 2), scale_factor=(9.1 / 14, 20.1 / 14), mode="bicubic"
    )
    assert torch.equal(dinov2, by_hand_fp32.permute(0, 2, 3, 1).reshape(1, 180, 8).to(torch.bfloat16))
    assert not torch.equal(dino, dinov2)  # bf16 arithmetic rounds differently


def test_trained_grid_is_returned_untouched():
    pos = torch.randn(1, 14 * 14, 8)
    for recipe in (DINO, DINOV2, TIMM):
        assert resize_patch_pos_embed(pos, (14, 14), (14, 14), recipe) is pos


@pytest.mark.parametrize(
    ("name", "hw"),
    [
        ("dino_vits16", (80, 112)),  # 5 x 7, non-square, smaller than trained
        ("dino_vits16", (224, 224)),  # the trained grid: no resizing at all
        ("dino_vits16", (272, 400)),  # 17 x 25, larger
        ("dino_vits8", (96, 64)),
        ("dinov2_vits14", (224, 224)),  # 16 x 16: shrinking, where antialias would matter
        ("dinov2_vits14", (518, 518)),  # trained
        ("dinov2_vits14", (98, 644)),  # 7 x 46
    ],
)
def test_keys_equal_the_release_reference(name: str, hw: tuple[int, int]):
    torch.manual_seed(0)
    model = build_model(get_spec(name), depth=1).eval()
    _random_pos(model)
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(3))
    ours = keys_of(model, x)
    with torch.no_grad():
        ref = reference_keys(model, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-5)
    assert recipe_of(model) == get_spec(name).pos_embed


@pytest.mark.parametrize("hw", [(224, 224), (98, 644), (518, 518)])
def test_register_model_keeps_timms_resizing(hw: tuple[int, int]):
    spec = get_spec("dinov2_reg_vits14")
    assert spec.pos_embed == "timm"
    torch.manual_seed(0)
    ours = build_model(spec, depth=1).eval()
    _random_pos(ours)
    plain = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, depth=1).eval()
    plain.load_state_dict(ours.state_dict())
    assert "_pos_embed" not in vars(ours)  # nothing replaced on this instance
    x = torch.randn(2, 3, *hw)
    assert torch.equal(keys_of(ours, x), keys_of(plain, x))


def test_the_recipe_is_per_instance_and_never_touches_timm():
    torch.manual_seed(0)
    dino = build_model(get_spec("dino_vits16"), depth=1).eval()
    twin = timm.create_model(
        get_spec("dino_vits16").timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, depth=1
    )
    twin.load_state_dict(dino.state_dict())
    twin.eval()
    _random_pos(dino)
    _random_pos(twin)
    x = torch.randn(1, 3, 80, 112)
    assert not torch.equal(keys_of(dino, x), keys_of(twin, x))  # the plain timm model still resizes its way
    assert recipe_of(twin) == "timm"


def test_apply_recipe_refuses_a_model_without_learned_position_embeddings():
    model = build_model(get_spec("dinov3_vits16"), depth=1)
    with pytest.raises(ValueError, match="learned position embeddings"):
        apply_recipe(model, DINO)


def test_journals_and_caches_from_timm_resized_features_are_not_reused(tmp_path):
    from objdisc.engine.plan import cache_identity, journal_settings
    from objdisc.models.args import ModelArgs, ResolvedModel
    from objdisc.models.weights import WeightsInfo

    weights = WeightsInfo("w.pth", "local", "0" * 64)
    dino, reg = (ResolvedModel(ModelArgs(n), get_spec(n), weights, None) for n in ("dino", "dinov2_reg"))
    discovery = {"features": "k", "layer": -1, "method": "lost", "k_patches": 100, "gram_bias": 0.0}
    new = journal_settings(dino, "folder", False, None, "fp32", False, discovery)
    assert new["pos_embed"] == "dino-release"
    # unchanged family: journals stay valid
    assert "pos_embed" not in journal_settings(reg, "folder", False, None, "fp32", False, discovery)
    assert cache_identity(dino, "fp32", None, None, False)["pos_embed"] == "dino-release"
    assert "pos_embed" not in cache_identity(reg, "fp32", None, None, False)
    old = {k: v for k, v in new.items() if k != "pos_embed"}  # what objdisc wrote before
    with Journal(tmp_path / "journal", 0, old) as journal:
        journal.append(
            {"image_id": 1, "file_name": "a.jpg", "hw": [10, 10], "box": [0, 0, 1, 1], "seed": 0, "error": None}
        )
    with pytest.raises(JournalMismatchError, match=r"pos_embed: None there, 'dino-release' now"):
        read_journals(tmp_path / "journal", new)
