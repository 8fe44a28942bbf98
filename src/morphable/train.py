"""One training loop for every trainable model.

A method plugs in through :class:`TrainableMethod`: it owns its network(s), optimisers and
per-epoch schedulers and does its own backward and optimiser steps in ``training_step`` (so
alternating GAN updates or multi-stage schedules stay inside the method). The loop owns devices,
DDP, data order, progress, logging, validation, checkpoints and resume.

Determinism: the order of the training data in epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``, so a run resumed after epoch ``e`` sees exactly the batches that an
uninterrupted run sees, and (with the weights and optimiser states restored) ends with the same
weights.

Checkpoints are safetensors files: the tensors of the method's state (weights, optimiser moments)
under flattened keys, and the non-tensor structure (step counts, hyper-parameters, epoch) as JSON
in the file's metadata. Nothing is ever unpickled.

Multi-GPU / multi-process: launched with ``torchrun --nproc_per_node N -m morphable.cli train ...`` the loop
initialises the process group (NCCL on CUDA, gloo on CPU), shards each epoch with a
``DistributedSampler``, wraps ``method.network`` in ``DistributedDataParallel`` and lets only rank 0
write files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from morphable.errors import MorphableError, input_error
from morphable.io import atomic_path

LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "model.safetensors"
LOG_FILE = "log.csv"


class TrainableMethod(Protocol):
    """What a method gives the loop.

    ``network`` is the module whose parameters are synchronised across processes. The loop sets
    ``forward_network`` to ``network`` or to its DDP wrapper; methods call ``forward_network`` in
    ``training_step``.
    """

    network: nn.Module
    forward_network: nn.Module

    def optimizers(self) -> list[torch.optim.Optimizer]: ...

    def schedulers(self) -> list[Any]: ...

    def training_step(self, batch: Any, step: int) -> dict[str, float]: ...

    def validation_step(self, batch: Any) -> dict[str, float]: ...

    def extra_state(self) -> dict[str, torch.Tensor]: ...

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    seed: int = 0
    val_key: str = "loss"
    num_workers: int = 0
    progress: bool = True


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


# --------------------------------------------------------------------------- distributed


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def _all_reduce_mean(values: dict[str, float], dist_info: Distributed, device: torch.device) -> dict[str, float]:
    if not dist_info.enabled or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / dist_info.world_size for k, v in zip(keys, t.tolist())}


# --------------------------------------------------------------------------- state (de)serialisation


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``, collecting it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten_state(v, tensors) for v in obj["__list__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_checkpoint(path: Path, method: TrainableMethod, epoch: int, extra: dict[str, Any],
                    metadata: dict[str, str] | None = None) -> None:
    """Write weights, optimiser and scheduler states, epoch and ``extra`` (JSON) to one safetensors file;
    ``metadata`` (strings, e.g. the template's vertex count) is stored beside them."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = {
        "network": flatten_state(method.network.state_dict(), "network", tensors),
        "method_extra": flatten_state(method.extra_state(), "method_extra", tensors),
        "optimizers": flatten_state([o.state_dict() for o in method.optimizers()], "optimizers", tensors),
        "schedulers": flatten_state([s.state_dict() for s in method.schedulers()], "schedulers", tensors),
    }
    header = {**(metadata or {}), "structure": json.dumps(structure), "epoch": str(epoch),
              "extra": json.dumps(extra)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checkpoint(path: Path, method: TrainableMethod, device: torch.device) -> tuple[int, dict]:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns ``(epoch, extra)``."""
    from morphable.io import load_weights

    tensors, metadata = load_weights(path, device=str(device))
    if "structure" not in metadata:
        raise input_error(path, "not a training checkpoint of morphable")
    structure = json.loads(metadata["structure"])
    try:
        method.network.load_state_dict(unflatten_state(structure["network"], tensors))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise input_error(path, f"checkpoint does not match the model ({first[1].strip() if len(first) > 1 else first[0]})") from None
    method.load_extra_state(unflatten_state(structure["method_extra"], tensors))
    for opt, state in zip(method.optimizers(), unflatten_state(structure["optimizers"], tensors)):
        opt.load_state_dict(state)
    for sched, state in zip(method.schedulers(), unflatten_state(structure["schedulers"], tensors)):
        sched.load_state_dict(state)
    return int(metadata["epoch"]), json.loads(metadata.get("extra", "{}"))


# --------------------------------------------------------------------------- the loop


def _epoch_loader(dataset, config: LoopConfig, epoch: int, dist_info: Distributed,
                  collate: Callable | None) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    if dist_info.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, dist_info.world_size, dist_info.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(dataset, config.batch_size, sampler=sampler, collate_fn=collate,
                                           num_workers=config.num_workers)
    return torch.utils.data.DataLoader(dataset, config.batch_size, shuffle=True, generator=generator,
                                       collate_fn=collate, num_workers=config.num_workers)


def _validate(method: TrainableMethod, val_data, batch_size: int, collate: Callable | None) -> dict[str, float]:
    if val_data is None or len(val_data) == 0:
        return {}
    totals: dict[str, float] = {}
    count = 0
    loader = torch.utils.data.DataLoader(val_data, batch_size, shuffle=False, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            n = len(batch) if isinstance(batch, torch.Tensor) else batch_size
            for k, v in method.validation_step(batch).items():
                totals[k] = totals.get(k, 0.0) + v * n
            count += n
    return {k: v / count for k, v in totals.items()}


def fit(method: TrainableMethod, train_data, val_data, config: LoopConfig, run_dir: Path,
        device: torch.device, resume: bool = False, collate: Callable | None = None,
        dist_info: Distributed | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``method`` for ``config.epochs`` epochs; returns a summary (best epoch and losses, time).

    ``metadata`` is written into every checkpoint. Files in ``run_dir`` (rank 0 only): ``last.safetensors`` after every epoch (for ``resume``),
    ``model.safetensors`` with the weights of the best validation epoch, ``log.csv`` with one row per
    epoch (train losses, validation losses, learning rate, seconds).
    """
    dist_info = dist_info or Distributed()
    method.forward_network = method.network
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        method.forward_network = DistributedDataParallel(
            method.network, device_ids=[device.index] if device.type == "cuda" else None)
    start_epoch, best = 0, {"epoch": -1, "value": math.inf}
    if resume:
        last = run_dir / LAST_CHECKPOINT
        if not last.exists():
            raise input_error(run_dir, f"nothing to resume (no {LAST_CHECKPOINT})")
        start_epoch, extra = load_checkpoint(last, method, device)
        best = extra.get("best", best)
        if isinstance(best.get("value"), str):
            best["value"] = float(best["value"])
    log_path = run_dir / LOG_FILE
    started = time.perf_counter()
    step = start_epoch * math.ceil(len(train_data) / config.batch_size)
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        sums: dict[str, float] = {}
        batches = 0
        if hasattr(train_data, "set_epoch"):  # per-epoch deterministic draws (e.g. SdfDataset)
            train_data.set_epoch(epoch)
        loader = _epoch_loader(train_data, config, epoch, dist_info, collate)
        bar = None
        if config.progress and dist_info.is_main:
            from tqdm import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        method.network.train()
        for batch in loader:
            losses = method.training_step(batch, step)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            batches += 1
            step += 1
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
                bar.update()
        if bar is not None:
            bar.close()
        train_losses = _all_reduce_mean({k: v / max(batches, 1) for k, v in sums.items()}, dist_info, device)
        if not all(math.isfinite(v) for v in train_losses.values()):
            raise MorphableError(f"{run_dir}: training diverged in epoch {epoch + 1} (non-finite loss "
                                 f"{train_losses}); lower the learning rate (--lr)")
        method.network.eval()
        val_losses = _validate(method, val_data, config.batch_size, collate)
        for sched in method.schedulers():
            sched.step()
        lr = method.optimizers()[0].param_groups[0]["lr"]
        value = val_losses.get(config.val_key, train_losses.get(config.val_key, math.inf))
        if dist_info.is_main:
            if value < best["value"]:
                best = {"epoch": epoch + 1, "value": value}
                save_checkpoint(run_dir / BEST_CHECKPOINT, method, epoch + 1, {"best": best}, metadata)
            save_checkpoint(run_dir / LAST_CHECKPOINT, method, epoch + 1, {"best": best}, metadata)
            _append_log(log_path, epoch + 1, train_losses, val_losses, lr, time.perf_counter() - epoch_start)
            if config.progress:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in {**train_losses,
                                  **{f"val_{k}": v for k, v in val_losses.items()}}.items())
                print(f"epoch {epoch + 1}/{config.epochs}: {shown} ({time.perf_counter() - epoch_start:.1f} s)",
                      flush=True)
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return {"best_epoch": best["epoch"], f"best_val_{config.val_key}": best["value"],
            "seconds": round(time.perf_counter() - started, 2), "epochs": config.epochs}


def _append_log(path: Path, epoch: int, train: dict[str, float], val: dict[str, float], lr: float,
                seconds: float) -> None:
    row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
           **{f"val_{k}": v for k, v in val.items()}, "lr": lr, "seconds": round(seconds, 3)}
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
