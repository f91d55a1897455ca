"""DINOv2 checkpoints in the Hugging Face transformers layout (``Dinov2Model`` and
``Dinov2WithRegistersModel``, as ``save_pretrained`` writes them), converted to the DINOv2
release layout, which timm's own ``checkpoint_filter_fn`` then turns into timm's.

A ``save_pretrained`` folder holds ``config.json`` and ``model.safetensors`` (or
``pytorch_model.bin``); either the folder or the file can be given to ``--weights``. The
transformers names and their release names:

=====================================================  ======================================
transformers                                           DINOv2 release
=====================================================  ======================================
``embeddings.cls_token`` / ``mask_token``              ``cls_token`` / ``mask_token``
``embeddings.register_tokens``                         ``register_tokens``
``embeddings.position_embeddings``                     ``pos_embed``
``embeddings.patch_embeddings.projection.*``           ``patch_embed.proj.*``
``encoder.layer.N.norm1.*`` / ``norm2.*``              ``blocks.N.norm1.*`` / ``norm2.*``
``encoder.layer.N.attention.attention.query|key|value``  ``blocks.N.attn.qkv`` (q, k, v stacked)
``encoder.layer.N.attention.output.dense.*``           ``blocks.N.attn.proj.*``
``encoder.layer.N.layer_scale1|2.lambda1``             ``blocks.N.ls1|2.gamma``
``encoder.layer.N.mlp.fc1|fc2.*``                      ``blocks.N.mlp.fc1|fc2.*``
``encoder.layer.N.mlp.weights_in|weights_out.*``       ``blocks.N.mlp.w12|w3.*`` (ViT-g SwiGLU)
``layernorm.*``                                        ``norm.*``
=====================================================  ======================================

transformers 5 names the attention projections ``attention.q_proj|k_proj|v_proj|o_proj`` in
memory (its ``save_pretrained`` still writes the names above); both are read.

A ``Dinov2For...`` checkpoint's ``dinov2.`` prefix is dropped, and its task head with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from objdisc.errors import WeightsError

if TYPE_CHECKING:
    import torch

# What a save_pretrained folder holds, in the order transformers prefers them.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
MARKER = "embeddings.patch_embeddings.projection.weight"

_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.mask_token", "mask_token"),
    (r"embeddings\.register_tokens", "register_tokens"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"encoder\.layer\.(\d+)\.(norm[12]|mlp\.fc[12])\.", r"blocks.\1.\2."),
    (r"layernorm\.", "norm."),
]
# transformers 5 keeps these names in memory (a torch.save of its state_dict has them);
# save_pretrained writes the classic ones above.
_V5_NAMES = [
    (re.compile(r"(encoder\.layer\.\d+\.attention)\.q_proj\."), r"\1.attention.query."),
    (re.compile(r"(encoder\.layer\.\d+\.attention)\.k_proj\."), r"\1.attention.key."),
    (re.compile(r"(encoder\.layer\.\d+\.attention)\.v_proj\."), r"\1.attention.value."),
    (re.compile(r"(encoder\.layer\.\d+\.attention)\.o_proj\."), r"\1.output.dense."),
]
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")


def weights_file_in(folder: Path) -> Path:
    """The weights file of a ``save_pretrained`` folder (``model.safetensors`` first).

    Raises:
        WeightsError: the folder holds neither file (sharded checkpoints included: their
            index is named, and they are not read).
    """
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    sharded = sorted(p.name for p in folder.glob("*.index.json"))
    hint = f" (a sharded checkpoint, {sharded[0]}: save it unsharded)" if sharded else ""
    raise WeightsError(f"{folder}: a folder with neither {' nor '.join(HF_WEIGHT_FILES)}{hint}")


def check_config(folder: Path) -> None:
    """Refuse a ``save_pretrained`` folder whose ``config.json`` names a model of another kind."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(f"{path}: unreadable config ({exc})") from None
    if model_type is not None and model_type not in HF_MODEL_TYPES:
        raise WeightsError(
            f"{path}: a transformers {model_type!r} model; objdisc reads the transformers layout of "
            f"{' and '.join(HF_MODEL_TYPES)} only"
        )


def is_hf_layout(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a transformers ``Dinov2Model`` state dict (prefixed or not)."""
    return MARKER in state or f"dinov2.{MARKER}" in state


def hf_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers DINOv2 state dict to the DINOv2 release layout.

    Returns:
        The release-layout state dict; keys it does not know are kept as they are, so that the
        strict load after it names them.
    """
    import torch

    if f"dinov2.{MARKER}" in state:  # a Dinov2For... model: its backbone, without the task head
        state = {k.removeprefix("dinov2."): v for k, v in state.items() if k.startswith("dinov2.")}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for pattern, replacement in _V5_NAMES:
            key = pattern.sub(replacement, key)
        match = _QKV.fullmatch(key)
        if match:
            block, which, kind = match.groups()
            qkv.setdefault((block, kind), {})[which] = value
            continue
        for pattern, replacement in _RENAMES:
            renamed, n = re.subn(f"^{pattern}", replacement, key)
            if n:
                key = renamed
                break
        out[key] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise WeightsError(f"layer {block}: attention {kind} has only {sorted(parts)} of query, key and value")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


__all__ = [
    "HF_MODEL_TYPES",
    "HF_WEIGHT_FILES",
    "check_config",
    "hf_to_release",
    "is_hf_layout",
    "weights_file_in",
]
