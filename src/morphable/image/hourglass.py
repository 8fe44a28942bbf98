"""The residual module and the hourglass of Newell et al. (stacked hourglass networks), as VRN uses them.

Residual module ``R(x) = B(x) + P(x)``: the bottleneck ``B`` is BN-ReLU-conv1x1 (C/2), BN-ReLU-conv3x3 (C/2),
BN-ReLU-conv1x1 (C); the skip ``P`` is the identity, or a 1x1 convolution when the channels change.

Hourglass of ``levels`` levels on ``(B, C, H, W)``: an upper residual branch at the input resolution, and a
lower branch that max-pools by 2, applies a residual module, the hourglass of ``levels - 1`` levels (a residual
module at the bottom), another residual module, and is up-sampled by nearest neighbours back to ``H x W``
and added to the upper branch. The number of features ``C`` is the same throughout; the lowest resolution is
``H / 2^levels``.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualModule(nn.Module):
    """``(B, C_in, H, W) -> (B, C_out, H, W)``: the bottleneck residual block of the module docstring."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(1, out_channels // 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: the recursive hourglass of the module docstring (``levels >= 1``)."""

    def __init__(self, features: int, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"an hourglass needs at least one level, got {levels}")
        self.upper = ResidualModule(features, features)
        self.down = ResidualModule(features, features)
        self.inner = Hourglass(features, levels - 1) if levels > 1 else ResidualModule(features, features)
        self.up = ResidualModule(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(nn.functional.max_pool2d(x, 2))))
        return self.upper(x) + nn.functional.interpolate(low, size=x.shape[-2:], mode="nearest")
