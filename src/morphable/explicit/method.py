"""Training and inference glue for the mesh autoencoders (the loop's ``TrainableMethod``).

Training minimises the L1 distance between input and reconstruction of per-vertex normalised
meshes (``(x - mean) / std`` with train statistics), as in CoMA, with ``TrainConfig.optimizer`` and the
learning rate multiplied by ``TrainConfig.lr_decay`` after every epoch (:func:`morphable.train.step_decay`).
The network is ``networks["autoencoder"]`` (also ``network``); the normaliser is saved in the checkpoint
next to the weights, so a run can be evaluated from its folder alone. One stage; the epoch with the lowest
validation L1 (``loss``) is kept.
"""

from __future__ import annotations

import numpy as np
import torch

from morphable.config import AutoencoderConfig, ExperimentConfig
from morphable.data.registered import Normaliser
from morphable.explicit.autoencoder import MeshAutoencoder, model_spiral_settings
from morphable.mesh.hierarchy import MeshHierarchy, build_or_load_hierarchy
from morphable.train import SchedulerSpec, Selection, make_optimizer, step_decay


def template_hierarchy(vertices: np.ndarray, faces: np.ndarray, model: AutoencoderConfig) -> MeshHierarchy:
    """The hierarchy of a template for a model: the model's ``factors`` and spiral settings
    (:func:`~morphable.explicit.autoencoder.model_spiral_settings`), so its spirals are the ones the network
    uses (:func:`~morphable.explicit.autoencoder.spiral_indices` takes them as they are). Cached on disk
    (``io.cache_dir("hierarchies")``) by a hash of the template and the settings.

    vertices: (V, 3), faces: (F, 3).
    """
    spirals = model_spiral_settings(model, len(model.factors) + 1)
    return build_or_load_hierarchy(vertices, faces, factors=tuple(model.factors),
                                   **{key: value for key, value in spirals.items() if value is not None})


class AutoencoderMethod:
    """L1 autoencoder training of :class:`MeshAutoencoder` on normalised meshes."""

    def __init__(self, config: ExperimentConfig, hierarchy: MeshHierarchy, normaliser: Normaliser,
                 device: torch.device):
        torch.manual_seed(config.seed)
        self.device = device
        self.network = self.build_network(config, hierarchy).to(device)
        self.networks = {"autoencoder": self.network}
        self.forward_networks = dict(self.networks)
        self.stage = 0
        self.selection = Selection("min", "loss")
        self.mean = torch.as_tensor(normaliser.mean, device=device)
        self.std = torch.as_tensor(normaliser.std, device=device)
        self._optimizer = make_optimizer(config.train, self.network.parameters())
        self._scheduler = step_decay(self._optimizer, config.train.lr_decay)

    @classmethod
    def create(cls, config: ExperimentConfig, hierarchy: MeshHierarchy, normaliser: Normaliser,
               device: torch.device, train_vertices: np.ndarray | None = None) -> "AutoencoderMethod":
        """The method of a config (the run driver's constructor; ``train_vertices`` are not needed here)."""
        return cls(config, hierarchy, normaliser, device)

    def build_network(self, config: ExperimentConfig, hierarchy: MeshHierarchy) -> torch.nn.Module:
        """The network to train (subclasses build variants of :class:`MeshAutoencoder`)."""
        return MeshAutoencoder(config.model, hierarchy)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"autoencoder": self._optimizer}

    def schedulers(self) -> dict[str, SchedulerSpec]:
        return {"autoencoder": self._scheduler}

    def on_epoch_start(self, epoch: int) -> None:
        """One stage: nothing changes between epochs."""

    def training_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        x = batch.to(self.device, non_blocking=True)
        loss = (self.forward_networks["autoencoder"](x) - x).abs().mean()
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return {"loss": loss.item()}

    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch.to(self.device)
        recon = self.network(x)
        error = ((recon - x) * self.std).norm(dim=-1).mean()
        return {"loss": (recon - x).abs().mean().item(), "error": error.item()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"normaliser_mean": self.mean, "normaliser_std": self.std}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mean = state["normaliser_mean"].to(self.device)
        self.std = state["normaliser_std"].to(self.device)

    @torch.no_grad()
    def batched(self, fn, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``fn`` (tensor -> tensor) over ``inputs`` in batches of ``batch_size``, in eval mode, as numpy."""
        self.network.eval()
        out = []
        for start in range(0, len(inputs), batch_size):
            chunk = torch.as_tensor(inputs[start:start + batch_size], dtype=torch.float32, device=self.device)
            out.append(fn(chunk).cpu().numpy())
        return np.concatenate(out)

    def reconstruct(self, vertices: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Encode and decode raw meshes ``(N, V, 3)`` (in the data's unit) -> ``(N, V, 3)``."""
        return self.batched(lambda x: self.network((x - self.mean) / self.std) * self.std + self.mean, vertices,
                            batch_size)

    def encode(self, vertices: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Codes of raw meshes: ``(N, V, 3)`` (in the data's unit) -> ``(N, n_z)``, in batches."""
        return self.batched(lambda x: self.network.encode((x - self.mean) / self.std), vertices, batch_size)

    def decode(self, codes: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw meshes of codes: ``(N, n_z)`` -> ``(N, V, 3)`` (in the data's unit), in batches."""
        return self.batched(lambda z: self.network.decode(z) * self.std + self.mean, codes, batch_size)
