"""Tri-plane identity model (thesis 4.2.2): code -> three feature planes -> bilinear features -> MLP -> SDF.

* Generator ``TP_gen`` (DCGAN-like): ``ConvTranspose2d(Z, ., 4, 1, 0)`` to 4 x 4, then stride-2 transposed
  convolutions (BatchNorm + ReLU) up to ``resolution / 4``; DCGAN's final tanh is removed and an
  ``Upsample(x4)`` plus a 3 x 3 convolution to ``3 * channels`` follow; the output is split into the planes
  (xy, xz, yz), each ``channels x resolution x resolution`` (thesis: 32 x 256 x 256).
* Sampling: a point ``(x, y, z)`` is projected onto the planes xy -> (x, y), xz -> (x, z), yz -> (y, z)
  (not EG3D's xy, xz, zx). ``grid_sample`` convention: the first coordinate indexes the plane's width
  (last axis), the second its height, so ``plane_xy[c, h, w]`` holds the feature at
  ``(x_w, y_h)`` with ``x_w = -1 + 2 w / (R - 1)`` (``align_corners=True``: the outer texel centres lie
  on the faces of the cube [-1, 1]^3, so the whole cube is interior to the texel lattice and the
  padding mode only matters outside it; ``border`` padding keeps features continuous there).
  Features of the three planes are summed: ``F = F_xy + F_xz + F_yz`` (C).
* Decoder ``TP_dec``: ``[F, x, y, z]`` (C + 3) -> 5 linear layers of width 256 with softplus(beta=100)
  between them -> SDF.

Fast grid evaluation for mesh extraction (:class:`TriplaneField`): on a regular grid every grid point
projects to a regular lattice on each plane, so the bilinear samples are separable matrix products
``F_xy[i, j] = sum_{h,w} A_y[j, h] A_x[i, w] P_xy[:, h, w]`` (A: 1D linear-interpolation matrices), computed
once per plane. The decoder input of grid point (i, j, k) is then a sum of three table rows,
``[F, x, y, z] = T_xy[i, j] + T_xz[i, k] + T_yz[j, k]`` with ``T_xy = [F_xy, x_i, y_j, 0]``,
``T_xz = [F_xz, 0, 0, z_k]``, ``T_yz = [F_yz, 0, 0, 0]``: three gathers of C + 3 floats replace the three
bilinear interpolations (12 texel reads and the weights) per point.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from morphable.implicit.deepsdf import calibrate_sphere_, geometric_init_, softplus_beta

#: Coordinate pairs (grid_sample x, grid_sample y) of the planes, in the order they are stored.
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))


class TriplaneGenerator(nn.Module):
    """DCGAN-like generator ``TP_gen``: codes (B, Z) -> planes (B, 3, C, R, R).

    Args:
        latent_dim: Z (512).
        channels: C, feature channels per plane (32).
        resolution: R, plane resolution (256; a power of two >= 32). ``R / 4`` is the DCGAN output size.
        base_channels: DCGAN ``ngf`` (64); layer widths ``ngf * 2^k`` shrink towards the output.
        dcgan_channels: channels of the DCGAN output layer that is upsampled x4 (default ``3 * C``).
    """

    def __init__(self, latent_dim: int = 512, channels: int = 32, resolution: int = 256,
                 base_channels: int = 64, dcgan_channels: int | None = None) -> None:
        super().__init__()
        base = resolution // 4
        doublings = int(round(math.log2(base / 4))) if base >= 8 else 0
        if base < 8 or 4 * 2 ** doublings != base or 4 * base != resolution:
            raise ValueError(f"plane resolution must be a power of two >= 32, got {resolution}")
        self.latent_dim = latent_dim
        self.channels = channels
        self.resolution = resolution
        out_hidden = 3 * channels if dcgan_channels is None else dcgan_channels
        width = base_channels * 2 ** (doublings - 1)
        blocks: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for _ in range(doublings - 1):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        blocks += [nn.ConvTranspose2d(width, out_hidden, 4, 2, 1, bias=False),
                   nn.Upsample(scale_factor=4),
                   nn.Conv2d(out_hidden, 3 * channels, 3, padding=1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, Z) -> planes (B, 3, C, R, R), plane order (xy, xz, yz).

        In training mode BatchNorm normalises over the batch (DCGAN); in eval mode each code's planes
        depend on that code only.
        """
        out = self.net(codes.reshape(codes.shape[0], self.latent_dim, 1, 1))
        return out.reshape(codes.shape[0], 3, self.channels, self.resolution, self.resolution)


class TriplaneDecoder(nn.Module):
    """``TP_dec``: MLP on ``[F (C), x, y, z]``: ``n_layers`` linear layers, softplus(beta) between them.

    With ``geometric_init`` the MLP starts as the sphere SDF ``|x| - radius`` (SAL, output layer
    calibrated as in :func:`morphable.implicit.deepsdf.calibrate_sphere_`) and the feature columns of the
    first layer start at zero, so the untrained model is that sphere for every code.
    """

    def __init__(self, channels: int = 32, hidden: int = 256, n_layers: int = 5, beta: float = 100.0,
                 geometric_init: bool = True, radius: float = 0.5) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError("the decoder needs at least 2 layers")
        self.channels = channels
        self.beta = beta
        dims = [channels + 3] + [hidden] * (n_layers - 1) + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if geometric_init:
            geometric_init_(list(self.layers), radius)
            with torch.no_grad():
                self.layers[0].weight[:, :channels].zero_()
            calibrate_sphere_(lambda x: self(x.new_zeros(x.shape[0], channels), x), self.layers[-1], radius)

    def hidden_layers(self, pre: torch.Tensor) -> torch.Tensor:
        """Layers after the first: pre-activation of layer 0 (..., H) -> SDF (...)."""
        h = pre
        for layer in self.layers[1:]:
            h = layer(softplus_beta(h, self.beta))
        return h.squeeze(-1)

    def folded(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Inference-only decoder ``[F, x, y, z] (N, C + 3) -> SDF (N,)`` with ``beta`` folded into the weights.

        With ``a_l`` the pre-activations and ``h_l = softplus_beta(a_l) = softplus_1(beta a_l) / beta``, the
        scaled ``a'_l = beta a_l`` satisfy ``a'_0 = (beta W_0) x + beta b_0``,
        ``a'_l = W_l softplus_1(a'_{l-1}) + beta b_l`` and the output is
        ``(W_L / beta) softplus_1(a'_{L-1}) + b_L``. The network is the same function, but each activation is
        one plain softplus pass, with no scaling passes and none of the slow ``beta != 1`` kernel. This is
        about 3x cheaper per activation on CPU; the weights are copied once.
        """
        beta = self.beta
        weights = [layer.weight.detach() for layer in self.layers]
        biases = [layer.bias.detach() for layer in self.layers]
        weights = [weights[0] * beta, *weights[1:-1], weights[-1] / beta]
        biases = [b * beta for b in biases[:-1]] + [biases[-1]]
        transposed = [w.t() for w in weights]

        def decode(inputs: torch.Tensor) -> torch.Tensor:
            h = torch.addmm(biases[0], inputs, transposed[0])
            for w_t, b in zip(transposed[1:], biases[1:]):
                h = torch.addmm(b, F.softplus(h), w_t)
            return h.squeeze(-1)

        return decode

    def forward(self, features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """features: (..., C), points: (..., 3) -> SDF (...)."""
        return self.hidden_layers(self.layers[0](torch.cat([features, points], dim=-1)))


def sample_planes(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear tri-plane features, summed over the planes.

    planes: (B, 3, C, R, R) in order (xy, xz, yz); points: (B, N, 3) in [-1, 1]^3 (outside: border
    values). Returns F (B, N, C) with ``F = P_xy(x, y) + P_xz(x, z) + P_yz(y, z)``.
    Twice differentiable in the points and the planes (eikonal losses).
    """
    b, n_planes, c, r, _ = planes.shape
    if n_planes != 3 or points.dim() != 3 or points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(f"planes {tuple(planes.shape)} / points {tuple(points.shape)} do not match")
    n = points.shape[1]
    grid = torch.stack([points[..., list(pair)] for pair in PLANE_AXES], dim=1)  # (B, 3, N, 2)
    sampled = F.grid_sample(planes.reshape(b * 3, c, r, r), grid.reshape(b * 3, n, 1, 2).to(planes.dtype),
                            mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.reshape(b, 3, c, n).sum(dim=1).transpose(1, 2)


def interpolation_matrix(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """1D linear-interpolation weights of ``grid_sample(align_corners=True, padding_mode='border')``.

    coords: (P,) in [-1, 1] -> A (P, R) with ``A[p] @ v`` = the value of the texel row ``v`` at
    ``coords[p]`` (texel t at ``-1 + 2 t / (R - 1)``; clamped to the border outside).
    """
    u = ((coords.to(torch.float64) + 1.0) * 0.5 * (resolution - 1)).clamp(0.0, resolution - 1)
    lo = u.floor().clamp(max=resolution - 2).long()
    frac = u - lo
    a = torch.zeros(coords.shape[0], resolution, dtype=torch.float64, device=coords.device)
    rows = torch.arange(coords.shape[0], device=coords.device)
    a[rows, lo] = 1.0 - frac
    a[rows, lo + 1] += frac
    return a


class TriplaneField:
    """One identity's SDF with its planes generated once: ``fn(points (N, 3)) -> (N,)``.

    ``grid_evaluator(axes)`` gives the fast exact path for regular grids used by mesh extraction.
    planes: (3, C, R, R).
    """

    def __init__(self, decoder: TriplaneDecoder, planes: torch.Tensor) -> None:
        self.decoder = decoder
        self.planes = planes

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """points: (N, 3) -> SDF (N,)."""
        feats = sample_planes(self.planes.unsqueeze(0), points.unsqueeze(0).to(self.planes.dtype))
        return self.decoder(feats, points.unsqueeze(0).to(self.planes.dtype)).squeeze(0)

    def grid_evaluator(self, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Precompute the per-plane first-layer terms for the grid ``axes[0] x axes[1] x axes[2]``.

        axes: three 1D coordinate tensors (Px,), (Py,), (Pz,). Returns ``evaluate(ijk (N, 3) int64) -> (N,)``
        equal (to float rounding) to ``self(points)`` at ``(axes[0][i], axes[1][j], axes[2][k])``.
        Memory: ``(Px Py + Px Pz + Py Pz) * (C + 3)`` floats for the three tables.
        """
        planes = self.planes.detach()
        dtype, device = planes.dtype, planes.device
        r = planes.shape[-1]
        axes = tuple(a.to(device=device, dtype=dtype) for a in axes)
        interp = [interpolation_matrix(a, r).to(dtype) for a in axes]
        sizes = [a.shape[0] for a in axes]
        tables = []
        for p, (u, v) in enumerate(PLANE_AXES):
            # plane[c, h, w]: w indexes axis u, h indexes axis v -> F[iu, iv, c]
            feats = torch.matmul(interp[v], torch.matmul(planes[p], interp[u].T)).permute(2, 1, 0)
            coords = torch.zeros(sizes[u], sizes[v], 3, dtype=dtype, device=device)
            if p == 0:
                coords[..., 0] = axes[0][:, None]
                coords[..., 1] = axes[1][None, :]
            elif p == 1:
                coords[..., 2] = axes[2][None, :]
            tables.append(torch.cat([feats, coords], dim=-1).reshape(-1, feats.shape[-1] + 3).contiguous())
        decode = self.decoder.folded()

        def evaluate(ijk: torch.Tensor) -> torch.Tensor:
            ijk = ijk.to(device)
            i, j, k = ijk[:, 0], ijk[:, 1], ijk[:, 2]
            inputs = tables[0].index_select(0, i * sizes[1] + j)
            inputs += tables[1].index_select(0, i * sizes[2] + k)
            inputs += tables[2].index_select(0, j * sizes[2] + k)
            return decode(inputs)

        return evaluate


class TriplaneSDF(nn.Module):
    """Tri-plane identity model ``F_id(x, z) = TP_dec(sample(TP_gen(z), x), x)``.

    Args:
        latent_dim: Z (512); channels: C (32); resolution: R (256, CPU presets e.g. 64);
        hidden, n_layers: decoder width and number of linear layers (256, 5); beta: softplus (100);
        base_channels: DCGAN ngf; geometric_init / radius: start as the sphere ``|x| - radius``.
    """

    def __init__(self, latent_dim: int = 512, channels: int = 32, resolution: int = 256,
                 hidden: int = 256, n_layers: int = 5, beta: float = 100.0, base_channels: int = 64,
                 geometric_init: bool = True, radius: float = 0.5) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = TriplaneGenerator(latent_dim, channels, resolution, base_channels)
        self.decoder = TriplaneDecoder(channels, hidden, n_layers, beta, geometric_init, radius)

    def generate_planes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, Z) -> planes (B, 3, C, R, R) in order (xy, xz, yz)."""
        return self.generator(codes)

    def decode(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """planes: (B, 3, C, R, R), points: (B, N, 3) -> SDF (B, N)."""
        return self.decoder(sample_planes(planes, points), points.to(planes.dtype))

    def forward(self, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """codes: (B, Z), points: (B, N, 3) -> SDF (B, N)."""
        return self.sdf_and_planes(codes, points)[0]

    def sdf_and_planes(self, codes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The field and its feature planes, the implicit networks' common training call.

        codes: (B, Z), points: (B, N, 3) -> ``(sdf (B, N), planes (B, 3, C, R, R))``; the planes are generated
        once and returned for the total-variation and tri-plane penalties.
        """
        planes = self.generate_planes(codes)
        return self.decode(planes, points), planes

    def sdf_function(self, code: torch.Tensor) -> TriplaneField:
        """Bind one code (Z,): generate its planes once (no autograd) and return a :class:`TriplaneField`."""
        with torch.no_grad():
            planes = self.generate_planes(code.reshape(1, self.latent_dim))[0]
        return TriplaneField(self.decoder, planes)
