"""Differentiable volume rendering of SDF fields into normal, depth and opacity maps (thesis sec. 3.7.2, 4.2).

Density (VolSDF / MonoSDF, with the minus sign the thesis' eq. 3.6 omits): the SDF ``s`` becomes

    sigma(s) = (1 / beta) Psi_beta(-s) = (1 / beta) (1/2 + 1/2 sign(s) expm1(-|s| / beta)),

the scaled CDF of a zero-mean Laplace distribution of scale ``beta``: ``1 / beta`` deep inside, ``1 / (2 beta)``
on the surface, ``-> 0`` outside. ``beta = beta_min + |b|`` with a learned ``b`` (:class:`LaplaceDensity`).

Quadrature (NeRF, thesis eq. 3.7): along a ray ``x(t) = o + t d`` (``|d| = 1``) with sorted samples
``t_1 < ... < t_M`` in ``[t_lo, t_hi]``, ``delta_i = t_{i+1} - t_i`` (``delta_M = t_hi - t_M``),
``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j)`` and ``w_i = alpha_i T_i``:

    normal = sum_i w_i n_i,    depth = sum_i w_i t_i,    opacity = sum_i w_i,

with ``n_i = grad s(x_i) / |grad s(x_i)|`` from autograd (``create_graph=True`` so a loss on the normals trains
the field). Depth is the expected termination distance, not divided by the opacity. Sample positions carry
no gradient; gradients reach the field (its parameters and codes) through ``n_i`` and ``sigma_i``, and ``beta``.

Samplers (chosen without gradients, then evaluated once with them):

* ``"fast"`` (training): a coarse march of ``n_coarse`` uniform samples finds the first sign change
  ``s_a > 0 >= s_b``; ``n_refine`` regula-falsi (Illinois) steps locate the root ``t*`` inside that bracket;
  ``n_fine`` samples are spread uniformly over ``t* +- h`` with ``h = window * beta / max(slope, 0.1)``
  (so the window covers about ``+-window`` beta of SDF even at grazing angles) capped at one coarse step;
  ``slope`` is the smaller of the bracket's secant slope ``(s_a - s_b) / (t_b - t_a)`` and the central
  difference of the SDF over ``t* +- h`` (two more samples: the secant of a curved or non-eikonal field can
  overstate the slope at the root, and a window too narrow for the weights biased the gradients; measured on
  a partly trained NPM field, gradient cosine to a dense reference 0.48 before, 0.997 after). Rays without a sign change first march ``n_fine + 2`` samples over the
  two coarse steps around their smallest coarse SDF (grazing rays that the coarse march stepped over); if
  that finds no crossing either, the window sits at the smallest SDF found (silhouette gradients), with
  opacity near 0.
* ``"error_bounded"`` (reference): VolSDF's sampler (Yariv et al. 2021, Algorithm 1) with the thesis'
  settings (sec. 5.2: 32 samples, 32 evaluation samples, epsilon 0.1, 10 beta iterations, at most 10
  iterations). Starting from ``n_eval`` uniform samples it bounds the opacity error of the quadrature,

      E <= (exp(sum_{j<=i} delta_j^2 exp(-d*_j / beta) / (4 beta^2)) - 1) exp(-R_i),

  with ``d*_j`` the smallest ``|s|`` a 1-Lipschitz SDF can reach between two samples (0 across a sign
  change) and ``R_i`` the left Riemann sum of ``sigma`` up to sample ``i``; it bisects for the smallest
  ``beta+ >= beta`` whose bound is ``<= epsilon``, adds ``n_eval`` samples by inverse-CDF sampling of the
  bound (or of the weights once it holds for ``beta``), and repeats; finally ``n_samples`` samples are drawn
  from the weights at ``beta+``.

Rays whose smallest sampled SDF exceeds ``skip`` beta (weights below ``exp(-skip)``, background pixels) are
not evaluated again and render as zeros. Rays are clipped to ``[near, far]`` and, with ``bound=r``, to the sphere ``|x| <= r`` the field lives in (rays
that miss it keep ``[near, far]``). Every sample point stays finite. Rays are rendered in chunks of
``chunk`` rays per batch element: sampling memory is bounded by the chunk; with gradients, the graph of
every chunk is kept for the backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.render.camera import Camera

SdfFn = Callable[[torch.Tensor], torch.Tensor]
"""``sdf_fn(points (B, N, 3)) -> (B, N)``: a closure over the latent codes of the batch."""

Sampler = Literal["fast", "error_bounded"]

THESIS_NEAR, THESIS_FAR, THESIS_VIEW_RADIUS = 0.2, 5.0, 2.6
"""Thesis sec. 5.2, in the units of heads inside the unit sphere (scale with the data's radius)."""


class LaplaceDensity(nn.Module):
    """``sigma(s) = (1 / beta) Psi_beta(-s)`` with ``beta = beta_min + |b|`` and ``b`` learned.

    Args:
        beta_init: initial beta (thesis: 1e-3); ``b`` starts at ``beta_init - beta_min``.
        beta_min: lower bound of beta (thesis: 1e-4).
    """

    def __init__(self, beta_init: float = 1e-3, beta_min: float = 1e-4) -> None:
        super().__init__()
        if not 0 < beta_min <= beta_init:
            raise MorphableError(f"LaplaceDensity needs 0 < beta_min <= beta_init, got {beta_min}, {beta_init}")
        self.beta_min = float(beta_min)
        self.beta_param = nn.Parameter(torch.tensor(float(beta_init - beta_min)))

    @property
    def beta(self) -> torch.Tensor:
        """The current ``beta`` (0-d tensor, differentiable)."""
        return self.beta_min + self.beta_param.abs()

    def forward(self, sdf: torch.Tensor, beta: torch.Tensor | float | None = None) -> torch.Tensor:
        """sdf: (...) -> sigma (...); ``beta`` overrides the learned value (the samplers' bisection)."""
        beta = self.beta if beta is None else beta
        return laplace_density(sdf, beta)


def laplace_density(sdf: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """``(1 / beta) (1/2 + 1/2 sign(s) expm1(-|s| / beta))`` elementwise; ``beta`` broadcasts with ``sdf``."""
    if isinstance(beta, torch.Tensor):
        beta = beta.to(sdf)
    return (0.5 + 0.5 * torch.sign(sdf) * torch.expm1(-sdf.abs() / beta)) / beta


@dataclass
class VolumeRendering:
    """Rendered maps. From :func:`render_rays`: ``normals (B, R, 3)`` (world frame), ``depth (B, R)``
    (expected distance along the unit ray), ``opacity (B, R)``. From :func:`render_views`:
    ``(B, V, H, W, ...)`` (or ``(B, V, P, ...)`` for a pixel list), normals in the camera frame by default and
    depth as camera ``z``."""

    normals: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor


@dataclass
class FastSampler:
    """Options of the ``"fast"`` sampler (module docstring)."""

    n_coarse: int = 24
    n_fine: int = 6
    n_refine: int = 4
    window: float = 4.0


@dataclass
class ErrorBoundedSampler:
    """Options of the ``"error_bounded"`` sampler, thesis sec. 5.2 defaults (module docstring)."""

    n_samples: int = 32
    n_eval: int = 32
    eps: float = 0.1
    beta_iters: int = 10
    max_iters: int = 10


@dataclass
class _Rays:
    """A chunk of rays: origins, unit directions (B, R, 3), interval ``t_lo, t_hi`` (B, R)."""

    origins: torch.Tensor
    directions: torch.Tensor
    t_lo: torch.Tensor
    t_hi: torch.Tensor

    def points(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B, R, S) -> (B, R, S, 3)."""
        return self.origins[..., None, :] + t[..., None] * self.directions[..., None, :]


def _eval_sdf(sdf_fn: SdfFn, rays: _Rays, t: torch.Tensor) -> torch.Tensor:
    """SDF at ``t`` (B, R, S) -> (B, R, S), one call of ``sdf_fn`` on (B, R S, 3)."""
    b, r, s = t.shape
    out = sdf_fn(rays.points(t).reshape(b, r * s, 3))
    if out.shape != (b, r * s):
        raise MorphableError(f"sdf_fn must map points (B, N, 3) to (B, N), got {tuple(out.shape)} for "
                             f"{(b, r * s, 3)}")
    return out.reshape(b, r, s).to(t.dtype)


def _interval(origins: torch.Tensor, directions: torch.Tensor, near: float, far: float,
              bound: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[t_lo, t_hi]`` (B, R): ``[near, far]`` intersected with the sphere ``|x| <= bound`` where the ray
    meets it (``|d| = 1``: ``t = -o.d +- sqrt((o.d)^2 - |o|^2 + bound^2)``)."""
    t_lo = torch.full(origins.shape[:-1], near, dtype=origins.dtype, device=origins.device)
    t_hi = torch.full_like(t_lo, far)
    if bound is None:
        return t_lo, t_hi
    od = (origins * directions).sum(-1)
    disc = od * od - (origins * origins).sum(-1) + bound * bound
    root = disc.clamp(min=0).sqrt()
    lo, hi = torch.maximum(t_lo, -od - root), torch.minimum(t_hi, -od + root)
    hits = (disc > 0) & (hi > lo)
    return torch.where(hits, lo, t_lo), torch.where(hits, hi, t_hi)


def _uniform(rays: _Rays, n: int) -> torch.Tensor:
    """``n`` uniform samples from ``t_lo`` to ``t_hi``: (B, R, n)."""
    u = torch.linspace(0.0, 1.0, n, dtype=rays.t_lo.dtype, device=rays.t_lo.device)
    return rays.t_lo[..., None] + (rays.t_hi - rays.t_lo)[..., None] * u


def _first_crossing(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The first bracket ``s_a > 0 >= s_b`` of samples t, s (..., M): ``(found, t_a, t_b, s_a, s_b)`` (...)."""
    change = (s[..., :-1] > 0) & (s[..., 1:] <= 0)
    found = change.any(-1)
    first = torch.where(found, change.float().argmax(-1), 0)[..., None]
    return (found, t.gather(-1, first)[..., 0], t.gather(-1, first + 1)[..., 0], s.gather(-1, first)[..., 0],
            s.gather(-1, first + 1)[..., 0])


@torch.no_grad()
def _fast_samples(sdf_fn: SdfFn, rays: _Rays, beta: float, opts: FastSampler) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast sampler's ``n_fine`` sorted sample distances (B, R, n_fine) and the smallest SDF seen (B, R)."""
    t = _uniform(rays, opts.n_coarse)
    s = _eval_sdf(sdf_fn, rays, t)
    hit, t_a, t_b, s_a, s_b = _first_crossing(t, s)
    step = (rays.t_hi - rays.t_lo) / (opts.n_coarse - 1)
    # rays without a crossing: march the two coarse steps around their smallest SDF (grazing rays)
    nearest = t.gather(-1, s.argmin(-1, keepdim=True))[..., 0]
    u = torch.linspace(-1.0, 1.0, opts.n_fine + 2, dtype=t.dtype, device=t.device)
    t_near = torch.maximum(torch.minimum(nearest[..., None] + step[..., None] * u, rays.t_hi[..., None]),
                           rays.t_lo[..., None])
    s_near = _eval_sdf(sdf_fn, rays, t_near)
    grazing, g_a, g_b, gs_a, gs_b = _first_crossing(t_near, s_near)
    grazing &= ~hit
    t_a, t_b = torch.where(grazing, g_a, t_a), torch.where(grazing, g_b, t_b)
    s_a, s_b = torch.where(grazing, gs_a, s_a), torch.where(grazing, gs_b, s_b)
    nearest = t_near.gather(-1, s_near.argmin(-1, keepdim=True))[..., 0]
    hit = hit | grazing
    slope = ((s_a - s_b) / (t_b - t_a).clamp(min=1e-12)).clamp(min=0.1)
    lo, hi, f_lo, f_hi = t_a, t_b, s_a, s_b
    root = torch.where(s_a - s_b > 0, t_a + (t_b - t_a) * s_a / (s_a - s_b).clamp(min=1e-30), t_a)
    for _ in range(opts.n_refine):  # regula falsi on [lo, hi] (f_lo > 0 >= f_hi), kept end's value halved
        f_root = _eval_sdf(sdf_fn, rays, root[..., None])[..., 0]
        left = f_root <= 0  # the root lies in [lo, root]: root becomes the new hi, lo is kept
        hi, f_hi = torch.where(left, root, hi), torch.where(left, f_root, 0.5 * f_hi)
        lo, f_lo = torch.where(left, lo, root), torch.where(left, 0.5 * f_lo, f_root)
        denom = f_lo - f_hi
        root = torch.where(denom > 0, lo + (hi - lo) * f_lo / denom.clamp(min=1e-30), 0.5 * (lo + hi))
    centre = torch.where(s[..., 0] <= 0, rays.t_lo, torch.where(hit, root, nearest))
    half = torch.minimum(opts.window * beta / slope, step)
    # the secant slope of the coarse bracket can overstate the SDF's slope at the root: measure it there
    probe = torch.stack([centre - half, centre + half], dim=-1).clamp(min=0)
    s_probe = _eval_sdf(sdf_fn, rays, probe)
    local = ((s_probe[..., 0] - s_probe[..., 1]) / (2 * half).clamp(min=1e-12)).clamp(min=0.1)
    half = torch.minimum(opts.window * beta / torch.minimum(slope, local), step)
    u = torch.linspace(-1.0, 1.0, opts.n_fine, dtype=t.dtype, device=t.device)
    fine = centre[..., None] + half[..., None] * u
    smallest = torch.minimum(s.amin(-1), s_near.amin(-1))
    return torch.maximum(torch.minimum(fine, rays.t_hi[..., None]), rays.t_lo[..., None]), smallest


def _d_star(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Smallest ``|sdf|`` a 1-Lipschitz function with values ``s_i, s_{i+1}`` can take between ``t_i`` and
    ``t_{i+1}``: 0 across a sign change or when ``|s_i| + |s_{i+1}| <= delta``; ``|s_i|`` (``|s_{i+1}|``) when
    the triangle's angle at the other end is obtuse; else the height of the triangle with sides ``delta``,
    ``|s_i|``, ``|s_{i+1}|`` over ``delta`` (Heron). (..., M) -> (..., M - 1)."""
    a = t[..., 1:] - t[..., :-1]
    b, c = s[..., :-1].abs(), s[..., 1:].abs()
    first = a * a + b * b <= c * c
    second = a * a + c * c <= b * b
    p = 0.5 * (a + b + c)
    area = (p * (p - a) * (p - b) * (p - c)).clamp(min=0)
    height = 2.0 * area.sqrt() / a.clamp(min=1e-12)
    d = torch.where(first, b, torch.where(second, c, torch.where(b + c - a > 0, height, torch.zeros_like(a))))
    same_sign = torch.sign(s[..., :-1]) * torch.sign(s[..., 1:]) > 0
    return torch.where(same_sign, d, torch.zeros_like(d))


def _opacity_bound(t: torch.Tensor, s: torch.Tensor, d_star: torch.Tensor,
                   beta: torch.Tensor) -> torch.Tensor:
    """VolSDF's bound on the opacity error per section: (..., M) samples, beta (...) -> (..., M - 1)."""
    beta = beta[..., None]
    delta = t[..., 1:] - t[..., :-1]
    free = torch.cumsum(delta * laplace_density(s[..., :-1], beta), dim=-1)
    riemann = torch.cat([torch.zeros_like(free[..., :1]), free[..., :-1]], dim=-1)
    error = torch.cumsum(delta * delta * torch.exp(-d_star / beta) / (4.0 * beta * beta), dim=-1)
    return (torch.exp(error).clamp(max=1e6) - 1.0) * torch.exp(-riemann)


def _weights(t: torch.Tensor, sigma: torch.Tensor, t_hi: torch.Tensor) -> torch.Tensor:
    """``w_i = alpha_i T_i`` for sorted samples t (..., M), densities sigma (..., M), ``delta_M = t_hi - t_M``."""
    delta = torch.cat([t[..., 1:] - t[..., :-1], (t_hi[..., None] - t[..., -1:]).clamp(min=0)], dim=-1)
    free = sigma * delta
    transmittance = torch.exp(-torch.cat([torch.zeros_like(free[..., :1]), torch.cumsum(free[..., :-1], -1)], -1))
    return (1.0 - torch.exp(-free)) * transmittance


def _sample_pdf(t: torch.Tensor, mass: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` deterministic inverse-CDF samples (quantiles ``(k + 1/2) / n``) of the piecewise-constant
    density with ``mass (..., M - 1)`` on the sections of ``t (..., M)``: (..., n)."""
    mass = mass + 1e-5
    cdf = torch.cumsum(mass / mass.sum(-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1).clamp(max=1.0)
    u = (torch.arange(n, dtype=t.dtype, device=t.device) + 0.5) / n
    u = u.expand(*t.shape[:-1], n).contiguous()
    above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, t.shape[-1] - 1)
    below = above - 1
    c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
    t0, t1 = t.gather(-1, below), t.gather(-1, above)
    frac = ((u - c0) / (c1 - c0).clamp(min=1e-12)).clamp(0.0, 1.0)
    return t0 + frac * (t1 - t0)


@torch.no_grad()
def _error_bounded_samples(sdf_fn: SdfFn, rays: _Rays, beta: float,
                           opts: ErrorBoundedSampler) -> tuple[torch.Tensor, torch.Tensor]:
    """The error-bounded sampler's ``n_samples`` sorted sample distances (B, R, n_samples) and the smallest SDF
    seen (B, R)."""
    t = _uniform(rays, opts.n_eval)
    s = _eval_sdf(sdf_fn, rays, t)
    beta0 = torch.full_like(rays.t_lo, beta)
    beta_plus = torch.sqrt((rays.t_hi - rays.t_lo) ** 2 / (4.0 * (opts.n_eval - 1) * math.log1p(opts.eps)))
    beta_plus = torch.maximum(beta_plus, beta0)
    for iteration in range(opts.max_iters):
        d_star = _d_star(t, s)
        converged = _opacity_bound(t, s, d_star, beta0).amax(-1) <= opts.eps
        lo, hi = beta0, beta_plus
        for _ in range(opts.beta_iters):  # smallest beta in [beta0, beta_plus] with bound <= eps
            mid = 0.5 * (lo + hi)
            ok = _opacity_bound(t, s, d_star, mid).amax(-1) <= opts.eps
            lo, hi = torch.where(ok, lo, mid), torch.where(ok, mid, hi)
        beta_plus = torch.where(converged, beta0, hi)
        if bool(converged.all()) or iteration == opts.max_iters - 1:
            break
        bound = _opacity_bound(t, s, d_star, beta_plus)
        increments = torch.cat([bound[..., :1], (bound[..., 1:] - bound[..., :-1]).clamp(min=0)], dim=-1)
        weights = _weights(t, laplace_density(s, beta_plus[..., None]), rays.t_hi)[..., :-1]
        mass = torch.where(converged[..., None], weights, increments)
        new = _sample_pdf(t, mass, opts.n_eval)
        t, order = torch.sort(torch.cat([t, new], dim=-1), dim=-1)
        s = torch.cat([s, _eval_sdf(sdf_fn, rays, new)], dim=-1).gather(-1, order)
    weights = _weights(t, laplace_density(s, beta_plus[..., None]), rays.t_hi)[..., :-1]
    return torch.sort(_sample_pdf(t, weights, opts.n_samples), dim=-1).values, s.amin(-1)


def _render_chunk(sdf_fn: SdfFn, rays: _Rays, density: LaplaceDensity, t: torch.Tensor,
                  create_graph: bool) -> VolumeRendering:
    """Evaluate the field with gradients at the chosen samples t (B, R, S) and integrate."""
    b, r, n = t.shape
    with torch.enable_grad():
        points = rays.points(t.detach()).reshape(b, r * n, 3).requires_grad_(True)
        sdf = sdf_fn(points)
        (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=create_graph)
    normals = torch.nn.functional.normalize(grad.to(t.dtype), dim=-1, eps=1e-12).reshape(b, r, n, 3)
    w = _weights(t, density(sdf.reshape(b, r, n).to(t.dtype)), rays.t_hi)
    return VolumeRendering((w[..., None] * normals).sum(-2), (w * t).sum(-1), w.sum(-1))


def _render_active(sdf_fn: SdfFn, rays: _Rays, density: LaplaceDensity, t: torch.Tensor, active: torch.Tensor,
                   create_graph: bool) -> VolumeRendering:
    """:func:`_render_chunk` of the ``active`` rays (B, R) only; the others render as exact zeros.

    Every batch element renders the same number ``K`` of rays (its active ones first, padded with inactive
    ones whose results are multiplied by 0), since ``sdf_fn`` takes one point count for the whole batch."""
    b, r, n = t.shape
    k = int(active.sum(-1).max())
    if k == r:
        return _render_chunk(sdf_fn, rays, density, t, create_graph)
    order = torch.argsort((~active).to(torch.int8), dim=-1, stable=True)[:, :k]  # (B, K), active rays first
    keep = active.gather(1, order).to(t.dtype)
    vec = order[..., None].expand(b, k, 3)
    sub = _Rays(rays.origins.gather(1, vec), rays.directions.gather(1, vec), rays.t_lo.gather(1, order),
                rays.t_hi.gather(1, order))
    out = _render_chunk(sdf_fn, sub, density, t.gather(1, order[..., None].expand(b, k, n)), create_graph)
    zeros = torch.zeros_like(rays.t_lo)
    return VolumeRendering(torch.zeros_like(rays.origins).scatter(1, vec, out.normals * keep[..., None]),
                           zeros.scatter(1, order, out.depth * keep), zeros.scatter(1, order, out.opacity * keep))


def render_rays(sdf_fn: SdfFn, origins: torch.Tensor, directions: torch.Tensor, density: LaplaceDensity, *,
                sampler: Sampler = "fast", near: float = THESIS_NEAR, far: float = THESIS_FAR,
                bound: float | None = None, create_graph: bool = True, chunk: int = 4096, skip: float | None = 20.0,
                fast: FastSampler | None = None, error_bounded: ErrorBoundedSampler | None = None
                ) -> VolumeRendering:
    """Volume-render rays through an SDF field (module docstring).

    Args:
        sdf_fn: ``(B, N, 3) -> (B, N)`` points to SDF, differentiable in the points (and the parameters).
        origins: (B, R, 3) ray origins; directions: (B, R, 3), any non-zero length (normalised here).
        density: the :class:`LaplaceDensity` (its beta also steers the samplers).
        sampler: ``"fast"`` (training) or ``"error_bounded"`` (reference).
        near, far: ray interval in distance along the unit direction (thesis 0.2 / 5.0 for unit-sphere heads).
        bound: clip rays to the sphere ``|x| <= bound`` (e.g. 1.0, the unit ball the fields live in).
        create_graph: keep the graph of the normals (needed for a loss on them to train the field).
        chunk: rays per batch element rendered at once.
        skip: rays whose smallest sampled SDF exceeds ``skip * beta`` (weights below ``exp(-skip)``) are not
            evaluated with gradients and render as zeros; None renders every ray.
        fast, error_bounded: sampler options.

    Returns:
        :class:`VolumeRendering` with normals (B, R, 3) in the world frame, depth and opacity (B, R).
    """
    if origins.shape != directions.shape or origins.dim() != 3 or origins.shape[-1] != 3:
        raise MorphableError(f"origins and directions must both be (B, R, 3), got {tuple(origins.shape)} "
                             f"and {tuple(directions.shape)}")
    if not 0 <= near < far:
        raise MorphableError(f"need 0 <= near < far, got near={near}, far={far}")
    if sampler not in ("fast", "error_bounded"):
        raise MorphableError(f"unknown sampler {sampler!r} (fast, error_bounded)")
    directions = torch.nn.functional.normalize(directions, dim=-1)
    beta = float(density.beta.detach())
    parts = []
    for start in range(0, origins.shape[1], chunk):
        o, d = origins[:, start:start + chunk], directions[:, start:start + chunk]
        rays = _Rays(o, d, *_interval(o, d, near, far, bound))
        if sampler == "fast":
            t, smallest = _fast_samples(sdf_fn, rays, beta, fast or FastSampler())
        else:
            t, smallest = _error_bounded_samples(sdf_fn, rays, beta, error_bounded or ErrorBoundedSampler())
        t = torch.nan_to_num(t, nan=near).clamp(near, far)
        active = ~(smallest > skip * beta) if skip is not None else torch.ones_like(smallest, dtype=torch.bool)
        parts.append(_render_active(sdf_fn, rays, density, t, active, create_graph))
    return VolumeRendering(*(torch.cat([getattr(p, f) for p in parts], dim=1)
                             for f in ("normals", "depth", "opacity")))


def _pixel_grid(camera: Camera, stride: int, offset: tuple[int, int],
                pixels: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Row / column indices (P, 2) of the rendered pixels and the map shape they fill."""
    if pixels is not None:
        pixels = torch.as_tensor(pixels, dtype=torch.long)
        if pixels.dim() != 2 or pixels.shape[1] != 2:
            raise MorphableError(f"pixels must be (P, 2) (row, column), got {tuple(pixels.shape)}")
        if len(pixels) and (pixels.min() < 0 or (pixels[:, 0] >= camera.height).any()
                            or (pixels[:, 1] >= camera.width).any()):
            raise MorphableError(f"pixels outside the {camera.height} x {camera.width} image")
        return pixels, (len(pixels),)
    if stride < 1 or not all(0 <= o < stride for o in offset):
        raise MorphableError(f"need stride >= 1 and 0 <= offset < stride, got stride={stride}, offset={offset}")
    rows, cols = torch.arange(offset[0], camera.height, stride), torch.arange(offset[1], camera.width, stride)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2), (len(rows), len(cols))


def camera_rays(camera: Camera, pixels: torch.Tensor, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame origins and camera-``z = 1`` directions (P, 3) of the pixels (P, 2) ``(row, column)``."""
    d_cam = camera.rays(device=device, dtype=dtype)[pixels[:, 0].to(device), pixels[:, 1].to(device)]
    R = camera.R.to(device=device, dtype=dtype)
    return camera.center.to(device=device, dtype=dtype).expand_as(d_cam), d_cam @ R


def render_views(sdf_fn: SdfFn, cameras: Sequence[Camera] | Sequence[Sequence[Camera]], density: LaplaceDensity, *,
                 batch_size: int | None = None, stride: int = 1, offset: tuple[int, int] = (0, 0),
                 pixels: torch.Tensor | None = None, frame: Literal["camera", "world"] = "camera",
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 **options) -> VolumeRendering:
    """Normal, depth and opacity maps of ``B`` shapes seen by cameras (OpenCV convention, :class:`Camera`).

    Args:
        sdf_fn: ``(B, N, 3) -> (B, N)``, a closure over the batch's codes.
        cameras: ``V`` cameras shared by the batch, or ``B`` lists of ``V`` cameras (one list per shape); all
            of one image size.
        density: the :class:`LaplaceDensity`.
        batch_size: ``B`` for shared cameras (default 1); ignored for per-shape lists.
        stride, offset: render the pixels ``offset + stride k`` (rows, columns): a 64 x 64 camera with stride
            2 gives 32 x 32 maps whose pixels are those of ``map[::2, ::2]``.
        pixels: instead, a ``(P, 2)`` (row, column) list of pixels: maps become (B, V, P, ...).
        frame: normals in the ``"camera"`` frame (``n_c = R n``, as :func:`morphable.render.normal_map`) or
            the ``"world"`` frame.
        dtype, device: of the rays (the field's dtype and device).
        options: :func:`render_rays` keywords (sampler, near, far, bound, create_graph, chunk, ...).

    Returns:
        :class:`VolumeRendering`: normals (B, V, H', W', 3), depth (camera z) and opacity (B, V, H', W').
    """
    if frame not in ("camera", "world"):
        raise MorphableError(f"frame must be 'camera' or 'world', got {frame!r}")
    per_shape = len(cameras) > 0 and not isinstance(cameras[0], Camera)
    views = [list(c) for c in cameras] if per_shape else [list(cameras)] * (batch_size or 1)
    if not views or not views[0] or any(len(v) != len(views[0]) for v in views):
        raise MorphableError("render_views needs the same non-zero number of cameras for every shape")
    first = views[0][0]
    if any((c.height, c.width) != (first.height, first.width) for v in views for c in v):
        raise MorphableError("render_views needs cameras of one image size")
    device = torch.device(device) if device is not None else None
    grid, shape = _pixel_grid(first, stride, offset, pixels)
    rays = [[camera_rays(c, grid, dtype, device) for c in v] for v in views]
    origins = torch.stack([torch.cat([o for o, _ in v]) for v in rays])
    directions = torch.stack([torch.cat([d for _, d in v]) for v in rays])
    out = render_rays(sdf_fn, origins, directions, density, **options)
    b, n_views, p = len(views), len(views[0]), len(grid)
    rotations = torch.stack([torch.stack([c.R.to(device=device, dtype=dtype) for c in v]) for v in views])
    normals = out.normals.reshape(b, n_views, p, 3)
    if frame == "camera":
        normals = torch.einsum("bvij,bvpj->bvpi", rotations.to(normals), normals)
    z_per_unit = (1.0 / directions.norm(dim=-1)).reshape(b, n_views, p)  # camera z of a unit step
    return VolumeRendering(normals.reshape(b, n_views, *shape, 3),
                           (out.depth.reshape(b, n_views, p) * z_per_unit).reshape(b, n_views, *shape),
                           out.opacity.reshape(b, n_views, *shape))
