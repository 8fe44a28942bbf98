"""What a method gives the training loop: :class:`TrainableMethod`, its schedulers and its selection metric.

A method owns its networks, optimisers and schedulers and does its own backward passes and optimiser
steps in ``training_step`` (so alternating GAN updates and multi-stage objectives stay inside the
method). The loop (:func:`morphable.train.fit`) owns devices, DDP, data order, random seeds, progress,
logging, validation, checkpoints and resume.

Names are the keys of the dicts a method returns: ``networks``, ``optimizers()`` and ``schedulers()``
each map a name to an object, and the checkpoint stores each under its name (``networks.<name>.<param>``,
``optimizers.<name>...``, ``schedulers.<name>...``), so the names must not change between a run and its
resume. ``log.csv`` has a column ``lr_<name>`` per optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from morphable.errors import MorphableError

INTERVALS = ("epoch", "step")
SELECTION_MODES = ("min", "max", "last")


@dataclass
class SchedulerSpec:
    """A learning-rate scheduler and how often the loop steps it.

    ``interval``: ``"epoch"`` (after every epoch, once validation has run) or ``"step"`` (after every
    ``training_step``).
    """

    scheduler: Any
    interval: str = "epoch"

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise MorphableError(f"scheduler interval '{self.interval}' is not one of {', '.join(INTERVALS)}")


@dataclass(frozen=True)
class Selection:
    """Which epoch ``model.safetensors`` holds.

    ``mode`` ``"min"`` / ``"max"``: the epoch with the lowest / highest loss ``key``, read from the
    validation losses when the run has validation data and from the epoch's mean training losses
    otherwise (ties keep the earlier epoch). ``"last"``: the latest epoch (``key`` unused), e.g. for a
    GAN, whose losses do not measure quality.
    """

    mode: str = "min"
    key: str = "loss"

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise MorphableError(f"selection mode '{self.mode}' is not one of {', '.join(SELECTION_MODES)}")


class TrainableMethod(Protocol):
    """The contract between a method and :func:`morphable.train.fit`.

    Attributes:
        networks: name -> module; every one is checkpointed, and under DDP every one with trainable
            parameters is wrapped in ``DistributedDataParallel``.
        forward_networks: name -> module to call in ``training_step``: the DDP wrapper of
            ``networks[name]`` or the network itself. The loop sets it (methods set it to
            ``dict(networks)`` in ``__init__`` so that they also work outside the loop); during
            validation it is ``networks`` (no wrapper: nothing is synchronised).
        stage: the method's training stage (0, 1, ...), checkpointed and restored on resume and logged
            per epoch; the method changes it (usually in ``on_epoch_start``).
        selection: the metric that chooses the epoch of ``model.safetensors``.

    Methods:
        optimizers(): name -> optimiser; each one's state and learning rate (``lr_<name>`` in log.csv,
            first parameter group; ``lr_<name>_<g>`` for the others) is saved.
        schedulers(): name -> :class:`SchedulerSpec`; names need not match the optimisers'.
        on_epoch_start(epoch): called at the start of every epoch (0-based), also the first epoch after a
            resume, when ``stage`` and all states are already restored: switch objectives or stages here,
            deciding from ``(epoch, stage)`` so that a resumed run does what an uninterrupted one did.
        training_step(batch, step): one update (zero_grad, backward, optimiser steps); ``step`` counts
            training steps from 0 over the whole run. Returns the losses as floats (their per-epoch means
            are logged as ``train_<key>``).
        validation_step(batch): losses of a validation batch without an update (run under
            ``torch.no_grad``); their means over the validation samples are logged as ``val_<key>``.
        extra_state() / load_extra_state(state): further tensors to checkpoint (e.g. a normaliser, a code
            table), name -> tensor.
    """

    networks: dict[str, nn.Module]
    forward_networks: dict[str, nn.Module]
    stage: int
    selection: Selection

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def schedulers(self) -> dict[str, SchedulerSpec]: ...

    def on_epoch_start(self, epoch: int) -> None: ...

    def training_step(self, batch: Any, step: int) -> dict[str, float]: ...

    def validation_step(self, batch: Any) -> dict[str, float]: ...

    def extra_state(self) -> dict[str, torch.Tensor]: ...

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None: ...


def parameter_count(method: TrainableMethod) -> int:
    """Number of parameters of all of a method's networks."""
    return sum(p.numel() for network in method.networks.values() for p in network.parameters())
