"""The pix2pix generator (U-Net) and PatchGAN discriminator of Isola et al. 2017 ("Image-to-image translation
with conditional adversarial networks"), as HRN uses them for its UV maps.

Blocks (every convolution 4x4, padding 1; a convolution has a bias only when no normalisation follows it):

* down ``Ck`` (stride ``s``, 2 unless stated): conv (``k`` channels) - norm - LeakyReLU(0.2); ``H -> H / 2``.
* up ``Ck``: ReLU - transposed conv stride 2 (``k`` channels) - norm (- Dropout(0.5)); ``H -> 2 H``.

:class:`UNetGenerator` with ``n = downs`` levels of widths ``w_i = width * min(2^i, 8)`` on ``x: (B, C_in, H, W)``,
``H`` and ``W`` divisible by ``2^n``: encoder ``e_i = down_i(e_{i-1})`` at ``H / 2^(i+1)`` (``e_{-1} = x``; no norm on
``e_0`` nor on the innermost ``e_{n-1}``, whose side is 1 at ``H = 2^n``); decoder ``d_{n-1} = e_{n-1}``,
``d_{i-1} = [e_{i-1}, up_i(d_i)]`` (concatenated channels: the skip connections carry every resolution to the
output), ``up_i`` producing ``w_{i-1}`` channels, with dropout on the three innermost ones when ``dropout``;
the output ``y = act(T(ReLU(d_0)))`` with ``T`` a biased transposed convolution to ``C_out`` channels and ``act``
tanh or the identity: ``(B, C_out, H, W)``. At ``downs = 8``, ``width = 64`` this is pix2pix's ``unet_256``.

:class:`PatchDiscriminator` with ``n = layers``: ``C_{w_0}`` (no norm) - ``C_{w_1}`` - ... - ``C_{w_{n-1}}``, all
stride 2, then ``C_{w_n}`` at stride 1 and a 1-channel stride-1 convolution (the logits, no norm, no activation):
``x: (B, C_in, H, W) -> (B, 1, floor(H / 2^n) - 2, floor(W / 2^n) - 2)``. A logit sees an input patch of side
``r = 1 + (k - 1) sum_l prod_{m < l} s_m`` over the layers' strides ``s`` (``k = 4``), i.e. ``r = 9 * 2^n - 2``:
70 pixels at ``n = 3`` (the 70x70 PatchGAN), 34 at 2, 16 at 1.

``norm`` is ``"batch"`` (BatchNorm) or ``"instance"`` (InstanceNorm with a learnt scale and shift, statistics of
each sample at training and test time).
"""

from __future__ import annotations

import torch
from torch import nn

from morphable.config import check_choice
from morphable.errors import MorphableError

KERNEL = 4
NORMS = ("batch", "instance")
OUTPUTS = ("tanh", "none")
DROPOUT_BLOCKS = 3  # innermost decoder blocks with dropout (pix2pix's CD512-CD1024-CD1024)


def _norm(kind: str | None, channels: int) -> nn.Module:
    """BatchNorm, InstanceNorm (affine) or, for ``kind=None``, the identity."""
    if kind is None:
        return nn.Identity()
    check_choice("norm", kind, NORMS)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=True)


def down(in_channels: int, out_channels: int, norm: str | None, stride: int = 2) -> nn.Sequential:
    """Conv 4x4 (padding 1) - norm - LeakyReLU(0.2): ``(B, C_in, H, W) -> (B, C_out, H / s, W / s)``, ``H - 1``
    at ``s = 1``."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, KERNEL, stride, 1, bias=norm is None),
                         _norm(norm, out_channels), nn.LeakyReLU(0.2, inplace=True))


def up(in_channels: int, out_channels: int, norm: str | None, dropout: bool = False) -> nn.Sequential:
    """ReLU - transposed conv 4x4 stride 2 - norm (- Dropout 0.5): ``(B, C_in, H, W) -> (B, C_out, 2 H, 2 W)``."""
    layers = [nn.ReLU(), nn.ConvTranspose2d(in_channels, out_channels, KERNEL, 2, 1, bias=norm is None),
              _norm(norm, out_channels)]
    return nn.Sequential(*layers, nn.Dropout(0.5)) if dropout else nn.Sequential(*layers)


def level_widths(levels: int, width: int) -> list[int]:
    """``width * min(2^i, 8)`` for ``i < levels``: the channels of the U-Net levels and PatchGAN layers."""
    return [width * min(2 ** i, 8) for i in range(levels)]


class UNetGenerator(nn.Module):
    """``x: (B, C_in, H, W) -> (B, C_out, H, W)``, ``H, W`` divisible by ``2^downs``: the module docstring's U-Net."""

    def __init__(self, in_channels: int, out_channels: int, downs: int, width: int = 64, norm: str = "batch",
                 dropout: bool = True, output: str = "tanh") -> None:
        super().__init__()
        if downs < 1:
            raise MorphableError(f"a U-Net needs at least one down-sampling, got downs={downs}")
        check_choice("norm", norm, NORMS)
        self.downs = downs
        widths = level_widths(downs, width)
        inner = downs - 1
        self.encoder = nn.ModuleList(
            down(([in_channels] + widths)[i], widths[i], norm if 0 < i < inner else None) for i in range(downs))
        self.decoder = nn.ModuleList(
            up(widths[i] * (1 if i == inner else 2), widths[i - 1], norm, dropout and i > inner - DROPOUT_BLOCKS)
            for i in range(inner, 0, -1))
        self.head = up(widths[0] * (1 if inner == 0 else 2), out_channels, None)
        check_choice("output", output, OUTPUTS)
        self.output = nn.Tanh() if output == "tanh" else nn.Identity()

    def check_size(self, height: int, width: int) -> None:
        """Raise :class:`MorphableError` unless both sides are multiples of ``2^downs``."""
        step = 2 ** self.downs
        if height % step or width % step:
            raise MorphableError(f"a U-Net with {self.downs} down-samplings needs sides divisible by {step}, "
                                 f"got {height} x {width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(*x.shape[-2:])
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = torch.cat([skip, block(x)], dim=1)
        return self.output(self.head(x))


def patch_strides(layers: int) -> list[int]:
    """The strides of the PatchGAN's convolutions: ``layers`` times 2, then 1 and 1 (the last layer, the logits)."""
    return [2] * layers + [1, 1]


def patch_receptive_field(layers: int) -> int:
    """The side ``r = 1 + (k - 1) sum_l prod_{m < l} s_m`` of the input patch one PatchGAN logit sees."""
    side, jump = 1, 1
    for stride in patch_strides(layers):
        side += (KERNEL - 1) * jump
        jump *= stride
    return side


class PatchDiscriminator(nn.Module):
    """``x: (B, C_in, H, W) -> (B, 1, floor(H / 2^layers) - 2, floor(W / 2^layers) - 2)`` logits: the PatchGAN of the
    module docstring, each logit judging a ``patch_receptive_field(layers)``-pixel square."""

    def __init__(self, in_channels: int, width: int = 64, layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if layers < 1:
            raise MorphableError(f"a PatchGAN needs at least one layer, got layers={layers}")
        check_choice("norm", norm, NORMS)
        widths = level_widths(layers + 1, width)
        *strides, _ = patch_strides(layers)
        blocks = [down(([in_channels] + widths)[i], widths[i], norm if i > 0 else None, stride)
                  for i, stride in enumerate(strides)]
        self.net = nn.Sequential(*blocks, nn.Conv2d(widths[-1], 1, KERNEL, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
