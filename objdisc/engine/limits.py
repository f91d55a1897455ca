"""Batch and memory limits shared by the engine and the CLI (no torch import: the CLI's
``--help`` stays fast)."""

from __future__ import annotations

# Patches per forward pass. On the 2-core CPU this was measured on, images/s peaked near 2,000
# patches per batch (batch 1 at 1,610 patches/image, 2 at 972, 8 at 320); on a GPU larger
# batches pay, and this default is a generous guess that was not tuned on one.
DEFAULT_BATCH_TOKENS = {"cpu": 2_048, "cuda": 65_536}

# LOST's affinity for N patches is N x N float32: 16,384 patches is 1 GiB.
DEFAULT_MAX_PATCHES = 16_384


def batch_tokens_for(device_type: str) -> int:
    """Default patches per forward pass on a device type (the CUDA figure for other accelerators)."""
    return DEFAULT_BATCH_TOKENS.get(device_type, DEFAULT_BATCH_TOKENS["cuda"])
