"""``--backbone timm:MODEL_NAME``: any timm ViT with patch tokens, end to end with random weights
(two blocks, one forward per image), and the models objdisc cannot read refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import refused, write_image
from safetensors.torch import save_file

from objdisc.cli import cli
from objdisc.commands.run import RunConfig, run
from objdisc.images import make_batch
from objdisc.models.backbones import build_model, create_backbone
from objdisc.models.features import KeyExtractor
from objdisc.models.specs import get_spec

# (timm model, patch, prefix tokens, registers, CLS): families beyond objdisc's own table.
FAMILIES = [
    pytest.param("vit_base_patch16_siglip_224.webli", 16, 0, 0, False, marks=pytest.mark.slow),  # SigLIP: no CLS
    ("eva02_tiny_patch14_224.mim_in22k", 14, 1, 0, True),  # EVA-02: RoPE, separate q/k/v projections
    ("deit_tiny_distilled_patch16_224.fb_in1k", 16, 2, 0, True),  # DeiT: CLS + distillation token
    ("vit_base_patch32_clip_224.openai", 32, 1, 0, True),  # OpenAI CLIP: pre-norm
    pytest.param("aimv2_large_patch14_224.apple_pt", 14, 0, 0, False, marks=pytest.mark.slow),  # AIMv2: no CLS
    ("vit_little_patch16_reg1_gap_256.sbb_in12k", 16, 1, 1, False),  # one register, no CLS
    ("vit_medium_patch16_rope_reg1_gap_256.sbb_in1k", 16, 1, 1, False),  # EVA blocks, RoPE, register
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, hw in enumerate([(70, 98), (96, 64)]):
        write_image(folder / f"{i}.jpg", hw, (10, 10, 40, 40), seed=i)
    return folder


@pytest.mark.parametrize(("name", "patch", "prefix", "registers", "cls"), FAMILIES)
def test_any_timm_vit_end_to_end(tmp_path: Path, images: Path, name, patch, prefix, registers, cls):
    spec = get_spec(f"timm:{name}")
    assert (spec.name, spec.timm_name, spec.family, spec.pos_embed) == (f"timm:{name}", name, "timm", "timm")
    assert (spec.patch_size, spec.num_prefix_tokens, spec.num_registers, spec.class_token) == (
        patch, prefix, registers, cls
    )  # fmt: skip
    cfg = spec.pretrained_cfg
    assert spec.mean == tuple(cfg.mean) and spec.license == cfg.license
    torch.manual_seed(0)
    model = build_model(spec, depth=2)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    backbone = create_backbone(spec.name, weights, depth=2)
    x = make_batch([torch.zeros(70, 98, 3, dtype=torch.uint8)], patch, spec.mean, spec.std)
    with KeyExtractor(backbone.model) as extract, torch.no_grad():
        keys = extract(x)
    assert keys.shape[:2] == (1, (x.shape[2] // patch) * (x.shape[3] // patch))  # every patch, no prefix token

    config = RunConfig.flat(
        backbone=spec.name, dataset="folder", images=images, out=tmp_path / "o", weights=weights,
        workers=0, model_kwargs={"depth": 2},
    )  # fmt: skip
    result = run(config, progress=False)
    assert result.metrics["n_objects"] == 2 and result.metrics["n_skipped"] == 0
    made_by = json.loads((tmp_path / "o" / "run.json").read_text())["producer"]
    assert made_by["backbone"] == f"timm:{name}" and made_by["timm_model"] == name
    assert made_by["num_prefix_tokens"] == prefix and made_by["weights"]["source"] == "local"


def test_a_name_without_tag_is_labelled_with_timms_default_tag():
    spec = get_spec("timm:deit_tiny_patch16_224")
    assert spec.name == "timm:deit_tiny_patch16_224.fb_in1k" and spec.timm_name == "deit_tiny_patch16_224.fb_in1k"


def test_a_table_model_by_its_timm_name_keeps_its_release_recipe():
    spec = get_spec("timm:vit_small_patch14_dinov2.lvd142m")
    assert spec.family == "dinov2" and spec.pos_embed == "dinov2-release"
    assert get_spec("timm:vit_small_patch16_224.augreg_in21k").pos_embed == "timm"  # same architecture, other weights


def test_through_the_cli_with_a_full_model(tmp_path: Path, images: Path):
    spec = get_spec("timm:deit_tiny_patch16_224")
    torch.manual_seed(0)
    weights = tmp_path / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(spec).state_dict().items()}, str(weights))
    args = ["run", "-b", "timm:deit_tiny_patch16_224", "--weights", str(weights), "-d", "folder"]
    result = CliRunner().invoke(cli, [*args, "--images", str(images), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "timm:deit_tiny_patch16_224.fb_in1k" in result.output
    journal = (tmp_path / "o" / "journal" / "rank0.jsonl").read_text().splitlines()[0]
    assert json.loads(journal)["settings"]["backbone"] == "timm:deit_tiny_patch16_224.fb_in1k"
    table = CliRunner().invoke(cli, ["table", str(tmp_path / "o")])
    assert table.exit_code == 1  # a folder dataset has no CorLoc ...
    assert "no metric to show (a dataset without ground truth?)" in table.output  # ... and says so


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("resnet50", "ResNet is not a ViT with patch tokens"),
        ("convnext_tiny", "ConvNeXt is not a ViT with patch tokens"),
        ("vit_tiny_r_s16_p8_224", "a hybrid model"),
        ("beit_base_patch16_224", "Attention lacks head_dim / k_norm"),
        ("no_such_model", "has no model 'no_such_model'"),
    ],
)
def test_models_objdisc_cannot_read_are_refused_with_the_reason(tmp_path: Path, images: Path, name: str, reason: str):
    args = ["run", "-b", f"timm:{name}", "-d", "folder", "--images", str(images), "--out", str(tmp_path / "o")]
    refused(CliRunner().invoke(cli, args), f"timm:{name}", reason)
    assert not (tmp_path / "o").exists()


def test_backbones_all_lists_timm_models():
    result = CliRunner().invoke(cli, ["backbones", "--all"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "timm:vit_base_patch16_siglip_224.webli" in lines and "timm:eva02_tiny_patch14_224.mim_in22k" in lines
    assert all(line.startswith("timm:") for line in lines) and len(lines) > 300
    assert f"{len(lines)} pretrained timm models" in result.stderr
