"""Multi-process (torchrun) support: detect WORLD_SIZE/RANK, set up and tear down the group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """``world_size`` processes, this one ``rank`` (``local_rank`` on its node)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Read torchrun's environment variables (absent -> a single process)."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(ws, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU. No-op for one process."""
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=info.rank, world_size=info.world_size)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def mean_across(value: float, info: DistInfo, device: torch.device | None = None) -> float:
    """Mean of a scalar over all processes (the value itself for one process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
