"""VRN networks (Jackson et al., "Large pose 3D face reconstruction from a single image via direct volumetric
CNN regression"): plain, guided and multitask, on :mod:`morphable.image.hourglass`.

Shared pieces, for an input crop of ``S x S`` pixels and ``F`` features:

* stem: conv 7x7 stride 2 (64) + BN + ReLU, residual modules 64 -> 128 -> 128 -> F: ``(B, C_in, S, S) ->
  (B, F, S/2, S/2)``; the hourglasses work at ``S / 2`` (VRN regresses the volume at the input resolution,
  so there is one down-sampling, not Newell's two);
* a stack of hourglasses without intermediate supervision: ``x_{n+1} = x_n + conv1x1(R(H(x_n)))``;
* volume head: a transposed convolution (4x4, stride 2) from ``F`` features at ``S / 2`` to ``D`` channels at
  ``S x S``, the logits of the ``D`` depth slices (``[k, y, x]``, :mod:`morphable.data.voxels`);
* landmark head: conv 1x1 to 68 heatmaps at ``S / 2`` (sigma 1 map pixel; :mod:`morphable.image.heatmaps`).

Variants: ``plain`` = stem + 2 hourglasses + volume head; ``guided`` = a landmark network (stem + hourglasses +
landmark head) and a volume network whose input is the image stacked with 68 Gaussian heatmaps (sigma 1 crop
pixel) of the landmarks (GT in training, the landmark network's peaks at test time); ``multitask`` = stem + a
shared hourglass that forks into a volume hourglass (volume head) and a landmark hourglass (landmark head).
"""

from __future__ import annotations

import torch
from torch import nn

from morphable.image.hourglass import Hourglass, ResidualModule

N_LANDMARKS = 68
HEATMAP_SCALE = 2.0  # landmark heatmaps are at S / 2: one map pixel = two crop pixels


def hourglass_levels(size: int, lowest: int = 4) -> int:
    """Levels so that an hourglass at ``size / 2`` goes down to about ``lowest`` pixels (at least one level)."""
    levels, side = 0, size // 2
    while side // 2 >= lowest:
        side //= 2
        levels += 1
    return max(1, levels)


class Stem(nn.Module):
    """``(B, C_in, S, S) -> (B, F, S/2, S/2)``."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64),
                                    nn.ReLU(inplace=True), ResidualModule(64, 128), ResidualModule(128, 128),
                                    ResidualModule(128, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class HourglassStack(nn.Module):
    """``(B, F, h, w) -> (B, F, h, w)``: ``stacks`` hourglasses chained without intermediate supervision."""

    def __init__(self, features: int, stacks: int, levels: int) -> None:
        super().__init__()
        self.hourglasses = nn.ModuleList(Hourglass(features, levels) for _ in range(stacks))
        self.after = nn.ModuleList(nn.Sequential(ResidualModule(features, features), nn.Conv2d(features, features, 1),
                                                 nn.BatchNorm2d(features), nn.ReLU(inplace=True))
                                   for _ in range(stacks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for hourglass, after in zip(self.hourglasses, self.after):
            x = x + after(hourglass(x))
        return x


class VolumeHead(nn.Module):
    """``(B, F, S/2, S/2) -> (B, D, S, S)`` logits."""

    def __init__(self, features: int, depth: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(features, depth, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class VolumeNetwork(nn.Module):
    """``(B, C_in, S, S) -> (B, D, S, S)`` volume logits: stem, hourglass stack, volume head (VRN plain; with
    ``C_in = 3 + 68`` the volume network of VRN-guided)."""

    def __init__(self, in_channels: int, features: int, stacks: int, levels: int, depth: int) -> None:
        super().__init__()
        self.stem = Stem(in_channels, features)
        self.stack = HourglassStack(features, stacks, levels)
        self.head = VolumeHead(features, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stack(self.stem(x)))


class LandmarkNetwork(nn.Module):
    """``(B, 3, S, S) -> (B, 68, S/2, S/2)`` landmark heatmaps (VRN-guided's landmark hourglass network)."""

    def __init__(self, features: int, stacks: int, levels: int) -> None:
        super().__init__()
        self.stem = Stem(3, features)
        self.stack = HourglassStack(features, stacks, levels)
        self.head = nn.Conv2d(features, N_LANDMARKS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stack(self.stem(x)))


class MultitaskNetwork(nn.Module):
    """``(B, 3, S, S) -> ((B, D, S, S) volume logits, (B, 68, S/2, S/2) heatmaps)``: a shared hourglass forking
    into a volume hourglass and a landmark hourglass (VRN-multitask)."""

    def __init__(self, features: int, levels: int, depth: int) -> None:
        super().__init__()
        self.stem = Stem(3, features)
        self.shared = HourglassStack(features, 1, levels)
        self.volume = HourglassStack(features, 1, levels)
        self.landmarks = HourglassStack(features, 1, levels)
        self.volume_head = VolumeHead(features, depth)
        self.landmark_head = nn.Conv2d(features, N_LANDMARKS, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.shared(self.stem(x))
        return self.volume_head(self.volume(shared)), self.landmark_head(self.landmarks(shared))
