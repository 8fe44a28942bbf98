"""Mesh autoencoders on a template hierarchy: CoMA, Neural3DMM / SpiralNet++, Deep3DMM.

Architecture (Deep3DMM supplement, Tables 1-2), with levels ``n_4 (template) > n_3 > ... > n_0``:

    encoder:  for i in 1..4:  x = act(conv_i(x))  at level n_{5-i},  x = down_i(x)
              z = FC(flatten(x))                                  (B, n_0 * e_4) -> (B, n_z)
    decoder:  x = FC(z).view(B, n_0, d_0)
              for i in 1..4:  x = up_i(x),  x = act(conv_i(x))   d_{i-1} -> d_i at level n_{i}
              out = conv_out(x)                                   d_4 -> 3, no activation

``conv`` is a Chebyshev convolution (K terms on the scaled Laplacian, CoMA / Deep3DMM spectral) or a
spiral convolution (SpiralNet++ spirals of fixed length, or Neural3DMM spirals from hops and
dilation). ``down``/``up`` are the QEM matrices of the hierarchy, or Deep3DMM's learned attention
aggregation (optionally fused with QEM). Meshes are ``(B, V, 3)`` tensors; the topology lives in the
modules as buffers, so it moves with ``.to()`` and is saved with the weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from morphable.config import AutoencoderConfig
from morphable.errors import MorphableError
from morphable.explicit.layers import ChebConv, Pool, SpiralConv
from morphable.mesh.hierarchy import MeshHierarchy
from morphable.mesh.spiral import level_spirals, spiral_settings

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}
CONVS = ("cheb", "spiral")


def _unknown_conv(config: AutoencoderConfig) -> MorphableError:
    return MorphableError(f"unknown conv {config.conv!r} (choose from {', '.join(CONVS)})")


def _conv(config: AutoencoderConfig, hierarchy: MeshHierarchy, level: int, spirals: Sequence, c_in: int,
          c_out: int) -> nn.Module:
    if config.conv == "cheb":
        return ChebConv(c_in, c_out, config.cheb_k, hierarchy.laplacians[level])
    if config.conv == "spiral":  # each layer its own copy: safetensors refuses shared buffers
        return SpiralConv(c_in, c_out, torch.tensor(spirals[level], dtype=torch.long))
    raise _unknown_conv(config)


def _pool(config: AutoencoderConfig, hierarchy: MeshHierarchy, fine: int, down: bool) -> nn.Module:
    """Aggregation between level ``fine`` and ``fine + 1`` (down) or back (up)."""
    qem = hierarchy.down[fine] if down else hierarchy.up[fine]
    if config.pooling == "qem":
        return Pool(qem)
    from morphable.explicit.pooling import LearnedAggregation

    if down:
        queries, keys = hierarchy.vertices[fine + 1], hierarchy.vertices[fine]
    else:
        queries, keys = hierarchy.vertices[fine], hierarchy.vertices[fine + 1]
    return LearnedAggregation(
        query_positions=queries, key_positions=keys, qem_matrix=qem, mode=config.pooling,
        dim=config.attention_dim, top_k=config.topk_encoder if down else config.topk_decoder,
        fusion_init=tuple(config.fusion_init), reference_positions=hierarchy.vertices[0])


def model_spiral_settings(config: AutoencoderConfig, n_levels: int) -> dict:
    """The config's spiral settings per level (:func:`morphable.mesh.spiral.spiral_settings`): SpiralNet++
    ``spiral_length`` and ``spiral_dilation``; Neural3DMM per-level ``spiral_hops`` and ``spiral_dilations``.
    An unknown ``spiral_style`` raises :class:`MorphableError`."""
    if config.spiral_style == "neural3dmm":
        return spiral_settings(n_levels, "neural3dmm", dilation=config.spiral_dilations, hops=config.spiral_hops)
    return spiral_settings(n_levels, config.spiral_style, config.spiral_length, config.spiral_dilation)


def spiral_indices(config: AutoencoderConfig, hierarchy: MeshHierarchy) -> list:
    """Per-level spiral index arrays for spiral models (none for Chebyshev models).

    They come from :func:`morphable.mesh.spiral.level_spirals`, the builder of :meth:`MeshHierarchy.build`:
    the hierarchy's own spirals when it was built with the config's spiral settings, else built anew.
    """
    if config.conv not in CONVS:
        raise _unknown_conv(config)
    if config.conv == "cheb":
        return []
    settings = model_spiral_settings(config, hierarchy.n_levels)
    if all(hierarchy.settings.get(key) == value for key, value in settings.items()):
        return hierarchy.spirals
    return level_spirals(hierarchy.vertices, hierarchy.faces, settings)


class MeshAutoencoder(nn.Module):
    """Encoder/decoder pair on a :class:`MeshHierarchy` with ``len(factors) + 1`` levels."""

    def __init__(self, config: AutoencoderConfig, hierarchy: MeshHierarchy):
        super().__init__()
        levels = len(hierarchy.vertices)
        n_down = levels - 1
        if len(config.encoder_channels) != n_down or len(config.decoder_channels) != n_down + 1:
            raise ValueError(f"{n_down} hierarchy transitions need {n_down} encoder and {n_down + 1} decoder "
                             f"channels, got {config.encoder_channels} and {config.decoder_channels}")
        self.n_vertices = len(hierarchy.vertices[0])
        self.n_coarse = len(hierarchy.vertices[-1])
        spirals = spiral_indices(config, hierarchy)
        act = ACTIVATIONS[config.activation]
        enc = [3, *config.encoder_channels]
        self.encoder_convs = nn.ModuleList(_conv(config, hierarchy, l, spirals, enc[l], enc[l + 1])
                                           for l in range(n_down))
        self.downs = nn.ModuleList(_pool(config, hierarchy, l, down=True) for l in range(n_down))
        self.encoder_fc = nn.Linear(self.n_coarse * enc[-1], config.latent)
        dec = list(config.decoder_channels)
        self.decoder_fc = nn.Linear(config.latent, self.n_coarse * dec[0])
        self.ups = nn.ModuleList(_pool(config, hierarchy, l, down=False) for l in reversed(range(n_down)))
        self.decoder_convs = nn.ModuleList(
            _conv(config, hierarchy, n_down - 1 - i, spirals, dec[i], dec[i + 1]) for i in range(n_down))
        self.output_conv = _conv(config, hierarchy, 0, spirals, dec[-1], 3)
        self.act = act()
        self.decoder_channels0 = dec[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V, 3)`` normalised vertices -> ``z: (B, n_z)``."""
        for conv, down in zip(self.encoder_convs, self.downs):
            x = down(self.act(conv(x)))
        return self.encoder_fc(x.reshape(len(x), -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (B, n_z)`` -> ``(B, V, 3)`` normalised vertices."""
        x = self.decoder_fc(z).reshape(len(z), self.n_coarse, self.decoder_channels0)
        for up, conv in zip(self.ups, self.decoder_convs):
            x = self.act(conv(up(x)))
        return self.output_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
