"""The pi-GAN discriminator of the 2D adversarial objectives (thesis 4.2.2), without progressive growing.

Normal maps ``x: (B, 3, R, R)`` (camera-frame normals, channels first) go through

* ``from_normals``: a 1 x 1 convolution to ``width(R)`` channels and LeakyReLU(0.2);
* ``log2(R) - 1`` residual CoordConv blocks, each halving the resolution ``r -> r / 2``:
  ``y = (g(x) + P x) / sqrt 2`` with ``g = LReLU . CoordConv3x3(stride 2) . LReLU . CoordConv3x3`` and
  ``P`` a 1 x 1 convolution of stride 2 (the skip path);
* a 2 x 2 convolution from the final 2 x 2 map to one logit ``(B,)``.

A CoordConv appends the pixel coordinates (two channels, ``x`` along the width and ``y`` along the height,
both in [-1, 1]) to its input before the convolution, so the discriminator knows where on the map a
feature is. Widths follow pi-GAN's table by resolution, ``width(r) = min(400, 8192 / r)`` (256 channels at
32 x 32, 128 at 64 x 64), divided by ``width_divisor`` (6 for the CPU presets: 0.32 M parameters at 32 x 32).
pi-GAN grows progressively (a blend ``alpha`` of the next resolution's input path); the thesis renders at one
fixed resolution, so there is no blend: ``alpha = 1`` throughout. Weights of the CoordConv blocks use
Kaiming-normal initialisation for LeakyReLU(0.2), as pi-GAN does. No batch statistics: every sample's logit
depends on that sample only (R1 needs it, see :func:`morphable.train.adversarial.r1_penalty`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_WIDTH = 400
WIDTH_NUMERATOR = 8192
SLOPE = 0.2


def width(resolution: int, divisor: int = 1) -> int:
    """Channels of the discriminator's feature maps at ``resolution``: ``min(400, 8192 / r) // divisor``."""
    return max(1, min(MAX_WIDTH, WIDTH_NUMERATOR // resolution) // divisor)


def pixel_coordinates(x: torch.Tensor) -> torch.Tensor:
    """``x: (B, C, H, W) -> (B, C + 2, H, W)`` with channels ``u`` (along W) and ``v`` (along H) in [-1, 1]."""
    b, _, h, w = x.shape
    v = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
    u = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.cat([x, uu.expand(b, 1, h, w), vv.expand(b, 1, h, w)], dim=1)


class CoordConv(nn.Module):
    """A convolution of ``[x, u, v]`` (:func:`pixel_coordinates`): ``(B, C_in, H, W) -> (B, C_out, H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 2, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        nn.init.kaiming_normal_(self.conv.weight, a=SLOPE, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pixel_coordinates(x))


class ResidualCoordBlock(nn.Module):
    """``(B, C_in, r, r) -> (B, C_out, r / 2, r / 2)``: ``(g(x) + P x) / sqrt 2`` (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(CoordConv(in_channels, out_channels), nn.LeakyReLU(SLOPE),
                                  CoordConv(out_channels, out_channels, stride=2), nn.LeakyReLU(SLOPE))
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x) + self.skip(x)) / math.sqrt(2.0)


class NormalMapDiscriminator(nn.Module):
    """pi-GAN's discriminator at one resolution: normal maps ``(B, 3, R, R)`` -> logits ``(B,)``.

    Args:
        resolution: R, a power of two >= 4 (the render resolution).
        width_divisor: divide pi-GAN's widths by this (1: pi-GAN's sizes).
    """

    def __init__(self, resolution: int = 64, width_divisor: int = 1) -> None:
        super().__init__()
        blocks = int(round(math.log2(resolution))) - 1
        if resolution < 4 or 2 ** (blocks + 1) != resolution:
            raise ValueError(f"the discriminator resolution must be a power of two >= 4, got {resolution}")
        self.resolution = resolution
        sizes = [resolution // 2 ** k for k in range(blocks + 1)]  # R, R/2, ..., 2
        widths = [width(r, width_divisor) for r in sizes]
        self.from_normals = nn.Sequential(nn.Conv2d(3, widths[0], 1), nn.LeakyReLU(SLOPE))
        self.blocks = nn.Sequential(*(ResidualCoordBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.final = nn.Conv2d(widths[-1], 1, 2)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps: (B, 3, R, R) -> logits (B,) (high: real)."""
        if maps.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"the discriminator takes (B, 3, {self.resolution}, {self.resolution}) maps, "
                             f"got {tuple(maps.shape)}")
        return self.final(self.blocks(self.from_normals(maps))).reshape(-1)


def channels_first(maps: torch.Tensor) -> torch.Tensor:
    """Normal maps ``(..., H, W, 3)`` as discriminator input ``(N, 3, H, W)`` (leading axes flattened)."""
    return maps.reshape(-1, *maps.shape[-3:]).permute(0, 3, 1, 2)
