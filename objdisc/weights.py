"""Weights: resolve (local file or Hugging Face hub cache), hash, convert and load.

A local file is read as ``.safetensors`` or a torch pickle of tensors (``.pth``, ``.pt``,
``.bin``, loaded with ``weights_only=True``: torch's restricted unpickler, which builds
tensors and plain containers and refuses every other global, so a pickled payload never
runs). Training checkpoints also pickle their ``argparse.Namespace``; that one harmless type is
allowed on top (:data:`CHECKPOINT_TYPES`). Both timm's layout and the upstream DINO /
DINOv2 release layout (``register_tokens``, ``mask_token``, SwiGLU ``w12``/``w3``) load:
the latter is converted by timm's own ``checkpoint_filter_fn`` for the model's class.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from objdisc.errors import WeightsError

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")

# Types a released or training checkpoint holds besides tensors and plain containers, allowed
# to the restricted unpickler. DINO's main_dino.py saves {student, teacher, optimizer, epoch,
# args, dino_loss[, fp16_scaler]} with `args` its argparse.Namespace (plain values inside).
# A Namespace only gets attributes set: building one runs no code.
CHECKPOINT_TYPES: tuple[type, ...] = (argparse.Namespace,)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from.

    Attributes:
        path: the file that was loaded.
        source: ``local`` or ``hf-hub:<repo id>``.
        sha256: hex digest of the file's bytes.
    """

    path: str
    source: str
    sha256: str


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, unwrapping training checkpoints.

    DINO training checkpoints (``{"teacher": {"module.backbone.*": ...}}``) and
    ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers give the backbone's tensors.
    """
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif suffix in TORCH_SUFFIXES:
            with torch.serialization.safe_globals(list(CHECKPOINT_TYPES)):
                state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"{path}: unsupported weights extension {suffix!r}; use .safetensors or one of {TORCH_SUFFIXES}"
            )
    except WeightsError:
        raise
    except Exception as exc:  # safetensors and torch raise many types for a bad file
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) or k.startswith("head.") for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def convert_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Apply timm's ``checkpoint_filter_fn`` of the model's module (upstream -> timm layout)."""
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(dict(state), model)
        except Exception as exc:  # a file for another architecture can break the filter's resizing
            # Keep the file's own keys: the strict check below then names what does not fit.
            logger.debug("timm's checkpoint filter failed (%s); comparing the raw keys", exc)
    # objdisc builds models without a classifier head: a head in the file is not an error.
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def load_weights_file(model: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly, converting the upstream layout when needed.

    Raises:
        WeightsError: naming the file and the missing / unexpected / mis-shaped keys.
    """
    raw = read_state_dict(path)
    state = convert_state_dict(raw, model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or mis_shaped:
        raise WeightsError(
            f"{path}: does not fit {type(model).__name__} "
            f"({getattr(model, 'pretrained_cfg', {}).get('architecture', '?')}) in timm's layout nor in the "
            f"upstream DINO/DINOv2 layout; missing keys: {_short(missing)}; unexpected keys: "
            f"{_short(unexpected)}; mis-shaped: {_short(mis_shaped)}"
        )
    model.load_state_dict(state, strict=True)
    _load_rope_periods(model, raw)


def _load_rope_periods(model: torch.nn.Module, raw: dict[str, torch.Tensor]) -> None:
    """Use a DINOv3 release file's RoPE periods instead of timm's recomputed ones.

    The release model keeps ``rope_embed.periods`` as a persistent buffer, so it runs with the
    values stored in the file; timm drops them and recomputes exact float32 periods. The
    released files store them rounded (bfloat16 values, as timm's own port notes), which moves
    every rotary angle slightly: the release code's features are made with the stored ones.
    """
    stored = raw.get("rope_embed.periods")
    rope = getattr(model, "rope", None)
    current = getattr(rope, "periods", None)
    if stored is None or current is None:
        return
    if stored.shape != current.shape:
        raise WeightsError(f"rope_embed.periods {tuple(stored.shape)} != the model's {tuple(current.shape)}")
    with torch.no_grad():
        current.copy_(stored.to(current.dtype))


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def resolve_hub_weights(
    pretrained_cfg: Any, endpoint: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str]:
    """Path of timm's pretrained weights in the Hugging Face hub cache, downloading on first use.

    Follows timm: ``model.safetensors`` from the config's ``hf_hub_id``, falling back to
    ``pytorch_model.bin``. The endpoint is ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE=1`` uses the
    cache only, as for any Hugging Face download.

    Args:
        pretrained_cfg: timm's ``PretrainedCfg`` of the model.
        endpoint: hub URL; ``None``: ``HF_ENDPOINT`` or huggingface.co.
        cache_dir: hub cache; ``None``: ``HF_HUB_CACHE`` or ``~/.cache/huggingface/hub``.

    Returns:
        ``(path, "hf-hub:<repo id>")``.
    """
    import timm
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id = pretrained_cfg.hf_hub_id
    if not repo_id:
        raise WeightsError(f"timm has no hub weights for {pretrained_cfg.architecture}; pass --weights PATH")
    kwargs: dict[str, Any] = {
        "library_name": "timm",
        "library_version": timm.__version__,
        "endpoint": endpoint,
        "cache_dir": cache_dir,
    }
    try:
        path = hf_hub_download(repo_id, "model.safetensors", **kwargs)
    except EntryNotFoundError as first:
        try:
            path = hf_hub_download(repo_id, "pytorch_model.bin", **kwargs)
        except EntryNotFoundError:
            if isinstance(first, LocalEntryNotFoundError):
                raise WeightsError(
                    f"weights for {repo_id} are not in the Hugging Face cache and the hub cannot be "
                    f"reached ({first}); connect once to download them, or pass --weights PATH with a "
                    f"local file (upstream release: {pretrained_cfg.url})"
                ) from first
            raise WeightsError(f"hub repo {repo_id} has neither model.safetensors nor pytorch_model.bin") from first
    return Path(path), f"hf-hub:{repo_id}"
