"""DINOv2 checkpoints in the Hugging Face transformers layout: randomly initialised transformers
models saved by ``save_pretrained``, loaded by objdisc as a user's downloaded folder, give the
transformers model's own last-layer keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from click.testing import CliRunner
from conftest import refused, write_image

from objdisc.cli import cli
from objdisc.errors import WeightsError
from objdisc.models.backbones import create_backbone
from objdisc.models.features import KeyExtractor


def hf_model(registers: int, depth: int = 2, hidden: int = 384, seed: int = 0) -> torch.nn.Module:
    """A random transformers DINOv2 ViT-S/14 (ViT-B/14 with ``hidden=768``; ``registers`` register
    tokens), every parameter perturbed so that no two blocks or tokens are alike."""
    heads = hidden // 64  # DINOv2's head width
    kwargs = {"hidden_size": hidden, "num_hidden_layers": depth, "num_attention_heads": heads, "patch_size": 14}
    kwargs |= {"image_size": 518, "layerscale_value": 1.0}
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs)
        )
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kwargs))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def own_keys(model: torch.nn.Module, x: torch.Tensor, registers: int) -> torch.Tensor:
    """The transformers model's last-layer keys of the patch tokens."""
    seen = {}
    attention = model.encoder.layer[-1].attention
    projection = attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key
    handle = projection.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))
    with torch.no_grad():
        model(pixel_values=x)
    handle.remove()
    return seen["k"][:, 1 + registers :]


@pytest.mark.parametrize(("name", "registers"), [("dinov2_vits14", 0), ("dinov2_reg_vits14", 4)])
@pytest.mark.parametrize("given", ["folder", "file", pytest.param("torch_save", marks=pytest.mark.slow)])
def test_keys_at_the_trained_size_equal_the_transformers_model(tmp_path: Path, name: str, registers: int, given: str):
    model = hf_model(registers)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    weights = {
        "folder": folder,
        "file": folder / "model.safetensors",
        "torch_save": tmp_path / "state.pth",  # transformers 5's in-memory names
    }[given]
    if given == "torch_save":
        torch.save(model.state_dict(), weights)
    backbone = create_backbone(name, weights, depth=2)
    assert backbone.weights.path == str(folder / "model.safetensors" if given != "torch_save" else weights)
    x = torch.randn(2, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with KeyExtractor(backbone.model) as extract, torch.no_grad():
        keys = extract(x)
    expected = own_keys(model, x, registers)
    assert keys.shape == expected.shape == (2, 37 * 37, 384)
    torch.testing.assert_close(keys, expected, rtol=1e-5, atol=1e-5)


def test_a_classification_checkpoint_gives_its_backbone(tmp_path: Path):
    config = transformers.Dinov2Config(
        hidden_size=384, num_hidden_layers=2, num_attention_heads=6, patch_size=14, image_size=518, num_labels=3
    )
    classifier = transformers.Dinov2ForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path / "cls")
    backbone = create_backbone("dinov2_vits14", tmp_path / "cls", depth=2)
    x = torch.randn(1, 3, 518, 518)
    with KeyExtractor(backbone.model) as extract, torch.no_grad():
        torch.testing.assert_close(extract(x), own_keys(classifier.dinov2, x, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("backbone", "registers", "hidden", "needles"),
    [
        ("dinov2_vits14", 4, 384, ["unexpected keys", "register_tokens"]),  # registers into a no-register model
        ("dinov2_reg_vits14", 0, 384, ["missing keys", "reg_token"]),
        ("dinov2_vits14", 0, 768, ["mis-shaped", "(768"]),  # ViT-B/14 into ViT-S/14
    ],
)
def test_a_checkpoint_of_the_wrong_kind_or_size_is_refused(tmp_path: Path, backbone, registers, hidden, needles):
    hf_model(registers, hidden=hidden).save_pretrained(tmp_path / "hf")
    with pytest.raises(WeightsError) as info:
        create_backbone(backbone, tmp_path / "hf", depth=2)
    for needle in [str(tmp_path / "hf" / "model.safetensors"), *needles]:
        assert needle in str(info.value), str(info.value)


def test_folders_that_are_not_dinov2_checkpoints_are_refused(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=r"neither model\.safetensors nor pytorch_model\.bin"):
        create_backbone("dinov2_vits14", empty)
    other = tmp_path / "vit"
    transformers.ViTModel(transformers.ViTConfig(num_hidden_layers=1)).save_pretrained(other)
    with pytest.raises(WeightsError, match="a transformers 'vit' model"):
        create_backbone("dinov2_vits14", other)


@pytest.mark.slow
def test_a_save_pretrained_folder_through_the_cli(tmp_path: Path):
    model = hf_model(4, depth=12)
    model.save_pretrained(tmp_path / "dinov2-with-registers-small")
    images = tmp_path / "images"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40))
    args = ["run", "-b", "dinov2_reg", "--weights", str(tmp_path / "dinov2-with-registers-small"), "-d", "folder"]
    result = CliRunner().invoke(cli, [*args, "--images", str(images), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    weights = json.loads((tmp_path / "o" / "run.json").read_text())["producer"]["weights"]
    assert weights["path"] == str(tmp_path / "dinov2-with-registers-small" / "model.safetensors")
    refused(
        CliRunner().invoke(
            cli, [*args[:2], "dinov2", *args[3:], "--images", str(images), "--out", str(tmp_path / "p")]
        ),
        "unexpected keys",
    )
