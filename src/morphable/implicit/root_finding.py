"""Canonical points of a forward deformation by batched Broyden root finding (thesis eq. 4.22).

The expression model deforms canonical space forward, ``x_posed = fn(x) = x + F(x)``. Fitting a posed scan
needs, for every observed point ``p``, the canonical point ``x`` with ``fn(x) = p``: the root of
``g(x) = fn(x) - p``. As in SNARF and NPHM it is found by Broyden's method, all points at once with batched
3 x 3 algebra, and then made differentiable by one implicit correction step (:func:`implicit_correction`).

Method (:func:`broyden`), per point:

- start from ``x_0`` (``init``, or ``p`` itself), with the inverse Jacobian ``B_0 = J(x_0)^{-1}`` of the
  autograd Jacobian ``J = dfn/dx`` (:func:`jacobian`); a singular or non-finite ``J(x_0)`` gets ``B_0 = I``.
  A caller that already holds a good inverse near ``x_0`` passes it as ``init_inverse`` and saves the Jacobian
  (three backward passes): a fit re-solving slowly moving roots hands over the inverse of its last implicit
  correction (:func:`inverse_jacobian`);
- step ``dx = -B_k g(x_k)``, shortened to norm ``max_step`` (unit-sphere units) so that a poor ``B_k`` far from
  the root cannot throw the point out of the region where ``F`` is meaningful; ``x_{k+1} = x_k + dx``;
- "good Broyden" update of the inverse Jacobian in Sherman-Morrison form, with ``dg = g(x_{k+1}) - g(x_k)``::

      B_{k+1} = B_k + (dx - B_k dg) (dx^T B_k) / (dx^T B_k dg),

  skipped for a point whose denominator is tiny, ``|dx^T B_k dg| <= 1e-6 |dx| |B_k dg|`` (the secant
  condition ``B_{k+1} dg = dx`` would then need an unbounded update).

Convergence test: a point has converged when its residual norm ``|g(x)| <= tol`` (the Euclidean norm, in the
units of ``p``). Converged points stop moving and are no longer evaluated; the iteration ends when every point
has converged, after ``max_iter`` iterations, or for points whose residual became non-finite. Each point keeps
the best iterate it visited (lowest residual), which is what is returned.

Fallback: points that have not converged from the first start are restarted once, with a fresh Jacobian, from
the fixed-point step ``x_0 = p - F(p) = 2 p - fn(p)`` (exact when ``F`` is constant near ``p``; a different
basin of attraction from ``p`` when ``F`` is large or folds). Per point the better of the two results is
kept. Points still above ``tol`` are reported with ``converged`` False: callers exclude them from energies.

``fn`` must be *pointwise*: it maps each row of an ``(n, 3)`` input independently and accepts any number of
rows, because the solver evaluates it on chunks (``chunk``) and on the subset of points still iterating.
Evaluations run under ``torch.no_grad`` (the Jacobians under ``torch.enable_grad``), so no autograd graph is
kept; everything runs on the device and in the dtype of ``target``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

PointFn = Callable[[torch.Tensor], torch.Tensor]

_DENOMINATOR_COSINE = 1e-6  # skip the Broyden update when |dx^T B dg| <= this * |dx| |B dg|


@dataclass
class RootResult:
    """Result of :func:`broyden` for ``N`` points.

    Attributes
    ----------
    x : torch.Tensor
        ``(N, 3)`` the best iterate per point (the lowest residual norm seen over both starts), detached.
    residual : torch.Tensor
        ``(N,)`` ``|g(x)| = |fn(x) - target|`` at ``x`` (``inf`` where every iterate was non-finite).
    converged : torch.Tensor
        ``(N,)`` bool, ``residual <= tol``.
    iterations : int
        Broyden iterations run, the maximum over points of the iterations each point took (both starts
        counted for a restarted point).
    """

    x: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: int

    @property
    def rate(self) -> float:
        """Fraction of points that converged (1.0 for no points)."""
        n = self.converged.numel()
        return float(self.converged.sum().item()) / n if n else 1.0


def jacobian(fn: PointFn, x: torch.Tensor) -> torch.Tensor:
    """Per-point Jacobian of a pointwise map, ``J[n, i, j] = d fn(x)_{n,i} / d x_{n,j}``.

    For a pointwise ``fn`` (row ``n`` of the output depends only on row ``n`` of the input) the gradient of the
    summed output component ``sum_n fn(x)_{n,i}`` with respect to ``x`` has row ``n`` equal to
    ``d fn(x)_{n,i} / d x_n``, so three backward passes give all ``N`` Jacobians. For a map that mixes rows
    the result is wrong (it sums the cross terms).

    Parameters
    ----------
    fn : callable
        ``(N, 3) -> (N, 3)``, pointwise and differentiable with torch autograd.
    x : torch.Tensor
        ``(N, 3)`` points; their own graph, if any, is ignored.

    Returns
    -------
    torch.Tensor
        ``(N, 3, 3)`` detached, same dtype and device as ``x``; computed with gradients enabled even inside
        ``torch.no_grad``. Output components that do not depend on ``x`` get zero rows.
    """
    _check_points(x, "x")
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        y = fn(xr)
        _check_output(y, xr)
        if not y.requires_grad:
            return torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
        rows = []
        for i in range(3):
            (row,) = torch.autograd.grad(y[:, i].sum(), xr, retain_graph=i < 2, allow_unused=True)
            rows.append(torch.zeros_like(xr) if row is None else row)
    return torch.stack(rows, dim=1).detach()


def broyden(fn: PointFn, target: torch.Tensor, init: torch.Tensor | None = None, *, tol: float = 1e-5,
            max_iter: int = 50, max_step: float = 0.1, chunk: int | None = None,
            init_inverse: torch.Tensor | None = None) -> RootResult:
    """Solve ``fn(x) = target`` for every point by Broyden's method with one restart (see the module notes).

    Parameters
    ----------
    fn : callable
        ``(n, 3) -> (n, 3)``, pointwise, differentiable with torch autograd, accepting any number of rows.
    target : torch.Tensor
        ``(N, 3)`` the points ``p``; sets the device and dtype (float32 or float64) of the solve.
    init : torch.Tensor, optional
        ``(N, 3)`` first start; ``None`` starts from ``target``. The restart of unconverged points always
        starts from ``2 target - fn(target)``.
    tol : float
        Convergence threshold on the residual norm ``|fn(x) - target|``.
    max_iter : int
        Broyden iterations per start.
    max_step : float
        Largest step norm per iteration and point.
    chunk : int, optional
        Points per call of ``fn`` (and per Jacobian); ``None`` evaluates all points in one call.
    init_inverse : torch.Tensor, optional
        ``(N, 3, 3)`` starting inverse Jacobian ``B_0`` of the first start (default: ``J(x_0)^{-1}``). The
        restart always computes a fresh one.

    Returns
    -------
    RootResult
        ``x (N, 3)``, ``residual (N,)``, ``converged (N,)`` and ``iterations``; nothing keeps a graph.
    """
    _check_points(target, "target")
    if not target.is_floating_point():
        raise ValueError(f"target must be a floating-point tensor, got {target.dtype}")
    if init is not None and init.shape != target.shape:
        raise ValueError(f"init must have the shape of target {tuple(target.shape)}, got {tuple(init.shape)}")
    if tol < 0 or max_iter < 0 or max_step <= 0:
        raise ValueError(f"need tol >= 0, max_iter >= 0, max_step > 0; got {tol}, {max_iter}, {max_step}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be None or a positive number of points, got {chunk}")
    if init_inverse is not None and init_inverse.shape != (*target.shape, 3):
        raise ValueError(f"init_inverse must have shape {(*target.shape, 3)}, got {tuple(init_inverse.shape)}")

    target = target.detach()
    x0 = target.clone() if init is None else init.detach().to(target)
    b0 = None if init_inverse is None else init_inverse.detach().to(target).clone()
    x, residual, steps = _solve(fn, target, x0, tol, max_iter, max_step, chunk, b0)

    failed = (~(residual <= tol)).nonzero().squeeze(1)
    if failed.numel():
        p = target[failed]
        restart = 2 * p - _evaluate(fn, p, chunk)
        x2, residual2, steps2 = _solve(fn, p, restart, tol, max_iter, max_step, chunk)
        better = residual2 < residual[failed]
        x[failed[better]] = x2[better]
        residual[failed[better]] = residual2[better]
        steps[failed] += steps2

    iterations = int(steps.max().item()) if steps.numel() else 0
    return RootResult(x=x, residual=residual, converged=residual <= tol, iterations=iterations)


def inverse_jacobian(fn: PointFn, x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` detached ``J(x)^{-1}`` of a pointwise map at ``x (N, 3)`` (the identity where ``J`` is
    singular or its inverse not finite): the ``B`` of :func:`implicit_correction`, and a ``B_0`` for
    :func:`broyden`."""
    return _safe_inverse(jacobian(fn, x.detach()))


def implicit_correction(fn: PointFn, x_root: torch.Tensor, target: torch.Tensor,
                        inverse: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable canonical points: one Newton step from a root whose gradient is the implicit gradient.

    Returns ``x = x_root - B (fn(x_root) - target)`` with ``x_root`` detached and ``B = J(x_root)^{-1}`` from
    the autograd Jacobian at ``x_root`` (:func:`jacobian`), detached, while ``fn(x_root)`` keeps its graph to
    the parameters ``theta`` of ``fn`` (and ``target`` its own graph, if any).

    Why this is the right gradient (SNARF's trick): the true root ``x*(theta, p)`` satisfies
    ``fn(x*; theta) = p``. Differentiating, ``J dx*/dtheta + dfn/dtheta = 0``, so
    ``dx*/dtheta = -J^{-1} dfn/dtheta`` and ``dx*/dp = J^{-1}``. In ``x`` only ``fn(x_root; theta)`` and
    ``target`` carry gradients and ``B`` is a constant, so ``dx/dtheta = -B dfn/dtheta(x_root)`` and
    ``dx/dp = B``: exactly the implicit-function gradients at ``x_root``, without differentiating through
    the solver's iterations. The value is ``x_root`` plus a Newton step of size ``|B g(x_root)|``, i.e.
    ``x_root`` up to the residual (and a Newton step closer to the true root).

    Parameters
    ----------
    fn : callable
        ``(N, 3) -> (N, 3)``, pointwise and differentiable.
    x_root : torch.Tensor
        ``(N, 3)`` roots from :func:`broyden` (``RootResult.x``).
    target : torch.Tensor
        ``(N, 3)`` the points ``p`` the roots were solved for.
    inverse : torch.Tensor, optional
        ``(N, 3, 3)`` ``B`` when the caller already computed it with :func:`inverse_jacobian` at ``x_root``
        (default: computed here).

    Returns
    -------
    torch.Tensor
        ``(N, 3)`` with a graph to ``fn``'s parameters. Where ``J`` is singular (a fold, where the gradient is
        undefined) ``B = I`` is used; such points normally did not converge and are excluded by the caller.
    """
    _check_points(target, "target")
    if x_root.shape != target.shape:
        raise ValueError(f"x_root must have the shape of target {tuple(target.shape)}, got {tuple(x_root.shape)}")
    x_root = x_root.detach()
    if inverse is None:
        inverse = inverse_jacobian(fn, x_root)
    elif inverse.shape != (*x_root.shape, 3):
        raise ValueError(f"inverse must have shape {(*x_root.shape, 3)}, got {tuple(inverse.shape)}")
    g = fn(x_root) - target
    return x_root - (inverse @ g.unsqueeze(-1)).squeeze(-1)


def _solve(fn: PointFn, target: torch.Tensor, x0: torch.Tensor, tol: float, max_iter: int, max_step: float,
           chunk: int | None, inverse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Broyden run from ``x0 (N, 3)`` (``inverse``: its ``B_0``, default ``J(x0)^{-1}``; updated in
    place): best iterates ``(N, 3)``, their residual norms ``(N,)`` and the iterations each point took
    ``(N,)`` (int64)."""
    x = x0.clone()
    g = _evaluate(fn, x, chunk) - target
    residual = g.norm(dim=1)
    best_x = x.clone()
    best_r = torch.where(torch.isfinite(residual), residual, torch.full_like(residual, float("inf")))
    if inverse is None:
        inverse = _safe_inverse(_chunked(lambda c: jacobian(fn, c), x, chunk))
    active = (residual > tol) & torch.isfinite(residual)
    steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        b, gi = inverse[idx], g[idx]
        dx = -(b @ gi.unsqueeze(-1)).squeeze(-1)
        norm = dx.norm(dim=1, keepdim=True)
        dx = dx * torch.clamp(max_step / norm, max=1.0)
        xi = x[idx] + dx
        gi_new = _evaluate(fn, xi, chunk) - target[idx]

        bdg = (b @ (gi_new - gi).unsqueeze(-1)).squeeze(-1)
        denominator = (dx * bdg).sum(dim=1)
        update_ok = denominator.abs() > _DENOMINATOR_COSINE * dx.norm(dim=1) * bdg.norm(dim=1)
        safe = torch.where(update_ok, denominator, torch.ones_like(denominator))
        dx_b = (dx.unsqueeze(1) @ b).squeeze(1)  # dx^T B
        update = (dx - bdg).unsqueeze(-1) * dx_b.unsqueeze(1) / safe[:, None, None]
        inverse[idx] = torch.where(update_ok[:, None, None], b + update, b)

        x[idx], g[idx] = xi, gi_new
        r = gi_new.norm(dim=1)
        improved = r < best_r[idx]
        best_x[idx[improved]] = xi[improved]
        best_r[idx[improved]] = r[improved]
        steps[idx] += 1
        active[idx] = (r > tol) & torch.isfinite(r)
    return best_x, best_r, steps


def _safe_inverse(jac: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` inverses, the identity where a matrix is singular or its inverse is not finite."""
    inverse, info = torch.linalg.inv_ex(jac)
    bad = (info != 0) | ~torch.isfinite(inverse).all(dim=(1, 2))
    eye = torch.eye(3, dtype=jac.dtype, device=jac.device).expand_as(jac)
    return torch.where(bad[:, None, None], eye, inverse)


def _evaluate(fn: PointFn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``fn(x)`` for ``x (n, 3)`` without a graph, ``chunk`` rows per call."""

    def call(c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = fn(c)
        _check_output(y, c)
        return y.detach()

    return _chunked(call, x, chunk)


def _chunked(op: PointFn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``op`` applied to consecutive blocks of at most ``chunk`` rows of ``x``, concatenated."""
    if chunk is None or x.shape[0] <= chunk:
        return op(x)
    return torch.cat([op(c) for c in x.split(chunk)])


def _check_points(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {tuple(x.shape)}")


def _check_output(y: torch.Tensor, x: torch.Tensor) -> None:
    if y.shape != x.shape:
        raise ValueError(f"fn must map (n, 3) points to (n, 3), got {tuple(y.shape)} for {tuple(x.shape)}")
