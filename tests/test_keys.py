from __future__ import annotations

import pytest
import torch

from objdisc.backbones import build_model, get_spec
from objdisc.keys import KeyExtractor


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
    calls = {"proj": 0, "mlp": 0, "norm": 0}
    last = model.blocks[-1]
    last.attn.proj.register_forward_hook(lambda *a: calls.__setitem__("proj", calls["proj"] + 1))
    last.mlp.register_forward_hook(lambda *a: calls.__setitem__("mlp", calls["mlp"] + 1))
    model.norm.register_forward_hook(lambda *a: calls.__setitem__("norm", calls["norm"] + 1))
    before = len(last.attn.qkv._forward_pre_hooks)
    extractor = KeyExtractor(model)
    assert len(last.attn.qkv._forward_pre_hooks) == before + 1
    with torch.no_grad():
        for _ in range(3):
            extractor(torch.randn(1, 3, 28, 28))
    assert calls == {"proj": 0, "mlp": 0, "norm": 0}
    assert len(last.attn.qkv._forward_pre_hooks) == before + 1  # not one per image
    extractor.close()
    assert len(last.attn.qkv._forward_pre_hooks) == before


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
