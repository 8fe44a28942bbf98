"""Optimisers and the learning-rate decay named by :class:`morphable.config.TrainConfig`.

``TrainConfig.optimizer`` is ``adam``, ``adamw``, ``rmsprop`` or ``sgd`` (with ``momentum``), at ``lr`` with
``weight_decay``. ``TrainConfig.lr_decay`` has one meaning for every method: the learning rate is
multiplied by ``lr_decay`` every ``every`` epochs,

    lr(e) = lr * lr_decay ** floor(e / every)      (e: completed epochs),

with ``every = 1`` for the mesh autoencoders (CoMA's x0.99 per epoch) and ``decay_interval`` /
``decay_interval_latent`` of :class:`morphable.config.ImplicitConfig` for the implicit models' network
and codes (thesis 5.2.2: x0.75 every 1000 / 2000 epochs). Each step multiplies the current rate (the
scheduler is chainable), so with ``every = 1`` it gives the same floats as ``ExponentialLR``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from morphable.config import OPTIMIZERS, TrainConfig
from morphable.errors import MorphableError
from morphable.train.protocol import SchedulerSpec


def make_optimizer(train: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser ``train.optimizer`` over ``params`` at ``train.lr`` with ``train.weight_decay``.

    The config checks the name when it is made; a name set afterwards that is not one of
    :data:`morphable.config.OPTIMIZERS` raises :class:`MorphableError` here."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=train.lr, weight_decay=train.weight_decay)
    raise MorphableError(f"unknown optimizer '{train.optimizer}' (choose one of {', '.join(OPTIMIZERS)})")


def step_decay(optimizer: torch.optim.Optimizer, lr_decay: float, every: int = 1) -> SchedulerSpec:
    """Multiply the learning rate by ``lr_decay`` every ``every`` epochs (a per-epoch scheduler)."""
    if every < 1:
        raise MorphableError(f"the learning-rate decay interval must be at least 1 epoch, not {every}")
    return SchedulerSpec(torch.optim.lr_scheduler.StepLR(optimizer, every, lr_decay), "epoch")
