"""Run a function on W CPU processes in one gloo process group (``torch.multiprocessing.spawn``).

The group meets in a file store in a fresh temporary folder, so no network port is involved and runs of
several test sessions on one machine cannot collide. ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` are set as
torchrun sets them, and :func:`morphable.train.init_distributed` uses the already initialised group.
``fn(rank, *args)`` must be a module-level function (it is pickled into the workers).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable


def _worker(rank: int, world_size: int, store: str, fn: Callable[..., Any], args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_gloo(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """``fn(rank, *args)`` on ``world_size`` processes; raises if one of them fails."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world_size, os.path.join(tmp, "store"), fn, args), nprocs=world_size, join=True)
