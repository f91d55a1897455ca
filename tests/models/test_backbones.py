from __future__ import annotations

import pytest
import torch

from objdisc.errors import BackboneError
from objdisc.models.backbones import build_model, create_backbone
from objdisc.models.features import FeatureExtractor, FeatureSpec
from objdisc.models.specs import ALIASES, BACKBONES, get_spec

# Every registered name; the ViT-g ones (1.1 B parameters) run with the slow tests (CI runs both).
GIANT_LAST = [pytest.param(n, marks=pytest.mark.slow) if n.endswith("vitg14") else n for n in BACKBONES]


@pytest.mark.parametrize("name", GIANT_LAST)
def test_every_registered_backbone_matches_its_table_row(name: str):
    spec = BACKBONES[name]
    with torch.device("meta"):  # structure only: no memory for the giant ones
        model = build_model(spec)
    assert model.patch_embed.patch_size == (spec.patch_size, spec.patch_size)
    assert model.num_prefix_tokens == spec.num_prefix_tokens == int(spec.class_token) + spec.num_registers
    if spec.twin is not None:  # the no-register twin: same size, no registers
        twin = BACKBONES[spec.twin]
        assert twin.num_registers == 0 < spec.num_registers and twin.params_m == spec.params_m
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == spec.params_m
    assert model.dynamic_img_size and model.num_classes == 0
    cfg = spec.pretrained_cfg
    assert cfg.hf_hub_id == f"timm/{spec.timm_name}"
    assert spec.license == cfg.license and len(spec.mean) == 3 and len(spec.std) == 3


@pytest.mark.parametrize(
    ("alias", "target"), [("dino", "dino_vits16"), ("dinov2", "dinov2_vits14"), ("dinov2_reg", "dinov2_reg_vits14")]
)
def test_aliases(alias: str, target: str):
    assert ALIASES[alias] == target and get_spec(alias) is BACKBONES[target]


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(BackboneError, match="dinov2_reg_vits14"):
        get_spec("dinov4")


@pytest.mark.parametrize("name", GIANT_LAST)
def test_every_backbone_loads_a_local_file_and_gives_keys(name: str, tmp_path):
    # depth=1 keeps the giant ones small; the layout of every weight is the real one.
    from safetensors.torch import save_file

    spec = BACKBONES[name]
    source = build_model(spec, depth=1)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    backbone = create_backbone(name, tmp_path / "w.safetensors", depth=1)
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[key], value), key
    assert backbone.weights.source == "local" and len(backbone.weights.sha256) == 64
    assert not backbone.model.training
    assert backbone.patch_size == spec.patch_size
    patch = spec.patch_size
    x = torch.randn(1, 3, 3 * patch, 5 * patch)  # non-square: dynamic image size works
    specs = [FeatureSpec(kind, -1) for kind in "kqv"]
    with FeatureExtractor(backbone.model, specs) as extractor, torch.no_grad():
        feats = extractor.extract(x)
    for spec_ in specs:
        assert feats[spec_].shape == (1, 15, backbone.model.embed_dim) and torch.isfinite(feats[spec_]).all()
    assert not torch.equal(feats[specs[0]], feats[specs[2]])
