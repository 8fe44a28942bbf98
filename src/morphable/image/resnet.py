"""Residual networks (He et al. 2016, "Deep residual learning for image recognition") and a coefficient regressor.

A residual block computes ``y = ReLU(F(x) + S(x))``: ``F`` is the block's body and the shortcut ``S`` is the
identity, or a projection (1x1 convolution with the block's stride, then BatchNorm) when the block changes the
number of channels or the resolution. Every convolution is followed by BatchNorm, so none has a bias.

* :class:`BasicBlock` (ResNet-18 / 34): ``F`` = conv3x3 (stride s) - BN - ReLU - conv3x3 - BN, ``C`` channels out.
* :class:`Bottleneck` (ResNet-50): ``F`` = conv1x1 (``C``) - BN - ReLU - conv3x3 (``C``, stride s) - BN - ReLU -
  conv1x1 (``4 C``) - BN; the stride sits on the 3x3 convolution ("ResNet v1.5").

:class:`ResNet` on ``x: (B, C_in, H, W)``: a stem (conv7x7 stride 2 - BN - ReLU - max-pool 3x3 stride 2, so
``H / 4``), four stages of blocks of widths ``width * (1, 2, 4, 8)``, each stage after the first halving the
resolution in its first block (``H / 32`` at the end), then a global average pool: ``(B, F)`` with
``F = 8 * width * expansion`` (512 for ResNet-18 / 34 and 2048 for ResNet-50 at ``width = 64``).

Initialisation: convolutions Kaiming-normal with ``fan_out`` and the ReLU gain (``std = sqrt(2 / (k^2 C_out))``),
BatchNorm ``gamma = 1``, ``beta = 0``. :class:`ResNetRegressor` adds one linear layer initialised to zero, so that an
untrained regressor predicts exactly zero coefficients (the mean face, as in Deep3DFaceRecon); its gradient
is not zero (``dL/dW = dL/dy f^T``), so the first step moves the head and the next ones the backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from morphable.errors import MorphableError


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A bias-free ``kernel x kernel`` convolution ("same" padding, the given stride) followed by BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels))


class _ResidualBlock(nn.Module):
    """``(B, C_in, H, W) -> (B, expansion * C, H / s, W / s)``: ``ReLU(body(x) + shortcut(x))``."""

    expansion: int

    def __init__(self, in_channels: int, channels: int, stride: int, body: nn.Module) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.body = body
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else conv_bn(in_channels, out_channels, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (the first with the stride): ``(B, C_in, H, W) -> (B, C, H / s, W / s)``."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        body = nn.Sequential(conv_bn(in_channels, channels, 3, stride), nn.ReLU(inplace=True),
                             conv_bn(channels, channels, 3))
        super().__init__(in_channels, channels, stride, body)


class Bottleneck(_ResidualBlock):
    """1x1 (to ``C``), 3x3 (the stride), 1x1 (to ``4 C``): ``(B, C_in, H, W) -> (B, 4 C, H / s, W / s)``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        body = nn.Sequential(conv_bn(in_channels, channels, 1), nn.ReLU(inplace=True),
                             conv_bn(channels, channels, 3, stride), nn.ReLU(inplace=True),
                             conv_bn(channels, channels * self.expansion, 1))
        super().__init__(in_channels, channels, stride, body)


# depth -> (block, blocks per stage), Table 1 of the paper
RESNET_LAYOUTS: dict[int, tuple[type[_ResidualBlock], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STAGE_WIDTHS = (1, 2, 4, 8)  # stage widths as multiples of ``width``


def _layout(depth: int) -> tuple[type[_ResidualBlock], tuple[int, int, int, int]]:
    if depth not in RESNET_LAYOUTS:
        raise MorphableError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    return RESNET_LAYOUTS[depth]


def resnet_features(depth: int, width: int = 64) -> int:
    """The size ``F`` of the pooled feature of a ResNet of this depth and base width: ``8 * width * expansion``."""
    block, _ = _layout(depth)
    return STAGE_WIDTHS[-1] * width * block.expansion


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ResNet(nn.Module):
    """The backbone of the module docstring: ``x: (B, C_in, H, W) -> (B, F)``, ``F = resnet_features(depth, width)``."""

    def __init__(self, depth: int = 50, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        block, counts = _layout(depth)
        self.features = resnet_features(depth, width)
        self.stem = nn.Sequential(conv_bn(in_channels, width, 7, 2), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        stages, channels = [], width
        for index, (multiple, count) in enumerate(zip(STAGE_WIDTHS, counts)):
            stage = []
            for k in range(count):
                stage.append(block(channels, width * multiple, 2 if index > 0 and k == 0 else 1))
                channels = width * multiple * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class ResNetRegressor(nn.Module):
    """``x: (B, C_in, H, W) -> (B, out_dim)``: a :class:`ResNet` and one zero-initialised linear layer."""

    def __init__(self, out_dim: int, depth: int = 50, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet(depth, in_channels, width)
        self.head = nn.Linear(self.backbone.features, out_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
