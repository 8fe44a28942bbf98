"""NPM / DeepSDF auto-decoder: a latent-conditioned MLP ``f(z, x) -> s`` and the auto-decoder code table.

Architecture (thesis 5.2.2; NPM/NPHM reference code): ``n_layers`` hidden layers of width ``hidden``
(8 x 1024), softplus with beta 100, a skip connection into layer ``n_layers // 2`` (4) that concatenates
the input ``[z, x]`` to the hidden state and divides the concatenation by sqrt(2), a linear output.
No weight normalisation (the NPM reference network has none).

Input layer and skip layer are applied as *split* linear maps: for ``W = [W_z | W_x]``,
``W [z; x] + b = (W_z z + b) + W_x x``, so a code that is shared by N points costs one matrix-vector
product instead of N. The result is the same function as concatenate-then-linear.

Geometric initialisation (SAL / IGR, ``geometric_init=True``, on by default as in the NPHM reference
``DeepSDF``): hidden weights ``N(0, 2 / fan_out)``, zero biases, output weights
``N(sqrt(pi) / sqrt(fan_in), 1e-5)``. For a two-layer ReLU network that is ``~ |x| - radius``; for the
deep softplus network with a sqrt(2)-scaled skip it is ``~ a |x| + c`` with ``a ~ 0.5`` and a positive
``c`` (measured: no zero level set at all), so the output layer is then calibrated by least squares on
points of the unit ball to ``|x| - radius`` (:func:`calibrate_sphere_`). The code columns of the input
and skip layers start at zero, so at initialisation every code gives the same sphere.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def softplus_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``softplus_beta(x) = log(1 + exp(beta x)) / beta`` (``x`` where ``beta x > 20``), as ``softplus_1(beta x) / beta``.

    Equal to ``F.softplus(x, beta=beta)`` (same threshold) to float rounding, and about twice as fast on
    CPU in torch 2.13, whose ``beta != 1`` kernel is not vectorised (measured 330 ms against 190 ms for
    65,536 x 256 floats on one thread). Twice differentiable, as the eikonal losses need.
    """
    return F.softplus(x * beta) / beta


def geometric_init_(layers: list[nn.Linear], radius: float) -> None:
    """SAL geometric initialisation of an MLP so that it approximates the sphere SDF ``|x| - radius``.

    Hidden layers: ``W ~ N(0, 2 / fan_out)``, ``b = 0``; last layer: ``W ~ N(sqrt(pi / fan_in), 1e-5)``,
    ``b = -radius`` (Atzmon & Lipman, SAL, Theorem 1 for ReLU networks).
    """
    with torch.no_grad():
        for layer in layers[:-1]:
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.out_features))
            nn.init.zeros_(layer.bias)
        last = layers[-1]
        nn.init.normal_(last.weight, math.sqrt(math.pi / last.in_features), 1e-5)
        nn.init.constant_(last.bias, -radius)


def calibrate_sphere_(fn: Callable[[torch.Tensor], torch.Tensor], last: nn.Linear, radius: float,
                      n_points: int = 4096) -> None:
    """Rescale the output layer so that ``fn`` is the least-squares fit of ``|x| - radius`` of the form
    ``(fn(x) - c) / a`` on uniform points of the unit ball (a fixed seed; ``fn`` is linear in ``last``).

    fn: points (N, 3) -> (N,), the network's current output with ``last`` as its final layer.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_points, 3, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(n_points, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
    x = x.to(last.weight)
    with torch.no_grad():
        f = fn(x).double()
        design = torch.stack([x.double().norm(dim=1), torch.ones_like(f)], dim=1)
        a, c = torch.linalg.lstsq(design, f[:, None]).solution[:, 0].tolist()
        last.weight.div_(a)
        last.bias.sub_(c).div_(a).sub_(radius)


class DeepSDF(nn.Module):
    """Latent-conditioned MLP ``f(z, x)`` (NPM identity network; with ``out_dim=3`` a deformation field).

    Args:
        latent_dim: code size Z (512).
        hidden: width of the hidden layers (1024).
        n_layers: number of hidden layers (8).
        skip_layer: index of the linear layer whose input is ``[h, z, x] / sqrt(2)`` (``n_layers // 2``).
        beta: softplus sharpness (100).
        out_dim: 1 for an SDF, 3 for a deformation field.
        in_dim: spatial input size (3).
        geometric_init: SAL initialisation to the sphere ``|x| - radius``.
        radius: radius of that sphere.
    """

    def __init__(self, latent_dim: int = 512, hidden: int = 1024, n_layers: int = 8,
                 skip_layer: int | None = None, beta: float = 100.0, out_dim: int = 1, in_dim: int = 3,
                 geometric_init: bool = True, radius: float = 0.5) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError("DeepSDF needs at least 2 hidden layers")
        self.latent_dim = latent_dim
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.beta = beta
        self.skip_layer = n_layers // 2 if skip_layer is None else skip_layer
        if not 1 <= self.skip_layer < n_layers:
            raise ValueError(f"skip_layer must be in [1, {n_layers - 1}], got {self.skip_layer}")
        d_in = latent_dim + in_dim
        if hidden <= d_in:
            raise ValueError(f"hidden width {hidden} must exceed the input size {d_in} for the skip layer")
        layers = []
        for i in range(n_layers + 1):
            fan_in = d_in if i == 0 else hidden
            fan_out = out_dim if i == n_layers else hidden
            if i + 1 == self.skip_layer:
                fan_out = hidden - d_in  # the skip concatenation restores the width
            layers.append(nn.Linear(fan_in, fan_out))
        self.layers = nn.ModuleList(layers)
        if geometric_init:
            geometric_init_(list(self.layers), radius)
            with torch.no_grad():
                skip = self.layers[self.skip_layer]
                self.layers[0].weight[:, :latent_dim].zero_()
                skip.weight[:, hidden - d_in:hidden - in_dim].zero_()
            zero_code = torch.zeros(1, latent_dim)
            calibrate_sphere_(lambda x: self(zero_code, x[None])[0], self.layers[-1], radius)

    def _split_linear(self, layer: nn.Linear, h: torch.Tensor | None, codes: torch.Tensor,
                      points: torch.Tensor, scale: float) -> torch.Tensor:
        """``layer([h, z, x] * scale)`` without building the concatenation (h may be absent).

        h: (B, N, Dh) or None, codes: (B, Z) or (B, N, Z), points: (B, N, 3) -> (B, N, out).
        """
        w = layer.weight
        dh = 0 if h is None else h.shape[-1]
        wz = w[:, dh:dh + self.latent_dim]
        wx = w[:, dh + self.latent_dim:]
        code_term = F.linear(codes, wz)
        if codes.dim() == 2:
            code_term = code_term.unsqueeze(1)
        out = F.linear(points, wx)
        if h is not None:
            out = out + F.linear(h, w[:, :dh])
        if scale != 1.0:
            out = out * scale
            code_term = code_term * scale
        return out + (code_term + layer.bias)

    def forward(self, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Evaluate the field.

        codes: (B, Z) (one code per shape) or (B, N, Z) (one per point); points: (B, N, 3).
        Returns (B, N) for ``out_dim == 1``, else (B, N, out_dim).
        """
        if points.dim() != 3 or points.shape[-1] != self.in_dim:
            raise ValueError(f"points must be (B, N, {self.in_dim}), got {tuple(points.shape)}")
        if codes.shape[0] != points.shape[0] or codes.shape[-1] != self.latent_dim:
            raise ValueError(f"codes {tuple(codes.shape)} do not match points {tuple(points.shape)} "
                             f"and latent size {self.latent_dim}")
        n = len(self.layers)
        h = None
        for i, layer in enumerate(self.layers):
            if i == 0:
                h = self._split_linear(layer, None, codes, points, 1.0)
            elif i == self.skip_layer:
                h = self._split_linear(layer, h, codes, points, 1.0 / math.sqrt(2.0))
            else:
                h = layer(h)
            if i < n - 1:
                h = softplus_beta(h, self.beta)
        return h.squeeze(-1) if self.out_dim == 1 else h

    def sdf_and_planes(self, codes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The field and its feature planes, the implicit networks' common training call.

        codes: (B, Z), points: (B, N, 3) -> ``(sdf (B, N), None)``: an MLP has no planes to regularise.
        """
        return self(codes, points), None

    def sdf_function(self, code: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Bind one code: returns ``fn(points (N, 3)) -> (N,)`` for :func:`morphable.mesh.extract.extract_mesh`.

        code: (Z,). Inference only (no autograd through ``fn``): the field of :meth:`folded`, the same
        function as ``self(code, points)`` to float rounding at the cost of an MLP on xyz alone.
        """
        if self.out_dim != 1:
            raise ValueError("sdf_function needs a scalar field (out_dim == 1)")
        return self.folded(code)

    def folded(self, code: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Inference-only field of one code ``(Z,)``, ``points (N, 3) -> (N,)`` (``(N, out_dim)`` if vector),
        with the code and softplus' beta folded into the weights once.

        With pre-activations ``a_l`` and ``h_l = softplus_beta(a_l) = softplus_1(beta a_l) / beta``, the
        scaled ``a'_l = beta a_l`` satisfy ``a'_0 = (beta W_x) x + beta (W_z z + b_0)``,
        ``a'_l = W_l softplus_1(a'_{l-1}) + beta b_l``, at the skip layer
        ``a'_s = (W_h / sqrt2) softplus_1(a'_{s-1}) + (beta W_x / sqrt2) x + beta (W_z z / sqrt2 + b_s)``,
        and the output is ``(W_L / beta) softplus_1(a'_{L-1}) + b_L``. The code terms ``W_z z`` become
        biases, and each activation is one plain softplus pass: none of the two scaling passes of
        :func:`softplus_beta` (each as costly as the softplus itself on a ``(N, 1024)`` activation).
        """
        beta, z = self.beta, code.detach().reshape(1, self.latent_dim)
        n = len(self.layers)
        steps = []  # per layer: (W_h^T or None, W_x^T or None, bias), for addmm
        for i, layer in enumerate(self.layers):
            w, b = layer.weight.detach(), layer.bias.detach()
            if i in (0, self.skip_layer):
                dh = w.shape[1] - self.latent_dim - self.in_dim
                scale = beta * (1.0 if i == 0 else 1.0 / math.sqrt(2.0))
                bias = (F.linear(z.to(w.dtype), w[:, dh:dh + self.latent_dim]) * (scale / beta) + b)[0] * beta
                w_h = (w[:, :dh] * (scale / beta)).t().contiguous() if dh else None
                steps.append((w_h, (w[:, dh + self.latent_dim:] * scale).t().contiguous(), bias))
            elif i == n - 1:
                steps.append(((w / beta).t().contiguous(), None, b))
            else:
                steps.append((w.t().contiguous(), None, b * beta))

        def fn(points: torch.Tensor) -> torch.Tensor:
            x = points.to(steps[0][1].dtype)
            h = None
            for w_h, w_x, bias in steps:
                if w_x is None:
                    h = torch.addmm(bias, F.softplus(h), w_h)
                elif w_h is None:
                    h = torch.addmm(bias, x, w_x)
                else:
                    h = torch.addmm(bias, x, w_x).addmm_(F.softplus(h), w_h)
            return h.squeeze(-1) if self.out_dim == 1 else h

        return fn


class LatentTable(nn.Module):
    """Auto-decoder code table: one learnable code per training shape.

    An ``nn.Embedding(num_codes, dim, max_norm=max_norm, sparse=True)``: rows are renormalised to at
    most ``max_norm`` when looked up (NPM/NPHM use 1.0) and gradients are sparse (train with
    ``torch.optim.SparseAdam``). Initialisation ``N(0, init_std^2)`` with ``init_std = 0.1 / sqrt(dim)``
    by default, as the NPM/NPHM reference trainer does (the thesis' text says "standard normal", which
    with max_norm 1 would put every code on the unit sphere at the first look-up).
    """

    def __init__(self, num_codes: int, dim: int, max_norm: float | None = 1.0,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim, max_norm=max_norm, sparse=True)
        std = 0.1 / math.sqrt(dim) if init_std is None else init_std
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, 0.0, std)

    @property
    def weight(self) -> torch.Tensor:
        """All codes, (num_codes, dim)."""
        return self.embedding.weight

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B,) int64 -> codes (B, dim)."""
        return self.embedding(indices)
