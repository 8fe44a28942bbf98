"""Fitting identity and expression codes to a posed single-view point cloud (thesis 4.4, after SNARF / NPHM).

The model is an identity SDF ``f_id(x, z_id)`` over canonical (neutral) space and a forward expression
deformation ``x_posed = x + F_ex(x, z_ex, z_id)`` (:mod:`morphable.implicit.deformation`). An observed posed
point ``p`` lies on the surface when its canonical point ``x_c(p)``, the root of ``x + F_ex(x) = p`` (eq. 4.22,
:func:`morphable.implicit.root_finding.broyden`), lies on the zero level set of ``f_id``. The energy over the
observation ``X_p`` (N points, normalised units) is eq. 4.23 with the robust truncation of
:mod:`morphable.implicit.fit`:

    E(z_id, z_ex) = mean_{p converged} min(|f_id(x_c(p), z_id)|, tau) + lambda_id |z_id|^2 + lambda_ex |z_ex|^2

Its gradient through ``x_c`` is the implicit one, ``dx_c/dz = -J^{-1} dF_ex/dz`` with ``J = I + dF_ex/dx``
(:func:`~morphable.implicit.root_finding.implicit_correction`). Each iteration re-solves the roots for the
current codes, warm-started from the previous iteration's roots and from the inverse Jacobian that the
previous iteration's implicit correction computed there (a few Broyden steps and no fresh Jacobian once the
codes move slowly); points whose root has not converged are left out of that iteration's mean. Two phases, as sec. 4.4:

1. joint: ``z_id`` and ``z_ex`` from zero, Adam at ``lr`` for ``steps`` iterations (4.4.1);
2. expression refinement: ``z_id`` frozen, ``z_ex`` alone for ``refine_steps`` iterations (4.4.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from morphable.implicit.root_finding import broyden, implicit_correction, inverse_jacobian

IdentityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(z_id (1, Z), points (1, N, 3)) -> sdf (1, N)``: a frozen identity field."""
DeformFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(z_ex (1, E), z_id (1, Z), points (1, N, 3)) -> dx (1, N, 3)``: a frozen deformation field."""


@dataclass
class PosedFit:
    """Codes fitted by :func:`fit_posed` and the history of the fit: ``energy`` and ``converged`` (fraction of
    points with a converged root) per iteration, and ``phase`` (1 joint, 2 expression only)."""

    identity: torch.Tensor
    expression: torch.Tensor
    energy: list[float] = field(default_factory=list)
    converged: list[float] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)


def fit_posed(identity_fn: IdentityFn, deform_fn: DeformFn, identity_dim: int, expression_dim: int,
              points: torch.Tensor, steps: int = 500, refine_steps: int = 200, lr: float = 0.01,
              truncation: float = 0.05, identity_weight: float = 1e-4, expression_weight: float = 1e-4,
              tol: float = 1e-5, max_iter: int = 20) -> PosedFit:
    """Minimise eq. 4.23 over ``z_id`` (``identity_dim``) and ``z_ex`` (``expression_dim``) for ``points
    (N, 3)``, jointly for ``steps`` iterations, then over ``z_ex`` alone for ``refine_steps``.

    ``tol`` and ``max_iter`` go to :func:`~morphable.implicit.root_finding.broyden` (per iteration, from the
    previous roots). Returns the codes ``(Z,)``, ``(E,)`` and the history.
    """
    like = dict(device=points.device, dtype=points.dtype)
    z_id = torch.zeros(1, identity_dim, **like, requires_grad=True)
    z_ex = torch.zeros(1, expression_dim, **like, requires_grad=True)
    fit = PosedFit(z_id, z_ex)
    roots = points.detach().clone()
    inverse = None  # J^{-1} at ``roots`` for the previous codes: the next solve's B_0
    for phase, count, variables in ((1, steps, [z_id, z_ex]), (2, refine_steps, [z_ex])):
        optimiser = torch.optim.Adam(variables, lr=lr)
        for _ in range(count):
            def warp(x: torch.Tensor) -> torch.Tensor:
                return x + deform_fn(z_ex, z_id, x[None])[0]

            with torch.no_grad():
                result = broyden(warp, points, init=roots, tol=tol, max_iter=max_iter, init_inverse=inverse)
            roots = result.x
            keep = result.converged
            inverse = inverse_jacobian(warp, roots)
            optimiser.zero_grad(set_to_none=True)
            canonical = implicit_correction(warp, roots[keep], points[keep], inverse[keep])
            residual = identity_fn(z_id, canonical[None])[0].abs().clamp(max=truncation)
            energy = (residual.mean() if len(residual) else residual.sum()) \
                + identity_weight * z_id.square().sum() + expression_weight * z_ex.square().sum()
            energy.backward()
            optimiser.step()
            fit.energy.append(float(energy.detach()))
            fit.converged.append(result.rate)
            fit.phase.append(phase)
    fit.identity, fit.expression = z_id.detach()[0], z_ex.detach()[0]
    return fit


def fit_expression_run(run_path, points_path, out, gt_path=None, region_vertices: int | None = None,
                       steps: int = 500, refine_steps: int = 200, resolution: int = 256, device: str = "auto",
                       metric_samples: int | None = None) -> dict:
    """Fit identity and expression codes of an expression run to a posed point cloud (source units of its
    training data) with :func:`fit_posed`, and write into ``out``: ``codes.safetensors`` (``identity`` (d_id,),
    ``expression`` (d_ex,)), ``fit.ply`` (the posed mesh), ``neutral.ply`` (the fitted identity's neutral mesh),
    ``fit.png`` (both, beside the ground truth when given) and ``metrics.json`` (energies, root convergence,
    seconds and, with ``gt_path``, the face / head metrics of the posed mesh); returns the metrics."""
    import time

    from morphable.errors import input_error
    from morphable.implicit.experiment import load
    from morphable.io import UNIT_TO_MM, atomic_folder, read_mesh, save_weights, write_json, write_mesh
    from morphable.metrics import METRIC_SAMPLES, read_ground_truth, region_metrics
    from morphable.runs import Run
    from morphable.viz import mesh_strip

    model = load(Run.open(run_path), device)
    cloud = read_mesh(points_path).vertices
    gt, mask = read_ground_truth(gt_path, region_vertices)
    started = time.perf_counter()
    fit = model.fit(cloud, steps, refine_steps, source=str(points_path))
    seconds = time.perf_counter() - started
    vertices, faces = model.extract((fit.identity, fit.expression), resolution)
    if len(faces) == 0:
        raise input_error(points_path, "the fitted identity code has no surface inside the unit ball")
    neutral = model.neutral(fit.identity, resolution, normalised=False)
    metrics = {"energy_first": fit.energy[0], "energy_last": fit.energy[-1], "steps": steps,
               "refine_steps": refine_steps, "converged_last": fit.converged[-1],
               "converged_min": min(fit.converged), "fit_seconds": round(seconds, 3)}
    if gt is not None:
        samples = metric_samples or METRIC_SAMPLES
        metrics.update(region_metrics((vertices, faces), (gt.vertices, gt.faces), mask, UNIT_TO_MM[model.unit],
                                      n_samples=samples))
        metrics["metric_samples"] = samples
    with atomic_folder(out) as folder:
        save_weights(folder / "codes.safetensors", {"identity": fit.identity.cpu(), "expression": fit.expression.cpu()},
                     {"run": str(model.run.path)})
        write_mesh(folder / "fit.ply", vertices, faces)
        write_mesh(folder / "neutral.ply", *neutral)
        shown = [neutral, (vertices, faces)] + ([(gt.vertices, gt.faces)] if gt is not None else [])
        mesh_strip(folder / "fit.png", shown, ["fitted neutral", "fitted posed", "ground truth"][:len(shown)],
                   columns=3)
        write_json(folder / "metrics.json", metrics)
    return metrics
