"""What produced a run: versions, device, backbone, weights."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from objdisc.version import __version__

if TYPE_CHECKING:
    import torch


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    """Human name of a device: the GPU model, or the CPU model and core count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {_cpu_model()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """objdisc, torch, timm, Python and CUDA versions."""
    import timm
    import torch

    return {
        "objdisc": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": sys.version.split()[0],
        "cuda": str(torch.version.cuda),
        "platform": platform.platform(),
    }


def producer(spec: Any, weights: Any, device: torch.device, precision: str) -> dict[str, Any]:
    """The ``producer`` block every output file carries.

    Args:
        spec: the :class:`objdisc.models.backbones.BackboneSpec`.
        weights: the :class:`objdisc.models.weights.WeightsInfo` (source, path, sha256).
        device: where the model runs.
        precision: ``fp32``, ``bf16`` or ``fp16``.
    """
    return {
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        "pos_embed": spec.pos_embed,
        "patch_size": spec.patch_size,
        "num_prefix_tokens": spec.num_prefix_tokens,
        "num_registers": spec.num_registers,
        "weights": {"source": weights.source, "path": weights.path, "sha256": weights.sha256},
        "versions": versions(),
        "device": device.type,
        "device_name": device_name(device),
        "precision": precision,
    }
