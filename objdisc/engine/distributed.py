"""torchrun support: who am I, which contiguous shard is mine, and waiting for the others.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is started with
NCCL on GPU and gloo on CPU. Shards are exact, contiguous and unpadded (``InferenceSampler``
style): no image is processed twice and none is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    """This process's place: ``rank`` of ``world``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: merges, writes the final files, shows progress."""
        return self.rank == 0


def setup(device_type: str) -> Rank:
    """Join the torchrun process group if there is one; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        # Ranks wait for each other only at the end; a slow shard must not time the others out.
        dist.init_process_group(backend, timeout=timedelta(hours=12))
    return Rank(rank, world, local_rank)


def shard(n: int, rank: Rank) -> range:
    """The contiguous slice of ``n`` items that ``rank`` processes (sizes differ by at most 1)."""
    return range(n * rank.rank // rank.world, n * (rank.rank + 1) // rank.world)


def barrier(rank: Rank) -> None:
    """Wait for every rank (no-op for a single process)."""
    if rank.world > 1:
        dist.barrier()


def teardown(rank: Rank) -> None:
    """Leave the process group."""
    if rank.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
