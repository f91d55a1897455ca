from __future__ import annotations

import pytest
import torch

from objdisc.errors import OptionError
from objdisc.models.backbones import build_model
from objdisc.models.features import FeatureExtractor, FeatureSpec, KeyExtractor
from objdisc.models.specs import get_spec


def reference_keys(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Keys the way LOST takes them: hook the last qkv output, take k, heads concatenated."""
    out = {}
    attn = model.blocks[-1].attn
    handle = attn.qkv.register_forward_hook(lambda m, i, o: out.setdefault("qkv", o))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    b, t, _ = out["qkv"].shape
    k = out["qkv"].reshape(b, t, 3, attn.num_heads, attn.head_dim)[:, :, 1]
    return k.reshape(b, t, -1)[:, model.num_prefix_tokens :]


@pytest.mark.parametrize(("name", "hw"), [("dino", (48, 64)), ("dinov2", (42, 70)), ("dinov2_reg", (56, 28))])
def test_keys_equal_the_last_qkv_key_slice(name: str, hw: tuple[int, int]):
    torch.manual_seed(0)
    model = build_model(get_spec(name), depth=3).eval()
    x = torch.randn(2, 3, *hw)
    patch = model.patch_embed.patch_size[0]
    with KeyExtractor(model) as extractor, torch.no_grad():
        keys = extractor(x)
    assert keys.shape == (2, (hw[0] // patch) * (hw[1] // patch), model.embed_dim)
    torch.testing.assert_close(keys, reference_keys(model, x), rtol=0, atol=0)


def test_prefix_tokens_dropped_by_the_models_own_count():
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    assert model.num_prefix_tokens == 5
    with KeyExtractor(model) as extractor, torch.no_grad():
        assert extractor(torch.randn(1, 3, 28, 42)).shape[1] == 2 * 3


def test_no_work_past_the_keys_and_one_hook_per_model():
    model = build_model(get_spec("dinov2_reg"), depth=2).eval()
    calls = {"qkv": 0, "proj": 0, "mlp": 0, "norm": 0}
    last = model.blocks[-1]

    def count(name):
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    last.attn.qkv.register_forward_hook(count("qkv"))  # only the key third is computed, by the hook
    last.attn.proj.register_forward_hook(count("proj"))
    last.mlp.register_forward_hook(count("mlp"))
    model.norm.register_forward_hook(count("norm"))
    before = len(last.attn._forward_pre_hooks)
    extractor = KeyExtractor(model)
    assert len(last.attn._forward_pre_hooks) == before + 1
    with torch.no_grad():
        for _ in range(3):
            extractor(torch.randn(1, 3, 28, 28))
    assert calls == {"qkv": 0, "proj": 0, "mlp": 0, "norm": 0}
    assert len(last.attn._forward_pre_hooks) == before + 1  # not one per image
    extractor.close()
    assert len(last.attn._forward_pre_hooks) == before


def reference_qkv(model: torch.nn.Module, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Every block's full qkv output ``(B, T, 3, heads, head_dim)`` from a plain forward pass."""
    out = {}
    handles = [
        block.attn.qkv.register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o))
        for n, block in enumerate(model.blocks)
    ]
    with torch.no_grad():
        model.forward_features(x)
    for handle in handles:
        handle.remove()
    attn = model.blocks[0].attn
    return {n: o.reshape(*o.shape[:2], 3, attn.num_heads, attn.head_dim) for n, o in out.items()}


@pytest.mark.parametrize("name", ["dino", "dinov2_reg"])
def test_q_k_v_of_every_layer_equal_that_blocks_qkv(name: str):
    torch.manual_seed(0)
    model = build_model(get_spec(name), depth=4).eval()
    patch = model.patch_embed.patch_size[0]
    x = torch.randn(2, 3, 4 * patch, 3 * patch)
    reference = reference_qkv(model, x)
    specs = [FeatureSpec(kind, layer) for kind in "kqv" for layer in (-1, -2, -3, -4, 0, 2)]
    with FeatureExtractor(model, specs) as extractor, torch.no_grad():
        got = extractor.extract(x)
    assert set(got) == set(specs)
    for spec in specs:
        part = reference[spec.layer % 4][:, model.num_prefix_tokens :, "qkv".index(spec.kind)]
        torch.testing.assert_close(got[spec], part.flatten(2), rtol=0, atol=0, msg=str(spec))
    # q and k differ, layers differ: each option changes what it should
    assert not torch.equal(got[FeatureSpec("k", -1)], got[FeatureSpec("q", -1)])
    assert not torch.equal(got[FeatureSpec("k", -1)], got[FeatureSpec("k", -2)])


def test_extraction_stops_at_the_deepest_asked_block():
    model = build_model(get_spec("dino"), depth=4).eval()
    ran = []
    for n, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *a, n=n: ran.append(n))
    with FeatureExtractor(model, [FeatureSpec("v", 1), FeatureSpec("k", 0)]) as extractor, torch.no_grad():
        extractor.extract(torch.randn(1, 3, 32, 32))
    assert ran == [0]  # block 1's attention input is ready after block 0


@pytest.mark.parametrize(
    ("kind", "layer", "message"), [("x", -1, "unknown features 'x'"), ("k", 4, "--layer 4"), ("k", -5, "--layer -5")]
)
def test_bad_feature_options_are_named(kind: str, layer: int, message: str):
    model = build_model(get_spec("dino"), depth=4)
    with pytest.raises(OptionError, match=message):
        FeatureExtractor(model, [FeatureSpec(kind, layer)])


@pytest.mark.parametrize("timm_name", ["vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb"])
def test_dinov3_features_are_taken_before_rope(timm_name: str, monkeypatch: pytest.MonkeyPatch):
    """The q and k that EVA attention feeds to its rotary embedding are exactly ours.

    The `_qkvb` variant runs `F.linear(x, qkv.weight, bias)` without calling `qkv`, so a hook on
    the qkv module would never fire; its biases are made non-zero so they must be read.
    """
    import timm
    import timm.models.eva as eva

    torch.manual_seed(0)
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, depth=2).eval()
    attn = model.blocks[-1].attn
    if attn.q_bias is not None:
        torch.nn.init.normal_(attn.q_bias)
        torch.nn.init.normal_(attn.v_bias)
    seen = []
    real = eva.apply_rot_embed_cat
    monkeypatch.setattr(eva, "apply_rot_embed_cat", lambda t, *a, **k: seen.append(t) or real(t, *a, **k))
    x = torch.randn(1, 3, 48, 80)
    with FeatureExtractor(model, [FeatureSpec("q", -1), FeatureSpec("k", -1)]) as extractor, torch.no_grad():
        got = extractor.extract(x)
    seen.clear()
    with torch.no_grad():
        model.forward_features(x)
    q_ref, k_ref = (t.transpose(1, 2).flatten(2) for t in seen[-2:])  # the last block's q, k patches
    assert model.num_prefix_tokens == 5 and got[FeatureSpec("k", -1)].shape == (1, 3 * 5, 384)
    torch.testing.assert_close(got[FeatureSpec("q", -1)], q_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[FeatureSpec("k", -1)], k_ref, rtol=1e-6, atol=1e-6)


def test_keys_under_bf16_autocast_are_close_to_fp32():
    torch.manual_seed(0)
    model = build_model(get_spec("dinov2"), depth=2).eval()
    x = torch.randn(1, 3, 42, 42)
    with KeyExtractor(model) as extractor, torch.no_grad():
        fp32 = extractor(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = extractor(x)
    assert bf16.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(fp32, bf16.float(), dim=-1).min() > 0.99


def test_without_stopping_the_features_are_the_same_and_the_pass_runs_to_the_end():
    torch.manual_seed(0)
    model = build_model(get_spec("dinov2_reg"), depth=3).eval()
    x = torch.randn(1, 3, 28, 42)
    ran = []
    model.norm.register_forward_hook(lambda *a: ran.append(1))
    specs = [FeatureSpec("k", 1), FeatureSpec("v", -1)]
    with torch.no_grad():
        with FeatureExtractor(model, specs) as stopping:
            early = stopping.extract(x)
        assert ran == []
        with FeatureExtractor(model, specs, stop=False) as through:
            late = through.extract(x)
    assert ran == [1]
    for spec in specs:
        torch.testing.assert_close(early[spec], late[spec], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "hw"), [("dino", (48, 64)), ("dinov2_reg", (56, 42)), ("dinov3", (48, 80)), ("deit3", (32, 48))]
)
def test_cls_attention_is_the_attention_the_block_applies(name: str, hw: tuple[int, int]):
    """Checked against what the block itself computes: the CLS row of attention @ v is the input
    of ``attn.proj`` at token 0 (RoPE and registers included), whatever attention kernel ran."""
    from objdisc.models.features import _cls_attention, _project

    torch.manual_seed(0)
    model = build_model(get_spec(name), depth=2).eval()
    attn = model.blocks[-1].attn
    seen: dict[str, object] = {}
    pre = attn.register_forward_pre_hook(lambda m, a, k: seen.update(x=a[0], rope=k.get("rope")), with_kwargs=True)
    post = attn.proj.register_forward_pre_hook(lambda m, a: seen.update(out=a[0]))
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        model.forward_features(x)
        probs = _cls_attention(attn, seen["x"], seen["rope"])  # (B, T, heads)
        b, t, heads = probs.shape
        v = _project(attn, seen["x"], "v").reshape(b, t, heads, -1)
        mixed = torch.einsum("bth,bthd->bhd", probs, v).reshape(b, -1)
    pre.remove()
    post.remove()
    torch.testing.assert_close(probs.sum(1), torch.ones(b, heads))
    torch.testing.assert_close(mixed, seen["out"][:, 0], rtol=1e-4, atol=1e-5)
    with FeatureExtractor(model, [FeatureSpec("attn", -1)]) as extractor, torch.no_grad():
        patches = extractor(x)
    prefix = model.num_prefix_tokens
    patch = model.patch_embed.patch_size[0]
    assert patches.shape == (b, (hw[0] // patch) * (hw[1] // patch), heads) and t - prefix == patches.shape[1]
    torch.testing.assert_close(patches, probs[:, prefix:])


def test_cls_attention_needs_a_cls_token():
    model = build_model(get_spec("timm_reg_vitm16"), depth=1)
    with pytest.raises(OptionError, match=r"features attn .* need a CLS token"):
        FeatureExtractor(model, [FeatureSpec("attn", -1)])
