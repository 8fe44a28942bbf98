"""VRN training (:mod:`morphable.image.vrn`) as a :class:`~morphable.train.TrainableMethod`.

Per-voxel sigmoid cross-entropy between the volume logits ``V'`` and the target ``V``
(:func:`~morphable.data.voxels.volume_between`), the paper's loss:

    L_vol = -(1 / (D S^2)) sum_{k,y,x} [V log sigma(V') + (1 - V) log(1 - sigma(V'))]

plus, for the landmark outputs (guided's landmark network, multitask's landmark branch), ``heatmap_weight``
times the mean squared error to 68 Gaussians (``heatmap_sigma`` pixels of the ``S / 2`` heatmaps). VRN-guided's volume network sees the
ground-truth landmarks' heatmaps in training and its landmark network's peaks at test time; validation (and
``predict``) runs the test-time path. RMSProp per network (guided's landmark network at
``landmark_lr_scale`` times the rate); the learning rate drops x0.1 after ``lr_drop_epoch`` epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from morphable.data.voxels import VolumeSpec, volume_between
from morphable.image.heatmaps import gaussian_heatmaps, heatmap_peaks
from morphable.image.vrn import (HEATMAP_SCALE, N_LANDMARKS, LandmarkNetwork, MultitaskNetwork, VolumeNetwork,
                                 hourglass_levels)
from morphable.train.optim import make_optimizer
from morphable.train.protocol import SchedulerSpec, Selection


def volume_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B,)`` intersection over union of ``sigmoid(logits) > 0.5`` and ``target > 0.5`` per sample."""
    pred, gt = logits > 0, target > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return inter / union.clamp_min(1)


class VRNMethod:
    """The three VRN variants (``config.model.variant``) on one :class:`VolumeSpec`."""

    selection = Selection("min", "loss")

    def __init__(self, config, device: torch.device | str = "cpu") -> None:
        m = config.model
        torch.manual_seed(config.seed)  # the networks' initial weights are the run's seed's
        self.config, self.device = config, torch.device(device)
        self.variant = m.variant
        self.spec = VolumeSpec(m.size, m.depth, m.depth_scale, m.fill)
        levels = hourglass_levels(m.size)
        if m.variant == "plain":
            networks = {"volume": VolumeNetwork(3, m.features, m.stacks, levels, m.depth)}
        elif m.variant == "guided":
            networks = {"landmarks": LandmarkNetwork(m.landmark_features, m.landmark_stacks, levels),
                        "volume": VolumeNetwork(3 + N_LANDMARKS, m.features, m.stacks, levels, m.depth)}
        else:
            networks = {"multitask": MultitaskNetwork(m.features, levels, m.depth)}
        self.networks = {name: net.to(self.device) for name, net in networks.items()}
        self.forward_networks = dict(self.networks)
        self.stage = 0
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None  # made on first use: not at inference
        self._schedulers: dict[str, SchedulerSpec] = {}

    def _train_config(self, network: str):
        """The optimiser settings of one network: guided's landmark network at ``landmark_lr_scale`` x lr."""
        train = self.config.train
        if network == "landmarks":
            return dataclasses.replace(train, lr=train.lr * self.config.model.landmark_lr_scale)
        return train

    # ------------------------------------------------------------------ the loop's contract
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._optimizers is None:
            self._optimizers = {name: make_optimizer(self._train_config(name), net.parameters())
                                for name, net in self.networks.items()}
            drop = [self.config.model.lr_drop_epoch]
            self._schedulers = {name: SchedulerSpec(torch.optim.lr_scheduler.MultiStepLR(opt, drop, 0.1))
                                for name, opt in self._optimizers.items()}
        return self._optimizers

    def schedulers(self) -> dict[str, SchedulerSpec]:
        self.optimizers()
        return self._schedulers

    def on_epoch_start(self, epoch: int) -> None:
        return None

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        return None

    def _batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.device, torch.float32)
        target = volume_between(batch["front"].to(self.device, torch.float32),
                                batch["back"].to(self.device, torch.float32), self.spec.depth)
        return image, target, batch["landmarks"].to(self.device, torch.float32)

    def _heatmap_target(self, landmarks: torch.Tensor) -> torch.Tensor:
        return gaussian_heatmaps(landmarks, self.spec.size // 2, self.config.model.heatmap_sigma, HEATMAP_SCALE)

    def _losses(self, batch: dict[str, Any], networks: dict[str, nn.Module], test_path: bool):
        """``(total loss, volume logits, landmark heatmaps or None, scalars)``."""
        image, target, landmarks = self._batch(batch)
        heatmaps = None
        if self.variant == "plain":
            logits = networks["volume"](image)
        elif self.variant == "guided":
            heatmaps = networks["landmarks"](image)
            guide = heatmap_peaks(heatmaps, HEATMAP_SCALE) if test_path else landmarks
            logits = networks["volume"](torch.cat([image, gaussian_heatmaps(guide.detach(), self.spec.size)], 1))
        else:
            logits, heatmaps = networks["multitask"](image)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
        scalars = {"bce": float(bce.detach())}
        total = bce
        if heatmaps is not None:
            mse = nn.functional.mse_loss(heatmaps, self._heatmap_target(landmarks))
            total = total + self.config.model.heatmap_weight * mse
            scalars["heatmap"] = float(mse.detach())
            scalars["landmark_px"] = float((heatmap_peaks(heatmaps.detach(), HEATMAP_SCALE) - landmarks)
                                           .norm(dim=-1).mean())
        scalars["iou"] = float(volume_iou(logits.detach(), target).mean())
        scalars["loss"] = float(total.detach())
        return total, scalars

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        for net in self.networks.values():
            net.train()
        for opt in self.optimizers().values():
            opt.zero_grad(set_to_none=True)
        total, scalars = self._losses(batch, self.forward_networks, test_path=False)
        total.backward()
        for opt in self.optimizers().values():
            opt.step()
        return scalars

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        for net in self.networks.values():
            net.eval()
        return self._losses(batch, self.networks, test_path=True)[1]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images (B, 3, S, S)`` in [0, 1] -> ``(volume probabilities (B, D, S, S), landmarks (B, 68, 2) crop
        pixels or None)`` by the test-time path, in eval mode."""
        for net in self.networks.values():
            net.eval()
        x = images.to(self.device, torch.float32)
        if self.variant == "plain":
            return torch.sigmoid(self.networks["volume"](x)), None
        if self.variant == "guided":
            landmarks = heatmap_peaks(self.networks["landmarks"](x), HEATMAP_SCALE)
            logits = self.networks["volume"](torch.cat([x, gaussian_heatmaps(landmarks, self.spec.size)], 1))
            return torch.sigmoid(logits), landmarks
        logits, heatmaps = self.networks["multitask"](x)
        return torch.sigmoid(logits), heatmap_peaks(heatmaps, HEATMAP_SCALE)
