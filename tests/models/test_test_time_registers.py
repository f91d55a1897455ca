"""Test-time registers on a random ViT with a planted register neuron (:mod:`planted_model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import refused
from planted_model import BLOCK, NEURON, UNIT, batch, picture

from objdisc.cli import cli
from objdisc.errors import OptionError
from objdisc.models.backbones import build_model, create_backbone
from objdisc.models.features import FeatureExtractor
from objdisc.models.specs import get_spec
from objdisc.models.test_time_registers import (
    PUBLISHED,
    RegisterNeurons,
    TestTimeRegisters,
    load_register_neurons,
    sign_max,
)
from objdisc.models.token_probe import TokenProbe


def norms_of(model: torch.nn.Module, x: torch.Tensor):
    with TokenProbe(model, 0) as probe, torch.no_grad():
        return probe(x)


def test_planted_neuron_makes_high_norm_tokens_and_ttr_moves_them(planted):
    backbone = create_backbone("dinov2_vits14", planted)
    x = batch([picture(1, 4)])
    (plain,) = norms_of(backbone.model, x)
    last = plain.patch[-1]
    assert last[:, :4].min() > 100 and last[:, 4:].max() < 30  # the artifacts, where planted
    assert plain.extra.shape == (12, 0)

    with TestTimeRegisters(backbone.model, NEURON):
        (moved,) = norms_of(backbone.model, x)
    assert moved.patch[-1].max() < 30  # no high-norm patch token left ...
    assert moved.extra.shape == (12, 1) and moved.extra[-1, 0] > 100  # ... the extra token has it
    assert torch.allclose(moved.cls, plain.cls, atol=1e-3)  # CLS untouched by the intervention


def hand_keys(model: torch.nn.Module, x: torch.Tensor, neurons: dict[int, list[int]]) -> torch.Tensor:
    """The method written out on a plain model: append a zero token after the position
    embedding; in each listed block, on the output of mlp.act, per image, put the sign-max of the
    listed units over every token into the extra token and zero the patch tokens' units;
    last-block keys of the patch tokens."""
    hooks = []
    for block, units in neurons.items():

        def act_hook(module, args, output, units=units):
            for i in range(output.shape[0]):
                values = output[i, :, units]
                high, low = values.max(), values.min()
                output[i, -1, units] = high if abs(high) > abs(low) else low
                output[i, 1:-1, units] = 0

        hooks.append(model.blocks[block].mlp.act.register_forward_hook(act_hook))
    try:
        with torch.no_grad():
            tokens = model._pos_embed(model.patch_embed(x))
            tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])], 1)
            for blk in model.blocks[:-1]:
                tokens = blk(tokens)
            last = model.blocks[-1]
            dim = last.attn.num_heads * last.attn.head_dim
            keys = F.linear(last.norm1(tokens), last.attn.qkv.weight[dim : 2 * dim], last.attn.qkv.bias[dim : 2 * dim])
    finally:
        for h in hooks:
            h.remove()
    return keys[:, model.num_prefix_tokens : -1]


@pytest.mark.parametrize("neurons", [(), ((BLOCK, UNIT),), ((BLOCK, UNIT), (BLOCK, 5), (10, 1000), (2, 3))])
def test_keys_equal_the_method_written_out(planted, neurons):
    backbone = create_backbone("dinov2_vits14", planted)
    x = batch([picture(2, 3), picture(3, 5)])
    given = RegisterNeurons(tuple(neurons), "test")
    expected = hand_keys(backbone.model, x, given.by_block())
    with FeatureExtractor(backbone.model) as extract, torch.no_grad():
        plain = extract(x)
        with TestTimeRegisters(backbone.model, given):
            keys = extract(x)
        again = extract(x)  # closed: the plain model again
    assert keys.shape == plain.shape == (2, 80, 384)
    torch.testing.assert_close(keys, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(keys, plain)  # the extra token is attended to: keys change
    assert torch.equal(again, plain)


def test_a_batch_equals_one_image_at_a_time(planted):
    """The sign-max is per image: images with different flat regions in one batch."""
    backbone = create_backbone("dinov2_vits14", planted)
    pictures = [picture(4, 5), picture(5, 0), picture(6, 2)]
    with TestTimeRegisters(backbone.model, NEURON), torch.no_grad():
        with FeatureExtractor(backbone.model) as extract:
            together = extract(batch(pictures))
            alone = torch.cat([extract(batch([p])) for p in pictures])
        extra = [n.extra[-1, 0] for n in norms_of(backbone.model, batch(pictures))]
        extra_alone = [norms_of(backbone.model, batch([p]))[0].extra[-1, 0] for p in pictures]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.stack(extra), torch.stack(extra_alone), rtol=1e-4, atol=1e-4)
    assert extra[0] > 100 and extra[1] < 30  # the image without a flat region gives its token little


def test_the_intervention_never_syncs_with_the_host(planted):
    backbone = create_backbone("dinov2_vits14", planted)
    with TestTimeRegisters(backbone.model, NEURON) as ttr:
        hook = ttr._make_hook([UNIT, 5], torch.device("cpu"))
        hidden = torch.randn(2, 1 + 80 + 1, 1536)
        expected = hidden.clone()
        for i in range(2):
            values = expected[i, :, [UNIT, 5]]
            expected[i, -1, [UNIT, 5]] = values.max() if values.max().abs() > values.min().abs() else values.min()
            expected[i, 1:-1, [UNIT, 5]] = 0
        with pytest.MonkeyPatch.context() as patch:
            for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"):
                patch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("host sync in the hook"))
            hook(None, (hidden,))
    assert torch.equal(hidden, expected)


def test_sign_max_keeps_the_sign_and_is_per_image():
    values = torch.tensor([[[1.0, -3.0], [2.0, 0.5]], [[4.0, -1.0], [0.0, 0.0]], [[-2.0, 2.0], [0.0, 1.0]]])
    assert sign_max(values).tolist() == [-3.0, 4.0, -2.0]  # a tie goes to the negative value


def run_args(weights: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "-b", "dinov2_vits14", "--weights", str(weights), "-d", "folder", "--images", str(images),
        "--out", str(out), "--workers", "0", *extra,
    ]  # fmt: skip


def test_run_with_test_time_registers_is_recorded_and_never_mixed(planted, flat_images, tmp_path: Path):
    neurons = tmp_path / "neurons.json"
    neurons.write_text(json.dumps({"ranked": [[BLOCK, UNIT], [BLOCK, 5]]}))
    out, cache = tmp_path / "ttr", tmp_path / "cache"
    ttr = ["--test-time-registers", str(neurons), "--ttr-top", "1", "--cache", str(cache)]
    result = CliRunner().invoke(cli, run_args(planted, flat_images, out, *ttr))
    assert result.exit_code == 0, result.output
    made_by = json.loads((out / "run.json").read_text())["producer"]
    assert made_by["test_time_registers"]["neurons"] == {str(BLOCK): [UNIT]}
    assert made_by["test_time_registers"]["source"] == str(neurons)
    # Resuming without test-time registers into that folder is refused, naming the difference.
    refused(CliRunner().invoke(cli, run_args(planted, flat_images, out)), "test_time_registers")
    # The plain run does not read the test-time-register features from the cache: its boxes
    # are those of a plain run without a cache, and differ from the test-time-register run's.
    plain, uncached = tmp_path / "plain", tmp_path / "uncached"
    assert CliRunner().invoke(cli, run_args(planted, flat_images, plain, "--cache", str(cache))).exit_code == 0
    assert CliRunner().invoke(cli, run_args(planted, flat_images, uncached)).exit_code == 0
    assert (plain / "predictions.json").read_bytes() == (uncached / "predictions.json").read_bytes()
    assert (plain / "predictions.json").read_bytes() != (out / "predictions.json").read_bytes()
    # A second run with test-time registers is served by the cache and gives the same boxes.
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, run_args(planted, flat_images, again, *ttr))
    assert result.exit_code == 0
    assert (again / "predictions.json").read_bytes() == (out / "predictions.json").read_bytes()


@pytest.mark.slow
def test_a_batched_run_equals_batch_size_one(planted, flat_images, tmp_path: Path):
    ttr = ["--test-time-registers", json_file(tmp_path, [[BLOCK, UNIT]])]
    a = CliRunner().invoke(cli, run_args(planted, flat_images, tmp_path / "a", *ttr, "--batch-size", "6"))
    b = CliRunner().invoke(cli, run_args(planted, flat_images, tmp_path / "b", *ttr, "--batch-size", "1"))
    assert a.exit_code == 0 and b.exit_code == 0
    assert (tmp_path / "a/predictions.json").read_bytes() == (tmp_path / "b/predictions.json").read_bytes()


def json_file(folder: Path, ranked: list) -> str:
    path = folder / "ranked.json"
    path.write_text(json.dumps({"ranked": ranked}))
    return str(path)


def test_builtin_is_the_published_list():
    neurons = load_register_neurons("builtin", "dinov2_vitl14")
    assert len(neurons.neurons) == 45 and not neurons.ranked and neurons.label == "builtin"
    assert neurons.by_block()[14] == [2110, 1510, 1082, 2711, 2464, 147, 543, 581]
    assert sorted(neurons.by_block()) == [12, 13, 14, 15, 16, 17] and PUBLISHED["dinov2_vitl14"][13] == (2400,)
    assert RegisterNeurons.from_record(neurons.describe()).sha256 == neurons.sha256


@pytest.mark.slow
def test_builtin_attaches_to_a_vit_l(tmp_path: Path):
    model = build_model(get_spec("dinov2_vitl14"), depth=18).eval()
    with TestTimeRegisters(model, load_register_neurons("builtin", "dinov2_vitl14")) as ttr:
        assert len(ttr._handles) == 6
        with FeatureExtractor(model) as extract, torch.no_grad():
            assert extract(batch([picture(0, 3)], get_spec("dinov2_vitl14"))).shape == (1, 80, 1024)


@pytest.mark.parametrize(
    ("value", "backbone", "top", "message"),
    [
        ("builtin", "dinov2_vits14", None, "no published register neurons for dinov2_vits14"),
        ("builtin", "dinov2_vitl14", 5, "not ranked"),
        ("missing.json", "dinov2_vits14", None, "file not found"),
        ("garbage", "dinov2_vits14", None, "not a JSON file"),
        ("other", "dinov2_vits14", None, "register neurons of dinov2_vitl14, not of dinov2_vits14"),
        ("empty", "dinov2_vits14", None, "empty"),
        ("bad", "dinov2_vits14", None, r"not a \(block, neuron\) pair"),
        ("twice", "dinov2_vits14", None, "listed twice"),
    ],
)
def test_bad_neuron_lists_are_refused(tmp_path: Path, value: str, backbone: str, top: int | None, message: str):
    contents = {
        "garbage": "not json",
        "other": json.dumps({"producer": {"backbone": "dinov2_vitl14"}, "ranked": [[1, 2]]}),
        "empty": json.dumps({"ranked": []}),
        "bad": json.dumps({"ranked": [{"block": 1}]}),
        "twice": json.dumps({"ranked": [[1, 2], [1, 2]]}),
    }
    if value in contents:
        (tmp_path / value).write_text(contents[value])
        value = str(tmp_path / value)
    elif value.endswith(".json"):
        value = str(tmp_path / value)
    with pytest.raises(OptionError, match=message):
        load_register_neurons(value, backbone, top)


def test_neurons_the_model_lacks_and_rope_models_are_refused():
    model = build_model(get_spec("dinov2_vits14"), depth=2)
    with pytest.raises(OptionError, match="block 5 does not exist in a model of 2 blocks"):
        TestTimeRegisters(model, RegisterNeurons(((5, 0),), "x"))
    with pytest.raises(OptionError, match="neuron 9999 of block 1 does not exist"):
        TestTimeRegisters(model, RegisterNeurons(((1, 9999),), "x"))
    with pytest.raises(OptionError, match="RoPE"):
        TestTimeRegisters(build_model(get_spec("dinov3_vits16"), depth=1), RegisterNeurons(((0, 0),), "x"))
    with pytest.raises(OptionError, match="RoPE"):  # EVA blocks with RoPE, by its timm name
        eva = build_model(get_spec("timm:vit_medium_patch16_rope_reg1_gap_256.sbb_in1k"), depth=1)
        TestTimeRegisters(eva, RegisterNeurons(((0, 0),), "x"))


def test_cli_refuses_builtin_where_none_is_published(weights_file, flat_images, tmp_path: Path):
    args = run_args(weights_file("dinov2_reg"), flat_images, tmp_path / "o", "--test-time-registers", "builtin")
    args[2] = "dinov2_reg"
    refused(CliRunner().invoke(cli, args), "no published register neurons for dinov2_reg_vits14", "registers find")
    refused(CliRunner().invoke(cli, run_args(weights_file("dinov2"), flat_images, tmp_path / "o", "--ttr-top", "3")),
            "--ttr-top needs --test-time-registers")  # fmt: skip


@pytest.mark.slow
def test_sweep_points_carry_the_test_time_registers(planted, flat_images, tmp_path: Path):
    ttr = json_file(tmp_path, [[BLOCK, UNIT]])
    args = ["sweep", "-b", "dinov2_vits14", "--weights", str(planted), "-d", "folder", "--images", str(flat_images)]
    result = CliRunner().invoke(
        cli,
        [*args, "--out", str(tmp_path / "s"), "--workers", "0", "--gram-bias", "0,0.5", "--test-time-registers", ttr],
    )
    assert result.exit_code == 0, result.output
    for point in ("lost_k_l-1_gb0", "lost_k_l-1_gb0.5"):
        made_by = json.loads((tmp_path / "s" / point / "run.json").read_text())["producer"]
        assert made_by["test_time_registers"]["neurons"] == {str(BLOCK): [UNIT]}
    # The first point equals a plain `run` with the same neurons.
    single = CliRunner().invoke(cli, run_args(planted, flat_images, tmp_path / "r", "--test-time-registers", ttr))
    assert single.exit_code == 0
    same = (tmp_path / "s" / "lost_k_l-1_gb0" / "predictions.json").read_bytes()
    assert same == (tmp_path / "r" / "predictions.json").read_bytes()
