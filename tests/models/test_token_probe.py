"""The token probe: every block's token norms split into CLS, registers and patches, one hook per block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import invoke

from objdisc.models.backbones import build_model
from objdisc.models.specs import get_spec
from objdisc.models.token_probe import TokenProbe, neighbour_cosine


def on_voc(command: str, root: Path, weights_file, *extra: str):
    """``objdisc <command>`` on the synthetic VOC07 under ``root`` with random-init DINOv2+reg weights."""
    weights = str(weights_file("dinov2_reg"))
    return invoke(command, "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(root), "--weights", weights, *extra)


def test_token_probe_splits_cls_registers_and_patches():
    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    x = torch.randn(2, 3, 28, 42)
    blocks = []
    handles = [b.register_forward_hook(lambda m, i, o: blocks.append(o)) for b in model.blocks]
    with torch.no_grad():
        model.forward_features(x)
    for h in handles:
        h.remove()
    with TokenProbe(model, num_registers=4, class_token=True) as probe:
        (norms, _) = probe(x)
    assert norms.patch.shape == (2, 2, 3) and norms.registers.shape == (2, 4) and norms.cls.shape == (2,)
    expected = blocks[-1][0].norm(dim=-1)
    torch.testing.assert_close(norms.cls[-1], expected[0])
    torch.testing.assert_close(norms.registers[-1], expected[1:5])
    torch.testing.assert_close(norms.patch[-1].flatten(), expected[5:])


def test_probe_reads_a_pass_run_by_a_feature_extractor_and_hooks_once():
    from objdisc.models.features import FeatureExtractor, FeatureSpec

    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    x = torch.randn(1, 3, 28, 42)
    hooks = [len(b._forward_hooks) for b in model.blocks]
    with TokenProbe(model, 4) as probe, FeatureExtractor(model, [FeatureSpec()], stop=False) as extractor:
        assert [len(b._forward_hooks) for b in model.blocks] == [n + 1 for n in hooks]
        alone = probe(x)[0]
        with torch.no_grad():
            extractor(x)
        (shared,) = probe.read(x.shape)
        with pytest.raises(RuntimeError, match="exactly one complete forward pass"):
            probe.read(x.shape)  # read consumes the pass
    assert [len(b._forward_hooks) for b in model.blocks] == hooks
    torch.testing.assert_close(shared.patch, alone.patch)
    torch.testing.assert_close(shared.neighbour_cos, alone.neighbour_cos)


def test_gap_model_has_registers_and_no_cls():
    model = build_model(get_spec("timm_reg_vitm16"), depth=1).eval()
    with TokenProbe(model, num_registers=4, class_token=False) as probe:
        (norms,) = probe(torch.randn(1, 3, 32, 48))
    assert norms.registers.shape == (1, 4) and norms.cls.shape == (1, 0) and norms.patch.shape == (1, 2, 3)


def test_neighbour_cosine_by_hand():
    grid = torch.zeros(1, 2, 2, 2)
    grid[0, 0, 0] = torch.tensor([1.0, 0.0])
    grid[0, 0, 1] = torch.tensor([1.0, 0.0])
    grid[0, 1, 0] = torch.tensor([0.0, 1.0])
    grid[0, 1, 1] = torch.tensor([1.0, 1.0])
    cos = neighbour_cosine(grid)[0]
    s = 2**-0.5
    torch.testing.assert_close(cos, torch.tensor([[(1 + 0) / 2, (1 + s) / 2], [(0 + s) / 2, (s + s) / 2]]))
