"""A trained VRN run as a model: crops in, volumes (and landmarks) out (what ``load_run`` gives for an image run)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VRNPrediction:
    """``volume (B, D, S, S)`` float32 occupancy probabilities; ``landmarks (B, 68, 2)`` crop pixels (guided and
    multitask) or None (plain)."""

    volume: np.ndarray
    landmarks: np.ndarray | None


class VRNModel:
    """The networks of a VRN run (:class:`~morphable.image.method.VRNMethod`), best weights, eval mode.

    Attributes: ``spec`` (:class:`~morphable.data.voxels.VolumeSpec`), ``variant``, ``device``, ``run``.
    """

    def __init__(self, method, run=None, chunk: int = 8) -> None:
        self.method, self.run, self.chunk = method, run, chunk
        self.spec, self.variant, self.device = method.spec, method.variant, method.device

    def predict(self, crops) -> VRNPrediction:
        """``crops (B, 3, S, S)`` float in [0, 1] (torch or numpy) -> :class:`VRNPrediction`, ``chunk`` at a time."""
        import torch

        from morphable.errors import MorphableError

        x = torch.as_tensor(np.asarray(crops, dtype=np.float32) if not torch.is_tensor(crops) else crops)
        S = self.spec.size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise MorphableError(f"crops must be (B, 3, {S}, {S}), got {tuple(x.shape)}")
        volumes, landmarks = [], []
        for start in range(0, len(x), self.chunk):
            volume, marks = self.method.predict(x[start:start + self.chunk])
            volumes.append(volume.cpu().numpy().astype(np.float32))
            if marks is not None:
                landmarks.append(marks.cpu().numpy().astype(np.float64))
        return VRNPrediction(np.concatenate(volumes), np.concatenate(landmarks) if landmarks else None)
