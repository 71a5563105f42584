"""torchrun / DistributedDataParallel helpers; everything is a no-op in a single process.

``torchrun --nproc_per_node N -m maelab pretrain ...`` sets RANK, LOCAL_RANK and WORLD_SIZE;
we then use NCCL on GPUs (one GPU per process) and gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from maelab.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun job if there is one; returns (info, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if info.local_rank >= gpus:  # else CUDA's "invalid device ordinal", which names neither cause nor fix
            raise ConfigError(
                f"torchrun started local rank {info.local_rank}, but this machine has {gpus} CUDA GPU(s): start "
                f"at most {gpus} process(es) per node (--nproc-per-node {gpus}), or train on CPUs (--device cpu)"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over all processes (returns ``value`` itself in a single process)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def any_process(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True if ``flag`` is true on any process (e.g. a stop signal reached one of them)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
