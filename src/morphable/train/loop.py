"""One training loop for every trainable model (:class:`~morphable.train.protocol.TrainableMethod`).

Per epoch ``e`` (0-based) the loop

1. seeds torch's global random generators (CPU and the training CUDA device) with ``(seed, e, rank)``
   and calls ``method.on_epoch_start(e)``;
2. runs ``training_step`` on every batch of the training data (in an order drawn from a generator seeded
   with ``(seed, e)``; data with ``set_epoch`` is told the epoch first), stepping the per-step schedulers
   after each;
3. runs ``validation_step`` on the validation data, if any;
4. steps the per-epoch schedulers and, on rank 0, writes a row of ``log.csv``: ``epoch``,
   ``train_<loss>``, ``val_<loss>``, ``lr_<optimiser>`` (after the epoch's scheduler steps), ``stage`` and
   ``seconds`` (the same scalars, ``seconds`` aside, go to ``tensorboard/`` when ``config.tensorboard``),
   then ``model.safetensors`` (the checkpoint of the epoch that ``method.selection`` picks) and
   ``last.safetensors`` (everything for a resume). A column that first appears in a later epoch (a new
   stage's loss) is added to the file, empty in earlier rows.

Killed at any moment: every file is written atomically (``log.csv`` too: the whole file, renamed into
place), and the row is written before the checkpoints, so ``log.csv`` holds at least the rows of
``last.safetensors``' epochs; a resume drops the rows after the checkpoint's epoch (and TensorBoard
purges its events after it), so the resumed run logs every epoch once.

Determinism: data order, per-epoch random draws and the global step count are functions of the seed and
the epoch, and a checkpoint restores weights, optimiser and scheduler states, the method's extra state
and stage, so a run resumed after epoch ``e`` ends with the weights of an uninterrupted run, bit for bit.
The random generators are seeded inside ``torch.random.fork_rng``, so training leaves the caller's
random state as it was.

Multi-process (:mod:`morphable.train.distributed`): each epoch is sharded with a ``DistributedSampler``;
every network with trainable parameters is wrapped in ``DistributedDataParallel`` in
``method.forward_networks``; the validation data is split into ``rank::world_size`` shards and its sums
are reduced over the ranks (the mean over all validation samples); training losses are averaged over the
ranks; only rank 0 writes files. Each rank draws its own random numbers (the seed includes the rank).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from morphable.errors import MorphableError, input_error
from morphable.io import atomic_path
from morphable.runs import LOG_FILE
from morphable.train.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint, save_checkpoint
from morphable.train.distributed import Distributed, all_reduce_sum
from morphable.train.protocol import Selection, TrainableMethod

COLUMN_GROUPS = ("epoch", "train_", "val_", "lr_", "stage", "seconds")
TENSORBOARD_FOLDER = "tensorboard"


@dataclass
class LoopConfig:
    """``epochs`` in total (a resume continues up to it), ``batch_size`` per process, the ``seed`` of data
    order and random draws, whether to show ``progress`` and to write ``tensorboard`` events."""

    epochs: int
    batch_size: int
    seed: int = 0
    progress: bool = True
    tensorboard: bool = False


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of torch's global generators in ``epoch`` on ``rank`` (a 63-bit hash of the three)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def batch_length(batch: Any) -> int:
    """Samples in a collated batch: a tensor, or a dict / list / tuple of them (its first entry's length)."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, Mapping):
        return batch_length(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return batch_length(batch[0])
    raise TypeError(f"cannot count the samples of a {type(batch).__name__} batch")


def _epoch_loader(dataset, config: LoopConfig, epoch: int, dist_info: Distributed) -> torch.utils.data.DataLoader:
    if dist_info.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, dist_info.world_size, dist_info.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(dataset, config.batch_size, sampler=sampler)
    generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    return torch.utils.data.DataLoader(dataset, config.batch_size, shuffle=True, generator=generator)


def _wrap(networks: dict[str, nn.Module], device: torch.device, dist_info: Distributed) -> dict[str, nn.Module]:
    """``networks`` with every one that has trainable parameters in DDP (when distributed)."""
    if not dist_info.enabled:
        return dict(networks)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return {name: DistributedDataParallel(net, device_ids=ids) if any(p.requires_grad for p in net.parameters())
            else net for name, net in networks.items()}


def _set_mode(method: TrainableMethod, training: bool) -> None:
    for net in method.networks.values():
        net.train(training)


def _train_epoch(method: TrainableMethod, loader, step: int, bar) -> tuple[dict[str, float], int]:
    """Mean training losses over the epoch's batches and the step count after it."""
    sums: dict[str, float] = {}
    batches = 0
    per_step = [spec.scheduler for spec in method.schedulers().values() if spec.interval == "step"]
    _set_mode(method, True)
    for batch in loader:
        losses = method.training_step(batch, step)
        for scheduler in per_step:
            scheduler.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        batches += 1
        step += 1
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
            bar.update()
    return {k: v / max(batches, 1) for k, v in sums.items()}, step


def _validate(method: TrainableMethod, val_data, batch_size: int, dist_info: Distributed,
              device: torch.device) -> dict[str, float]:
    """Per-sample mean of each validation loss over all of ``val_data`` (batch means weighted by batch
    length), computed on the unwrapped networks; shards of ``rank::world_size`` under DDP."""
    if val_data is None or len(val_data) == 0:
        return {}
    shard = val_data
    if dist_info.enabled and len(val_data) >= dist_info.world_size:
        shard = torch.utils.data.Subset(val_data, range(dist_info.rank, len(val_data), dist_info.world_size))
    sums: dict[str, float] = {}
    wrapped, method.forward_networks = method.forward_networks, dict(method.networks)
    _set_mode(method, False)
    try:
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(shard, batch_size, shuffle=False):
                n = batch_length(batch)
                for k, v in method.validation_step(batch).items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
    finally:
        method.forward_networks = wrapped
    if shard is not val_data:  # the shards partition the validation data
        sums = all_reduce_sum(sums, dist_info, device)
    return {k: v / len(val_data) for k, v in sums.items()}


def _learning_rates(method: TrainableMethod) -> dict[str, float]:
    rates = {}
    for name, opt in method.optimizers().items():
        for g, group in enumerate(opt.param_groups):
            rates[f"lr_{name}" if g == 0 else f"lr_{name}_{g}"] = float(group["lr"])
    return rates


def _improves(selection: Selection, value: float | None, best: float | None) -> bool:
    if selection.mode == "last" or best is None:
        return True
    return value < best if selection.mode == "min" else value > best


def _selection_value(selection: Selection, train: dict[str, float], val: dict[str, float]) -> float | None:
    if selection.mode == "last":
        return None
    source, name = (val, "validation") if val else (train, "training")
    if selection.key not in source:
        raise MorphableError(f"the selection metric '{selection.key}' is not one of the {name} losses "
                             f"({', '.join(sorted(source))})")
    return source[selection.key]


def summary_writer_class() -> type:
    """torch's TensorBoard ``SummaryWriter``; one line naming the extra when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MorphableError("--tensorboard needs the tensorboard package: pip install 'morphable[tensorboard]'") from None
    return SummaryWriter


def _tensorboard(run_dir: Path, start_epoch: int):
    """A TensorBoard writer of ``run_dir / "tensorboard"`` whose events after ``start_epoch`` (a killed
    run's epochs that are trained again) are purged."""
    return summary_writer_class()(str(run_dir / TENSORBOARD_FOLDER), purge_step=start_epoch + 1 if start_epoch else None)


def fit(method: TrainableMethod, train_data, val_data, config: LoopConfig, run_dir: Path,
        device: torch.device, resume: bool = False, dist_info: Distributed | None = None,
        metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``method`` up to ``config.epochs`` epochs (see the module docstring).

    ``train_data`` / ``val_data``: map-style datasets whose items collate with torch's default collate
    (tensors, or dicts of tensors); ``val_data`` may be ``None``. ``resume`` continues from
    ``run_dir / last.safetensors``. ``metadata`` (strings) is written into every checkpoint.

    Returns ``best_epoch`` (1-based epoch of ``model.safetensors``), ``selected_by`` (e.g. ``min val_loss``
    or ``last``), ``best_value`` (``None`` for ``last``), ``seconds`` and ``epochs``.
    """
    dist_info = dist_info or Distributed()
    method.forward_networks = _wrap(method.networks, device, dist_info)
    selection = method.selection
    start_epoch, state = 0, {"step": 0, "best": {"epoch": -1, "value": None}}
    if resume:
        last = run_dir / LAST_CHECKPOINT
        if not last.exists():
            raise input_error(run_dir, f"nothing to resume (no {LAST_CHECKPOINT})")
        start_epoch, state = load_checkpoint(last, method, device)
    writer = None
    if dist_info.is_main:
        truncate_log(run_dir / LOG_FILE, start_epoch)
        if config.tensorboard:
            writer = _tensorboard(run_dir, start_epoch)
    started = time.perf_counter()
    cuda = [device] if device.type == "cuda" else []
    source = "val" if val_data is not None and len(val_data) else "train"
    selected_by = "last" if selection.mode == "last" else f"{selection.mode} {source}_{selection.key}"
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(epoch_seed(config.seed, epoch, dist_info.rank))
            method.on_epoch_start(epoch)
            if hasattr(train_data, "set_epoch"):  # per-epoch deterministic draws (e.g. SdfDataset)
                train_data.set_epoch(epoch)
            loader = _epoch_loader(train_data, config, epoch, dist_info)
            bar = None
            if config.progress and dist_info.is_main:
                from tqdm import tqdm

                bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
            train_losses, state["step"] = _train_epoch(method, loader, state["step"], bar)
            if bar is not None:
                bar.close()
            train_losses = {k: v / dist_info.world_size
                            for k, v in all_reduce_sum(train_losses, dist_info, device).items()}
            if not all(math.isfinite(v) for v in train_losses.values()):
                raise MorphableError(f"{run_dir}: training diverged in epoch {epoch + 1} (non-finite loss "
                                     f"{train_losses}); lower the learning rate (--lr)")
            val_losses = _validate(method, val_data, config.batch_size, dist_info, device)
        for spec in method.schedulers().values():
            if spec.interval == "epoch":
                spec.scheduler.step()
        value = _selection_value(selection, train_losses, val_losses)
        if not dist_info.is_main:
            continue
        seconds = time.perf_counter() - epoch_start
        scalars = {**{f"train_{k}": v for k, v in train_losses.items()},
                   **{f"val_{k}": v for k, v in val_losses.items()}, **_learning_rates(method), "stage": method.stage}
        append_log(run_dir / LOG_FILE, {"epoch": epoch + 1, **scalars, "seconds": round(seconds, 3)})
        if writer is not None:
            for name, v in scalars.items():
                writer.add_scalar(name, v, epoch + 1)
            writer.flush()
        if _improves(selection, value, state["best"]["value"]):
            state["best"] = {"epoch": epoch + 1, "value": value}
            save_checkpoint(run_dir / BEST_CHECKPOINT, method, epoch + 1, state, metadata)
        save_checkpoint(run_dir / LAST_CHECKPOINT, method, epoch + 1, state, metadata)
        if config.progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in {**train_losses,
                              **{f"val_{k}": v for k, v in val_losses.items()}}.items())
            print(f"epoch {epoch + 1}/{config.epochs}: {shown} ({seconds:.1f} s)", flush=True)
    if writer is not None:
        writer.close()
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return {"best_epoch": state["best"]["epoch"], "selected_by": selected_by, "best_value": state["best"]["value"],
            "seconds": round(time.perf_counter() - started, 2), "epochs": config.epochs}


def _column_rank(name: str) -> int:
    return next((i for i, group in enumerate(COLUMN_GROUPS) if name.startswith(group)), len(COLUMN_GROUPS))


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_log(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV ``path`` (the file is rewritten atomically). Columns are kept in the order
    epoch, train_*, val_*, lr_*, stage, seconds; a row with a new column adds it, empty in earlier rows."""
    header, rows = _read_log(path)
    new = [k for k in row if k not in header]
    header = sorted(header + new, key=_column_rank)  # stable: first-seen order within a group
    _write_log(path, header, [*rows, row])


def truncate_log(path: Path, epochs: int) -> None:
    """Keep the rows of the first ``epochs`` epochs of the CSV ``path`` (its columns unchanged); with none
    left the file goes."""
    header, rows = _read_log(path)
    kept = [row for row in rows if int(row["epoch"]) <= epochs]
    if not kept:
        path.unlink(missing_ok=True)
    elif len(kept) < len(rows):
        _write_log(path, header, kept)
