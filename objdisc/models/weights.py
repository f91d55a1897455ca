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
import math
import os
import pickle
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from objdisc.errors import WeightsError
from objdisc.models.transformers_layout import hf_to_release, is_hf_layout

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin")

# Types a released or training checkpoint holds besides tensors and plain containers, allowed
# to the restricted unpickler. DINO's main_dino.py saves {student, teacher, optimizer, epoch,
# args, dino_loss[, fp16_scaler]} with `args` its argparse.Namespace (plain values inside).
# A Namespace only gets attributes set: building one runs no code.
CHECKPOINT_TYPES: tuple[type, ...] = (argparse.Namespace,)

# What timm loads from a hub repo, in order.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


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
    ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers give the backbone's tensors; a
    transformers ``Dinov2Model`` state dict is renamed to the DINOv2 release layout
    (:mod:`objdisc.models.transformers_layout`).
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
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a pickle of objects: a damaged or foreign file
            raise WeightsError(
                f"{path}: not a weights file objdisc can read (torch cannot unpickle it: {_first_line(exc)}); "
                "give a .safetensors file or a .pth state dict of tensors"
            ) from exc
        # torch's restricted unpickler met a class: a pickled model or payload
        what = _pickled_global(str(exc))
        raise WeightsError(
            f"{path}: holds pickled Python objects, not a state dict of tensors ({what}); objdisc never "
            "unpickles code. If it is a whole model saved with torch.save(model), load it where it was made and "
            "save its weights instead: torch.save(model.state_dict(), 'weights.pth')"
        ) from exc
    except Exception as exc:  # safetensors and torch raise many types for a bad file
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {_first_line(exc)})") from exc
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) or k.startswith("head.") for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if is_hf_layout(state):  # transformers' Dinov2Model: to the release layout timm converts from
        state = hf_to_release(state)
    return state


def _pickled_global(message: str) -> str:
    """The class a refused pickle names (torch says ``Unsupported global: GLOBAL module.Class``)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f"it pickles {found.group(1)}" if found else "it pickles a Python class"


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


def load_weights_file(model: torch.nn.Module, path: Path, resample: bool = False) -> None:
    """Load ``path`` into ``model`` strictly, converting the upstream layout when needed.

    Args:
        model: the built model.
        path: the weights file.
        resample: let timm's filter resample a file of another patch size or position table
            (refused otherwise: the features would silently be those of another model).

    Raises:
        WeightsError: naming the file and the missing / unexpected / mis-shaped keys, non-finite
            values, or another patch size / position grid (with the backbones that fit).
    """
    raw = read_state_dict(path)
    check_finite(raw, path)
    if not resample:
        check_geometry(raw, model, path)
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
            f"upstream DINO/DINOv2/DINOv3 or transformers DINOv2 layout; missing keys: {_short(missing)}; "
            f"unexpected keys: {_short(unexpected)}; mis-shaped: {_short(mis_shaped)}"
        )
    model.load_state_dict(state, strict=True)
    _load_rope_periods(model, raw)


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a state dict holding NaN or infinite values (every box would be the first patch).

    Raises:
        WeightsError: naming the file and the first tensors that hold them.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(
            f"{path}: {len(bad)} tensors hold NaN or infinite values ({_short(bad, 4)}); the file is damaged "
            "or was saved from a diverged training: use another checkpoint"
        )


def _grid_side(positions: int) -> int | None:
    """The side of the square patch grid of a position table of ``positions`` rows (prefix rows
    of CLS and up to 8 registers allowed), or ``None``."""
    for prefix in range(0, 9):
        side = math.isqrt(max(positions - prefix, 0))
        if side > 0 and side * side == positions - prefix:
            return side
    return None


def file_geometry(state: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(patch size, position-grid side)`` of a state dict in timm's or a release layout (``None``
    where the file has no such tensor, e.g. RoPE models have no position table)."""
    kernel = state.get("patch_embed.proj.weight")
    patch = int(kernel.shape[-1]) if kernel is not None and kernel.ndim == 4 else None
    table = state.get("pos_embed")
    side = _grid_side(int(table.shape[-2])) if table is not None and table.ndim == 3 else None
    return patch, side


def model_geometry(model: torch.nn.Module) -> tuple[int, int | None]:
    """``(patch size, position-grid side)`` of a built timm ViT."""
    patch = int(model.patch_embed.patch_size[0])
    table = getattr(model, "pos_embed", None)
    side = int(model.patch_embed.grid_size[0]) if table is not None else None
    return patch, side


def check_geometry(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """Refuse a file of another patch size or position grid than the model's: timm's filter would
    resample it silently (a ViT-S/8 file into a ViT-S/16, a 384-px table into a 224-px model).

    Raises:
        WeightsError: naming both geometries, the table backbones that fit the file, and
            ``--resample-weights`` for a resampling asked for on purpose.
    """
    file_patch, file_side = file_geometry(state)
    patch, side = model_geometry(model)
    if (file_patch is None or file_patch == patch) and (file_side is None or side is None or file_side == side):
        return
    fits = fitting_backbones(file_patch, file_side, state)
    hint = f"use -b {' or -b '.join(fits)}" if fits else "use the backbone it was trained as"
    raise WeightsError(
        f"{path}: weights of a patch-{file_patch} model with a {file_side}x{file_side} position grid, but the "
        f"backbone has patch {patch} and a {side}x{side} grid; {hint} (or pass --resample-weights to let timm "
        "resample the patch kernel and position table on purpose)"
    )


def fitting_backbones(patch: int | None, side: int | None, state: dict[str, torch.Tensor]) -> list[str]:
    """Table backbones whose patch size, position grid and width are the file's (built on the meta device)."""
    from objdisc.models.specs import BACKBONES

    kernel = state.get("patch_embed.proj.weight")
    width = int(kernel.shape[0]) if kernel is not None else None
    tokens = state.get("reg_token", state.get("register_tokens"))  # timm's name, the DINOv2 release's
    registers = int(tokens.shape[1]) if tokens is not None and tokens.ndim == 3 else 0
    out = []
    for spec in BACKBONES.values():
        if (patch is not None and spec.patch_size != patch) or spec.num_registers != registers:
            continue
        import timm

        with torch.device("meta"):
            model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
        if width is not None and int(model.patch_embed.proj.weight.shape[0]) != width:
            continue
        if side is not None and model_geometry(model)[1] not in (None, side):
            continue
        out.append(spec.name)
    return out


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


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line: its first non-empty line (torch's run to a page)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


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
    ``pytorch_model.bin``. A file already in the cache is used without asking the hub (the
    run records its sha256). Otherwise the hub host is probed first: with no network, or with
    ``HF_HUB_OFFLINE=1``, the error comes within seconds instead of after the hub client's
    retries. The endpoint is ``HF_ENDPOINT``, as for any Hugging Face download.

    Args:
        pretrained_cfg: timm's ``PretrainedCfg`` of the model.
        endpoint: hub URL; ``None``: ``HF_ENDPOINT`` or huggingface.co.
        cache_dir: hub cache; ``None``: ``HF_HUB_CACHE`` or ``~/.cache/huggingface/hub``.

    Returns:
        ``(path, "hf-hub:<repo id>")``.

    Raises:
        WeightsError: not cached and the hub cannot be reached (naming ``--weights``, the cache
            and the upstream URL), or the hub has no weights file for the model.
    """
    import timm
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id = pretrained_cfg.hf_hub_id
    if not repo_id:
        raise WeightsError(f"timm has no hub weights for {pretrained_cfg.architecture}; pass --weights PATH")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    cache = Path(cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()
    kwargs: dict[str, Any] = {
        "library_name": "timm",
        "library_version": timm.__version__,
        "endpoint": endpoint,
        "cache_dir": cache,
    }
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True, **kwargs)), f"hf-hub:{repo_id}"
        except LocalEntryNotFoundError:
            continue

    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else unreachable(endpoint)
    if why is not None:
        raise WeightsError(
            f"weights for {repo_id} are not in the Hugging Face cache ({cache}) and the hub cannot be used ({why}); "
            f"pass --weights FILE with a downloaded checkpoint (upstream release: {pretrained_cfg.url or 'none'}; "
            f"hub: {endpoint}/{repo_id}), or run once with network to fill the cache"
        )
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename, **kwargs)), f"hf-hub:{repo_id}"
        except EntryNotFoundError:
            continue
        except Exception as exc:  # the hub client raises many types (HTTP, connection, timeout)
            raise WeightsError(
                f"could not download {filename} of {repo_id} from {endpoint} ({type(exc).__name__}: {exc}); "
                f"pass --weights FILE with a downloaded checkpoint (upstream release: {pretrained_cfg.url or 'none'})"
            ) from exc
    raise WeightsError(f"hub repo {repo_id} has neither {' nor '.join(HUB_FILES)}")


def unreachable(url: str, timeout_s: float = 5.0) -> str | None:
    """Why ``url``'s host (or the proxy that serves it) cannot be connected to, or ``None`` if it can.

    One TCP connection, at most ``timeout_s`` seconds: the hub client would instead retry
    every request with back-off for about a minute.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname, proxied.port or 80
    if not host:
        return f"no host in {url!r}"
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    return None
