"""Devices and precisions: which device a run uses, and the compute context of its forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from objdisc.errors import DeviceError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.

    Under torchrun each process takes the GPU of its ``local_rank``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device} asked for, but torch sees no CUDA GPU")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` on CPU; else checked against :data:`PRECISIONS`."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)} or auto")
    return precision


def compute_context(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """A fresh context for the model's forward pass: autocast to ``precision``, or for ``fp32``
    no autocast and no TF32 on CUDA (whose cuDNN default would use it): fp32 means fp32."""
    if precision == "fp32":
        return no_tf32()
    return torch.autocast(device_type, dtype=PRECISIONS[precision])


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Exact float32 on CUDA: TF32 off for matmuls and cuDNN convolutions, then restored."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


__all__ = ["PRECISIONS", "compute_context", "no_tf32", "resolve_device", "resolve_precision"]
