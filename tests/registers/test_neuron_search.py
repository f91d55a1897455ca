"""``objdisc registers find`` on a random ViT with a planted register neuron (:mod:`planted_model`)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from click.testing import CliRunner
from conftest import invoke, refused
from planted_model import BLOCK, N_FLAT, UNIT, batch, picture

from objdisc.cli import cli
from objdisc.datasets import load_dataset
from objdisc.models.backbones import create_backbone
from objdisc.models.test_time_registers import load_register_neurons
from objdisc.registers.neuron_search import find_register_neurons


def on_voc(command: str, root: Path, weights_file, *extra: str):
    """``objdisc <command>`` on the synthetic VOC07 under ``root`` with random-init DINOv2+reg weights."""
    weights = str(weights_file("dinov2_reg"))
    return invoke(command, "-b", "dinov2_reg", "-d", "voc07", "--data-root", str(root), "--weights", weights, *extra)


def test_find_ranks_the_planted_neuron_first(planted, flat_images, tmp_path: Path):
    out = tmp_path / "neurons.json"
    result = CliRunner().invoke(
        cli,
        [
            *("registers", "find", "-b", "dinov2_vits14", "--weights", str(planted), "--images", str(flat_images)),
            *("--out", str(out), "--top", "10", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert found["ranked"][0]["block"] == BLOCK and found["ranked"][0]["neuron"] == UNIT
    assert found["ranked"][0]["score"] > 5 * found["ranked"][1]["score"]
    assert len(found["ranked"]) == 10 and found["neurons"][str(BLOCK)][0] == UNIT
    assert found["threshold_source"] == "bimodal gap" and 30 < found["threshold"] < 100
    assert found["n_images"] == 6 and found["n_images_with_outliers"] == 4
    assert found["n_outlier_tokens"] == N_FLAT  # exactly the flat patches
    assert found["producer"]["backbone"] == "dinov2_vits14" and found["producer"]["weights"]["source"] == "local"
    assert "block 6 unit 777" in result.output
    # The file drives test-time registers.
    assert load_register_neurons(str(out), "dinov2_vits14", top=1).neurons == ((BLOCK, UNIT),)


def test_find_scores_equal_a_direct_computation(planted, flat_images):
    """Mean over flat_images with outliers of the mean |activation| at their outlier tokens."""

    backbone = create_backbone("dinov2_vits14", planted)
    records = load_dataset("folder", images=flat_images).records
    found = find_register_neurons(backbone, records, threshold=50.0, top=3)
    model, per_image = backbone.model, []
    for record in records:
        acts: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        hooks = [b.mlp.act.register_forward_hook(lambda m, i, o, a=acts: a.append(o[0])) for b in model.blocks]
        hooks.append(model.blocks[-1].register_forward_hook(lambda m, i, o, a=outputs: a.append(o[0])))
        image = cv2.cvtColor(cv2.imread(str(record.path)), cv2.COLOR_BGR2RGB)
        with torch.no_grad():
            model.forward_features(batch([image]))
        for h in hooks:
            h.remove()
        where = outputs[0].norm(dim=-1) > 50.0
        if where.any():
            per_image.append(torch.stack([a[where].abs().mean(0) for a in acts]))
    scores = torch.stack(per_image).double().mean(0)
    best = torch.topk(scores.ravel(), 3).indices
    assert [(r["block"], r["neuron"]) for r in found["ranked"]] == [(int(i) // 1536, int(i) % 1536) for i in best]
    for r, i in zip(found["ranked"], best, strict=True):
        assert r["score"] == pytest.approx(float(scores.ravel()[i]), rel=1e-4)
    assert found["threshold_source"] == "given" and found["n_images_with_outliers"] == 4


@pytest.mark.slow
def test_find_without_outliers_says_what_to_do(planted, tmp_path: Path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(4):
        assert cv2.imwrite(str(folder / f"{i}.png"), picture(20 + i, 0, (224, 280)))
    args = ["registers", "find", "-b", "dinov2_vits14", "--weights", str(planted), "--images", str(folder)]
    refused(CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "n.json")]), "not bimodal", "--threshold")
    refused(
        CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "n.json"), "--threshold", "1e6"]),
        "no token is above the threshold",
    )
    assert not (tmp_path / "n.json").exists()
