"""The feature cache: a cached rerun never builds the model and gives identical objects; any
change of what decides the features is a miss; a damaged entry goes back to the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import corloc_value, make_voc

import objdisc.models.backbones as backbones_module
from objdisc.commands.run import RunConfig, run
from objdisc.datasets import load_dataset
from objdisc.engine.feature_cache import FeatureCache
from objdisc.models.backbones import create_backbone
from objdisc.models.feature_spec import FeatureSpec


@pytest.fixture(scope="module")
def backbone(weights_file):
    return create_backbone("dinov2_reg", weights_file("dinov2_reg"))


def voc_run(tmp_path: Path, out: str, **options) -> RunConfig:
    return RunConfig.flat("dinov2_reg", "voc07", tmp_path / out, data_root=tmp_path, workers=0, **options)


def predictions(out: Path) -> list:
    return json.loads((out / "predictions.json").read_text())


def test_cached_rerun_skips_the_model_and_gives_identical_objects(backbone, tmp_path, monkeypatch, weights_file):
    make_voc(tmp_path)
    cache = tmp_path / "cache"
    weights = weights_file("dinov2_reg")
    first = run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == first.metrics["n_images"] == 4

    def never(*args, **kwargs):
        raise AssertionError("the backbone was built on a cached run")

    monkeypatch.setattr("objdisc.models.backbones.create_backbone", never)
    calls = []
    handle = backbone.model.register_forward_pre_hook(lambda *a: calls.append(1))
    again = run(voc_run(tmp_path, "b", cache=cache, weights=weights))
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert corloc_value(again.metrics) == corloc_value(first.metrics)
    # other LOST / TokenCut options read the same cache
    run(voc_run(tmp_path, "c", cache=cache, weights=weights, method_options={"k_patches": 3, "gram_bias": 0.5}))
    run(voc_run(tmp_path, "d", cache=cache, weights=weights, method="tokencut"))
    handle.remove()
    assert calls == []
    tokencut = json.loads((tmp_path / "d/metrics.json").read_text())
    assert tokencut["producer"]["discovery"] == {
        "features": "k",
        "layer": -1,
        "method": "tokencut",
        "tau": 0.2,
        "eps": 1e-05,
        "eigen": "auto",
    }


def plain_identity(backbone) -> dict:
    """The cache identity of a plain fp32 LOST run on ``backbone``, written out (not from runner)."""
    return {
        "timm_model": backbone.spec.timm_name,
        "weights_sha256": backbone.weights.sha256,
        "precision": "fp32",
        "max_side": None,
        "model_kwargs": {},
    }


def test_changed_settings_miss_the_cache(backbone, tmp_path: Path, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    cache = tmp_path / "cache"
    run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    record = load_dataset("voc07", tmp_path).records[0]
    identity = plain_identity(backbone)
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is not None
    for changed in ({"precision": "bf16"}, {"weights_sha256": "0" * 64}, {"max_side": 64}):
        assert FeatureCache(cache, {**identity, **changed}).get(record.path, FeatureSpec()) is None
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec("q")) is None
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec("k", -2)) is None
    # an entry copied under another image's name is refused by its metadata
    good = FeatureCache(cache, identity)
    other = load_dataset("voc07", tmp_path).records[1]
    good.path(other.path, FeatureSpec()).write_bytes(good.path(record.path, FeatureSpec()).read_bytes())
    assert good.get(other.path, FeatureSpec()) is None
    # a changed image is a miss: its bytes are the key
    record.path.write_bytes(record.path.read_bytes() + b"\0")
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is None


def test_a_torn_cache_entry_goes_back_to_the_model(backbone, tmp_path: Path, monkeypatch, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    cache = tmp_path / "cache"
    run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    torn = sorted(cache.rglob("*.safetensors"))[1]
    torn.write_bytes(torn.read_bytes()[:100])
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.models.backbones.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
    result = run(voc_run(tmp_path, "b", cache=cache, weights=weights))
    assert built == [1] and result.metrics["n_skipped"] == 0
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert len(torn.read_bytes()) > 100  # rewritten whole


@pytest.mark.slow
def test_a_run_with_another_layer_builds_the_model(backbone, tmp_path: Path, monkeypatch, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    run(voc_run(tmp_path, "a", cache=tmp_path / "cache", weights=weights), backbone)
    built = []
    real = backbones_module.create_backbone
    monkeypatch.setattr("objdisc.models.backbones.create_backbone", lambda *a, **k: built.append(1) or real(*a, **k))
    run(voc_run(tmp_path, "b", cache=tmp_path / "cache", weights=weights, layer=-2))
    assert built == [1]


def test_an_entry_damaged_behind_a_valid_header_goes_back_to_the_model(backbone, tmp_path: Path, weights_file):
    make_voc(tmp_path)
    weights = weights_file("dinov2_reg")
    cache = tmp_path / "cache"
    run(voc_run(tmp_path, "a", cache=cache, weights=weights), backbone)
    damaged = sorted(cache.rglob("*.safetensors"))[0]
    data = bytearray(damaged.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 header length, JSON header, data
    half = header + (len(data) - header) // 2
    data[half:] = bytes(len(data) - half)  # the second half of the tensor zeroed, the header intact
    damaged.write_bytes(bytes(data))
    digest = FeatureCache(cache, {}).digest
    record = next(r for r in load_dataset("voc07", tmp_path).records if digest(r.path) in damaged.name)
    identity = plain_identity(backbone)
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is None
    run(voc_run(tmp_path, "b", cache=cache, weights=weights))
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert FeatureCache(cache, identity).get(record.path, FeatureSpec()) is not None  # rewritten whole
