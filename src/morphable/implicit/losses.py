"""3D objectives of the implicit identity models (thesis 4.2.3, Table 4.1; NPM weights from 5.2.2).

Every loss is a mean over its samples (the thesis writes sums; the reference code and the weights of
Table 4.1 use means, so the weights do not depend on the number of points). Shapes: B shapes,
N points per shape.

=====================  ==========================================================  =========
loss                   definition                                                  equation
=====================  ==========================================================  =========
surface SDF            ``mean |f(x_s)|``, x_s on the surface                       (4.1)
surface normal         ``mean (1 - <grad f / |grad f|, n(x_s)>)``                  (4.2)
eikonal                ``mean | |grad f(x)| - 1 |`` over surface and free space    (4.3)
non-surface penalty    ``mean exp(-alpha |f(x)|)``, x in free space, alpha = 10     (4.4)
explicit density reg.  ``mean (f(x) - f(x + w))^2``, w ~ N(0, 1e-4 I)               (4.5)
total variation        ``sum_planes sqrt(sum (t - shift_h t)^2) + sqrt(sum (t - shift_v t)^2)``  (4.13)
tri-plane penalty      ``sum_planes |t|_2`` (Frobenius norm)                        (4.14)
code regularisation    ``mean |z|^2``                                               (4.20/4.23)
normal map             ``mean_{v, pixels} |N^(v) - N_gt^(v)|_1`` (3 channels)         (4.6)
generator              ``mean softplus(-D(N^(v)))``                                  (4.9)
discriminator          ``mean softplus(D(N)) + mean softplus(-D(N_gt)) + lambda R1`` (4.8, 4.10)
=====================  ==========================================================  =========

The 2D objectives compare volume-rendered normal maps ``N^(v)`` (:mod:`morphable.render.volume`) with the
ground-truth maps of the same cameras; their GAN terms are :mod:`morphable.train.adversarial`'s. The
discriminator's weight scales its own loss (it is not part of the generator's total, eq. 4.15).

Notes on the reading of the thesis: (4.2) is printed with the raw gradient; ``1 - <grad f, n>`` is
unbounded below (it rewards ``|grad f| -> inf`` along n), and with Table 4.1's weights (3 on it, 2 on the
eikonal term) a fit to the ICT head diverged (total loss -2e8 after 200 steps), so the gradient is
normalised: ``1 - cos(grad f, n)`` in [0, 2]. (4.3) is printed without the absolute value, which would reward
``|grad f| -> 0``; the NPM/NPHM code uses ``| |grad f| - 1 |`` and so do we. In (4.5) ``N(0, 0.0001)``
is read as variance 1e-4 (standard deviation 0.01). In (4.13) ``f_h``/``f_v`` are described as flips; a
mirror difference would be a symmetry prior, not a total variation, so they are implemented as
one-texel shifts (neighbour differences), which is the total variation of [Shue et al. 2023] that the
thesis cites. TV and the tri-plane penalty are averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

DENSITY_NOISE_STD = 0.01
"""Standard deviation of the density perturbation ``w`` in (4.5) (variance 1e-4)."""

Output = TypeVar("Output")


def sdf_and_gradient(fn: Callable[[torch.Tensor], Output], points: torch.Tensor, create_graph: bool = True,
                     n_grad: int | None = None) -> tuple[Output, torch.Tensor]:
    """Values and spatial gradients of a scalar field.

    fn: (..., N, 3) -> ``f`` (..., N), or a tuple whose first item is ``f`` (e.g. ``(sdf, planes)`` of an
    implicit network), returned as it is; points: (..., N, 3). Returns fn's output and ``grad f`` (..., N, 3),
    the gradient of ``sum_i f_i`` over the first ``n_grad`` points along N (all for None; ``grad f`` is 0 at
    the others, e.g. copies that enter only the density term). ``create_graph=True`` keeps the gradient
    differentiable (eikonal and normal losses in training); use False for evaluation. Points that already
    require grad (e.g. deformed points) are differentiated as they are; others are detached copies that
    require grad.
    """
    with torch.enable_grad():
        if not points.requires_grad:
            points = points.detach().requires_grad_(True)
        output = fn(points)
        values = output[0] if isinstance(output, tuple) else output
        if n_grad is not None:
            values = values[..., :n_grad]
        (grad,) = torch.autograd.grad(values.sum(), points, create_graph=create_graph)
    return output, grad


def surface_sdf_loss(sdf_surface: torch.Tensor) -> torch.Tensor:
    """(4.1): ``mean |f(x_s)|``. sdf_surface: (B, N) -> scalar."""
    return sdf_surface.abs().mean()


def surface_normal_loss(grad_surface: torch.Tensor, normals: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(4.2): ``mean (1 - <grad f / |grad f|, n>)``. grad_surface, normals: (B, N, 3) (unit normals) -> scalar."""
    unit = grad_surface / grad_surface.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (1.0 - (unit * normals).sum(dim=-1)).mean()


def eikonal_loss(grad: torch.Tensor) -> torch.Tensor:
    """(4.3): ``mean | |grad f(x)| - 1 |``. grad: (B, N, 3) -> scalar."""
    return (grad.norm(dim=-1) - 1.0).abs().mean()


def non_surface_loss(sdf_space: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    """(4.4): ``mean exp(-alpha |f(x)|)`` on free-space points. sdf_space: (B, N) -> scalar."""
    return torch.exp(-alpha * sdf_space.abs()).mean()


def space_sdf_loss(sdf_space: torch.Tensor, target: torch.Tensor, clamp: float = 0.1) -> torch.Tensor:
    """DeepSDF's clamped L1, ``mean |clamp(f(x), delta) - clamp(s(x), delta)|`` with ``clamp(v, d) = min(d, max(-d, v))``.

    sdf_space, target: (B, N) predicted and ground-truth SDF at near-surface and ball points. Not one of the
    thesis' 3D objectives (weight 0 by default). With ground-truth signs (winding numbers for open scans) it
    supervises free space, where surface, normal and eikonal terms alone let a short training continue an open
    boundary into spurious sheets.
    """
    return (sdf_space.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()


def density_perturbation(points: torch.Tensor, noise_std: float = DENSITY_NOISE_STD,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The perturbed points ``x + w`` of (4.5), ``w ~ N(0, noise_std^2 I)``. points: (..., 3) -> (..., 3)."""
    noise = torch.randn(points.shape, generator=generator, dtype=points.dtype, device=points.device)
    return points + noise_std * noise


def density_regularisation(sdf_points: torch.Tensor, sdf_perturbed: torch.Tensor) -> torch.Tensor:
    """(4.5): ``mean (f(x) - f(x + w))^2``. sdf_points: (B, N) ``f`` at free-space points ``x``; sdf_perturbed:
    (B, N) ``f`` at :func:`density_perturbation` of them. Returns a scalar."""
    return (sdf_points - sdf_perturbed).square().mean()


def total_variation_loss(planes: torch.Tensor) -> torch.Tensor:
    """(4.13) with one-texel shifts: ``sum_p sqrt(sum (t_p[:, 1:, :] - t_p[:, :-1, :])^2) + (same along w)``.

    planes: (B, 3, C, R, R) -> scalar (sum over the three planes, mean over B).
    """
    dh = (planes[..., 1:, :] - planes[..., :-1, :]).square().sum(dim=(-3, -2, -1))
    dw = (planes[..., :, 1:] - planes[..., :, :-1]).square().sum(dim=(-3, -2, -1))
    return (dh.sqrt() + dw.sqrt()).sum(dim=1).mean()


def triplane_penalty(planes: torch.Tensor) -> torch.Tensor:
    """(4.14): ``sum_p |t_p|_2`` (Frobenius norm of each plane). planes: (B, 3, C, R, R) -> scalar (mean over B)."""
    return planes.square().sum(dim=(-3, -2, -1)).sqrt().sum(dim=1).mean()


def code_regularisation(codes: torch.Tensor) -> torch.Tensor:
    """``mean_b |z_b|^2``. codes: (B, Z) -> scalar."""
    return codes.square().sum(dim=-1).mean()


def normal_map_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(4.6) as a mean: ``mean_{maps, pixels} sum_c |N_c - N_gt,c|``, the per-pixel L1 norm averaged.

    rendered, target: (..., H, W, 3) normal maps in the same frame; background pixels of the target are 0
    (no surface), where a rendered map is ``sum_i w_i n_i`` with weights summing to the opacity, so the loss
    also asks for empty space where the target shows none. Returns a scalar.
    """
    return (rendered - target).abs().sum(dim=-1).mean()


@dataclass
class LossWeights:
    """Weights ``lambda`` of the objectives; defaults are Table 4.1 (tri-plane identity model).

    The 2D weights (``normal_map``, ``generator``, ``discriminator``) act only in a model that renders views
    (``ImplicitConfig.views_per_step > 0``).

    ``code`` is not in Table 4.1 (0 there); :meth:`npm` uses the NPM reference value. ``space_sdf``
    (:func:`space_sdf_loss`, ground-truth SDF at near-surface and ball points) is ours, off by default.
    """

    surface: float = 20.0
    normal: float = 3.0
    eikonal: float = 2.0
    non_surface: float = 0.1
    density: float = 1e-5
    total_variation: float = 1e-4
    triplane: float = 1e-4
    code: float = 0.0
    space_sdf: float = 0.0
    normal_map: float = 2.0
    generator: float = 1.0
    discriminator: float = 1.0

    @classmethod
    def npm(cls) -> "LossWeights":
        """NPM baseline and 3D-only ablations (thesis 5.2.2: 2.0, 0.3, 0.1, 0.01; no density, TV or plane
        terms); code regularisation 0.002 as in the NPM reference configuration."""
        return cls(surface=2.0, normal=0.3, eikonal=0.1, non_surface=0.01, density=0.0,
                   total_variation=0.0, triplane=0.0, code=0.002)

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_s lambda_s L_s`` over the given losses (keys are the field names)."""
        unknown = set(losses) - set(self.__dataclass_fields__)
        if unknown:
            raise KeyError(f"no weight for losses {sorted(unknown)}")
        return sum(getattr(self, name) * value for name, value in losses.items())
