"""A random ViT with a planted register neuron, for the register tests: one MLP hidden unit of one
block set to fire only on patches of one flat colour and to write a large vector through fc2, so
that those patches become high-norm tokens, as the artifacts of a trained DINOv2 are.

Its fixtures (``planted``, ``flat_images``) are registered in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from objdisc.images import make_batch
from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec
from objdisc.models.test_time_registers import RegisterNeurons

BLOCK, UNIT = 6, 777
FLAT = (90, 140, 60)  # RGB of the flat regions the planted neuron fires on
HW = (112, 140)  # 8 x 10 patches of 14


def picture(seed: int, flat_cols: int, hw: tuple[int, int] = HW) -> np.ndarray:
    """Noise, with the left ``flat_cols`` patch columns one flat colour (none: 0)."""
    image = np.random.default_rng(seed).integers(0, 255, size=(*hw, 3), dtype=np.uint8)
    image[:, : flat_cols * 14] = FLAT
    return image


def batch(images: list[np.ndarray], spec=None) -> torch.Tensor:
    spec = spec or get_spec("dinov2_vits14")
    return make_batch([torch.from_numpy(i) for i in images], 14, spec.mean, spec.std)


def plant(model: torch.nn.Module) -> None:
    """Make ``blocks[BLOCK].mlp`` unit ``UNIT`` fire (about 20) on flat patches only, writing
    10 x a fixed unit vector per unit of activation (through the block's layer scale)."""
    seen = []
    handle = model.blocks[BLOCK].mlp.fc1.register_forward_pre_hook(lambda m, a: seen.append(a[0][0]))
    with torch.no_grad():
        model.forward_features(batch([picture(0, 5)]))
    handle.remove()
    tokens = seen[0][1:]  # the MLP's input at the 80 patches
    flat = torch.zeros(8, 10, dtype=torch.bool)
    flat[:, :5] = True
    flat = flat.ravel()
    direction = tokens[flat].mean(0) - tokens[~flat].mean(0)
    score = tokens @ direction
    low, high = score[~flat].max(), score[flat].min()
    assert high > low, "the random model does not separate flat patches"
    mid = (low + high) / 2
    scale = 20 / (high - mid)
    out = torch.randn(model.embed_dim, generator=torch.Generator().manual_seed(1))
    mlp = model.blocks[BLOCK].mlp
    with torch.no_grad():
        mlp.fc1.weight[UNIT] = scale * direction
        mlp.fc1.bias[UNIT] = -scale * mid
        mlp.fc2.weight[:, UNIT] = 10 * out / out.norm() / model.blocks[BLOCK].ls2.gamma


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DINOv2 ViT-S/14 (no registers) weights file with the planted register neuron."""
    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_vits14")).eval()
    plant(model)
    path = tmp_path_factory.mktemp("planted") / "planted.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def flat_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 8 x 16-patch pictures with a flat region of 1 or 2 columns, two without: 5 % of
    the patches are flat, as the artifacts are a few percent of a DINOv2's patches."""
    folder = tmp_path_factory.mktemp("flat")
    for i, cols in enumerate(FLAT_COLS):
        image = picture(10 + i, cols, (112, 224))
        assert cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


FLAT_COLS = [2, 1, 2, 1, 0, 0]
N_FLAT = 8 * sum(FLAT_COLS)  # flat patches in the folder


NEURON = RegisterNeurons(((BLOCK, UNIT),), "planted")
