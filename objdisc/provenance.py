"""What produced a run: versions, device, backbone, weights."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import objdisc

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
    return f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"


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
        "objdisc": objdisc.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": sys.version.split()[0],
        "cuda": str(torch.version.cuda),
        "platform": platform.platform(),
    }


def producer(backbone: Any, device: torch.device, precision: str) -> dict[str, Any]:
    """The ``producer`` block every output file carries.

    Args:
        backbone: an :class:`objdisc.backbones.Backbone`.
        device: where the model ran.
        precision: ``fp32``, ``bf16`` or ``fp16``.
    """
    spec = backbone.spec
    return {
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        "patch_size": backbone.patch_size,
        "num_prefix_tokens": backbone.num_prefix_tokens,
        "num_registers": spec.num_registers,
        "weights": {
            "source": backbone.weights.source,
            "path": backbone.weights.path,
            "sha256": backbone.weights.sha256,
        },
        "versions": versions(),
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
    }
