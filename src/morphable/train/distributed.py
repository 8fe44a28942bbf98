"""Devices and the process group of multi-process training.

Launched with ``torchrun --nproc_per_node N -m morphable.cli train ...``, every process joins the
process group (NCCL on CUDA, gloo on CPU); :func:`morphable.train.fit` then shards the data, wraps the
method's networks in ``DistributedDataParallel`` and lets only rank 0 write files.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch

from morphable.errors import MorphableError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> the local CUDA device when there is one (``LOCAL_RANK`` under torchrun), else CPU."""
    if name in ("auto", ""):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MorphableError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MorphableError(f"device '{name}' requested but CUDA is not available")
    return device


@dataclass
class Distributed:
    """This process's place in the process group (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a group that is already
    initialised is used as it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return Distributed(dist.get_rank(), dist.get_world_size())


def _destroy_process_group() -> None:
    """Leave the group while the interpreter is still whole: a gloo group left to interpreter teardown
    can abort the process (SIGABRT, "terminate called without an active exception") after training has
    finished, which torchrun reports as a failed run."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: dict[str, float], dist_info: Distributed, device: torch.device) -> dict[str, float]:
    """``values`` summed over the ranks (in float64); every rank must pass the same keys."""
    if not dist_info.enabled or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))
