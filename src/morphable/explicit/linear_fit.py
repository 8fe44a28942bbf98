"""Fitting a linear face model (any :class:`~morphable.data.linear.LinearFaceModel`: ICT-FaceKit, BFM, a PCA
export, ...) to a depth point cloud: the linear baseline of thesis Table 6.1 (the thesis fitted FLAME; here the
same role is played by the linear model the data came from).

Model: ``y(w) = mu + sum_k w_k B_k`` with ``mu (V, 3)`` and ``B (K, V, 3)`` the first ``n_shape`` shape modes
then the first ``n_expr`` expression modes, each multiplied by its standard deviation
(:meth:`LinearFaceModel.torch_model`), so ``w = [a; b]`` is in standard-deviation units and the prior is
``w ~ N(0, I)`` (for blendshape expressions such as ICT's, whose weights lie in [0, 1], this is a ridge
penalty, not a bound). Optionally the mesh is placed in the observation frame by a rigid or similarity
transform about the mean's centroid ``m``:

    T(y) = s R (y - m) + m + t          (pose "none": s = 1, R = I, t = 0; "rigid": s = 1)

Energy (a MAP estimate with Gaussian noise ``sigma`` on the point-to-surface distances, truncated at
``tau`` so that points the model cannot explain give no gradient, like :mod:`morphable.implicit.fit`):

    E(w, s, R, t) = sum_i min(d_i^2, tau^2) / (2 sigma^2) + (lambda / 2) |w|^2

where ``d_i`` is the Euclidean distance of observed point ``x_i`` to the surface of the posed mesh
``T(y(w))`` (its closest point ``c_i``, found exactly with libigl's AABB tree), ``lambda`` the prior
weight (1: the model's own prior).

Minimisation (Gauss-Newton / ICP with point-to-plane residuals): at the current parameters every point
gets its closest point ``c_i`` (triangle ``f_i``, barycentric coordinates ``b_i``) and the unit normal
``n_i`` of that triangle. With ``f_i, b_i`` held fixed the closest point moves with the parameters, and
``r_i = n_i . (x_i - c_i)`` (equal to the signed distance when ``c_i`` is inside the triangle) is linear
in ``w`` and, after the left perturbation ``R <- exp([omega]_x) R``, ``s <- s e^{sigma_s}``,
``t <- t + delta_t``, linear to first order in the pose:

    dr_i/dw_k = -s (R^T n_i) . B_k(b_i),  dr_i/domega = -(p_i x n_i),  dr_i/dt = -n_i,  dr_i/dsigma_s = -n_i . p_i

with ``p_i = c_i - m - t`` and ``B_k(b_i) = sum_j b_ij B_k[f_ij]``. The inliers (``|d_i| < tau``) give the
normal equations ``(J^T J / sigma^2 + Lambda) delta = -(J^T r / sigma^2 + lambda [w; 0])`` with
``Lambda = lambda I`` on the ``w`` block and a small Marquardt damping ``mu diag(J^T J) / sigma^2`` on the
pose block. Without a pose the step is the exact minimiser for the current correspondences. A fixed
point is a stationary point of ``E`` (for closest points inside triangles the derivative of ``d_i`` is
the point-to-plane Jacobian). Since correspondences and inlier sets change, the iterate with the lowest
``E`` (evaluated with the true distances) is returned.

The observation must be in the model's frame up to the chosen pose (a depth map rendered from a model
instance and back-projected in world coordinates needs ``pose="none"``); rigid/similarity poses start
from the identity, so they refine a rough alignment but do not find one. Closest points are computed on
the CPU (libigl); the linear algebra runs in float64 on the device of ``points``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from morphable.data.linear import LinearFaceModel
from morphable.errors import MorphableError, input_error
from morphable.io import UNIT_TO_MM
from morphable.metrics import METRIC_SAMPLES

Pose = Literal["none", "rigid", "similarity"]
POSE_PARAMETERS = {"none": 0, "rigid": 6, "similarity": 7}


@dataclass
class LinearFit:
    """Result of :func:`fit_linear_model`.

    Attributes:
        shape_coefficients: ``(K_s,)`` shape coefficients ``a`` (standard deviations).
        expression_coefficients: ``(K_e,)`` expression coefficients ``b`` (standard deviations; empty when
            no expression mode was fitted).
        rotation: ``(3, 3)``; translation: ``(3,)``; scale: ``s`` (model -> observation frame about
            ``centre``, the mean's centroid ``(3,)``).
        vertices: ``(V, 3)`` the fitted mesh ``T(y(w))`` in the observation frame.
        energy: ``E`` per iteration (true distances), the first at the initial parameters.
        best_iteration: index into ``energy`` of the returned parameters.
        inlier_fraction: share of points with ``d_i < tau`` at the returned parameters.
    """

    shape_coefficients: torch.Tensor
    expression_coefficients: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    scale: float
    centre: torch.Tensor
    vertices: torch.Tensor
    energy: list[float] = field(default_factory=list)
    best_iteration: int = 0
    inlier_fraction: float = 1.0


def closest_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest points of ``points (N, 3)`` on the triangle mesh (libigl AABB tree).

    Returns:
        distances ``(N,)``, triangle indices ``(N,)`` int64 and barycentric coordinates ``(N, 3)`` of the
        closest points in those triangles (float64, clipped to [0, 1] and renormalised).
    """
    from morphable.mesh.distance import barycentric_coordinates, igl_module

    igl = igl_module()
    V = np.ascontiguousarray(vertices, dtype=np.float64)
    F = np.ascontiguousarray(faces, dtype=np.int64)
    sq, tri, closest = igl.point_mesh_squared_distance(np.ascontiguousarray(points, dtype=np.float64), V, F)
    tri = np.asarray(tri, dtype=np.int64).reshape(-1)
    bary = np.clip(barycentric_coordinates(np.asarray(closest), V, F, tri), 0.0, 1.0)
    bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(np.maximum(sq, 0.0)), tri, bary


def _skew(v: torch.Tensor) -> torch.Tensor:
    """``[v]_x (3, 3)`` with ``[v]_x u = v x u``."""
    zero = v.new_zeros(())
    return torch.stack([torch.stack([zero, -v[2], v[1]]), torch.stack([v[2], zero, -v[0]]),
                        torch.stack([-v[1], v[0], zero])])


def fit_linear_model(model: LinearFaceModel, points: torch.Tensor | np.ndarray, *, n_shape: int | None = None,
                     n_expr: int = 0, pose: Pose = "none", noise_mm: float = 1.0, truncation_mm: float = 10.0,
                     prior_weight: float = 1.0, iterations: int = 30, tol: float = 1e-9,
                     damping: float = 1e-3) -> LinearFit:
    """Fit shape (and expression) coefficients and optionally a pose of ``model`` to ``points`` (see the module
    docstring).

    Args:
        model: the linear model; use ``model.subset_vertices(ICT_SKIN_VERTICES)`` for ICT-FaceKit so that eyes
            and mouth interior attract no points.
        points: ``(N, 3)`` observation in the model's units and frame (up to ``pose``).
        n_shape: fit the first ``n_shape`` shape modes (default all).
        n_expr: fit the first ``n_expr`` expression modes (default 0: a neutral expression).
        pose: ``"none"``, ``"rigid"`` (R, t) or ``"similarity"`` (s, R, t).
        noise_mm: ``sigma``, the distance noise in mm; truncation_mm: ``tau`` in mm.
        prior_weight: ``lambda`` (1 = the model's N(0, I) prior).
        iterations: at most this many Gauss-Newton steps.
        tol: stop when ``E`` changes by less than ``tol * (1 + E)`` in one step.
        damping: Marquardt damping ``mu`` of the pose block.

    Returns:
        :class:`LinearFit` (tensors float64 on the device of ``points``).

    Raises:
        MorphableError: empty or non-finite points, bad ``n_shape``, ``n_expr`` or ``pose``.
    """
    if pose not in POSE_PARAMETERS:
        raise MorphableError(f"unknown pose {pose!r}: choose none, rigid or similarity")
    pts = torch.as_tensor(points)
    device = pts.device
    pts = pts.to(torch.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise MorphableError(f"points must have shape (N, 3) with N > 0, got {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise MorphableError("points contain NaN or infinite values")
    n_shape = model.n_shape if n_shape is None else n_shape
    if not (0 <= n_shape <= model.n_shape and 0 <= n_expr <= model.n_expr):
        raise MorphableError(f"n_shape {n_shape} / n_expr {n_expr} not in 0..{model.n_shape} / 0..{model.n_expr}")
    if not (noise_mm > 0 and truncation_mm > 0 and prior_weight >= 0):
        raise MorphableError("noise_mm and truncation_mm must be positive, prior_weight non-negative")
    to_unit = 1.0 / UNIT_TO_MM[model.unit]
    sigma2, tau = (noise_mm * to_unit) ** 2, truncation_mm * to_unit

    linear = model.torch_model(n_shape, n_expr, device=device)
    mu, modes = linear.mean, linear.basis
    K = len(modes)
    faces = torch.as_tensor(np.asarray(model.faces), dtype=torch.long, device=device)
    faces_np = faces.cpu().numpy()
    pts_np = pts.cpu().numpy()
    centre = mu.mean(dim=0)
    n_pose = POSE_PARAMETERS[pose]

    w = mu.new_zeros(K)
    R = torch.eye(3, dtype=torch.float64, device=device)
    t = mu.new_zeros(3)
    log_s = mu.new_zeros(())

    def posed(w_: torch.Tensor, R_: torch.Tensor, t_: torch.Tensor, log_s_: torch.Tensor) -> torch.Tensor:
        y = linear(w_)
        return torch.exp(log_s_) * (y - centre) @ R_.T + centre + t_

    energy: list[float] = []
    best: tuple[float, int, Any] | None = None
    for it in range(iterations + 1):
        vertices = posed(w, R, t, log_s)
        dist_np, tri_np, bary_np = closest_points(pts_np, vertices.cpu().numpy(), faces_np)
        dist = torch.as_tensor(dist_np, device=device)
        inlier = dist < tau
        e = float((torch.clamp(dist, max=tau).square().sum() / (2 * sigma2)
                   + 0.5 * prior_weight * w.square().sum()))
        energy.append(e)
        if best is None or e < best[0]:
            best = (e, it, (w.clone(), R.clone(), t.clone(), log_s.clone(), vertices, float(inlier.double().mean())))
        if it == iterations or (it > 0 and abs(energy[-2] - e) <= tol * (1 + e)):
            break
        tri = torch.as_tensor(tri_np, device=device)
        bary = torch.as_tensor(bary_np, device=device)
        corners = faces[tri[inlier]]  # (M, 3)
        b = bary[inlier]
        x = pts[inlier]
        tri_v = vertices[corners]  # (M, 3, 3)
        c = (b[:, :, None] * tri_v).sum(dim=1)
        normal = torch.nn.functional.normalize(
            torch.linalg.cross(tri_v[:, 1] - tri_v[:, 0], tri_v[:, 2] - tri_v[:, 0], dim=-1), dim=-1)
        r = (normal * (x - c)).sum(dim=1)  # (M,)
        mode_at = torch.einsum("mj,kmjc->kmc", b, modes[:, corners])  # (K, M, 3)
        scale = torch.exp(log_s)
        J = [-scale * torch.einsum("mc,kmc->mk", normal @ R, mode_at)]  # (M, K); (R^T n) . B_k
        if n_pose:
            p = c - centre - t
            J += [-torch.linalg.cross(p, normal, dim=-1), -normal]
            if pose == "similarity":
                J.append(-(normal * p).sum(dim=1, keepdim=True))
        J = torch.cat(J, dim=1)
        A = J.T @ J / sigma2
        g = J.T @ r / sigma2
        A[:K, :K] += prior_weight * torch.eye(K, dtype=torch.float64, device=device)
        g[:K] += prior_weight * w
        if n_pose:
            pose_diag = torch.diagonal(A)[K:]
            A[K:, K:] += torch.diag(damping * pose_diag + 1e-12)
        step = -torch.linalg.solve(A, g)
        w = w + step[:K]
        if n_pose:
            R = torch.linalg.matrix_exp(_skew(step[K:K + 3])) @ R
            t = t + step[K + 3:K + 6]
            if pose == "similarity":
                log_s = log_s + step[K + 6]
    assert best is not None
    e, it, (w, R, t, log_s, vertices, inliers) = best
    return LinearFit(w[:n_shape], w[n_shape:], R, t, float(torch.exp(log_s)), centre, vertices, energy, it, inliers)


def fit_linear_run(model_path: str | os.PathLike, points_path: str | os.PathLike, out: str | os.PathLike,
                   gt_path: str | os.PathLike | None = None, region_vertices: int | None = None,
                   n_vertices: int | None = None, n_shape: int | None = None, n_expr: int = 0, pose: Pose = "none",
                   noise_mm: float = 1.0, truncation_mm: float = 10.0, prior_weight: float = 1.0,
                   iterations: int = 30, metric_samples: int = METRIC_SAMPLES, unit: str | None = None,
                   overwrite: bool = False, device: str = "auto") -> dict[str, Any]:
    """Fit a linear model file (any format of :func:`~morphable.data.linear.load_linear_model`) to a point cloud
    and write the folder ``out``: ``fit.ply`` (the fitted mesh, model units), ``coefficients.safetensors``
    (``shape_coefficients (K_s,)``, ``expression_coefficients (K_e,)``, ``rotation``, ``translation``, ``scale``)
    and ``metrics.json`` (energies, iterations, ``fit_seconds``, inlier fraction, and with ``gt_path`` the
    ``{"face": ..., "head": ...}`` surface metrics of :func:`morphable.metrics.region_metrics`).

    ``n_vertices``: restrict the model to its first vertices (ICT-FaceKit: 11248, the outer skin);
    ``region_vertices``: ground-truth vertices ``0..N-1`` are the face region (ICT-FaceKit: 9409);
    ``metric_samples``: points per surface for the metrics (their nearest-neighbour distances have a
    sampling floor: about 0.7 mm Chamfer-L1 for an ICT head at 100k points, 0.23 mm at 1M);
    ``unit``: override the model's unit. A non-empty ``out`` is refused unless ``overwrite``; the folder is
    written under a temporary name and renamed at the end, so a failed call leaves nothing behind.
    """
    from morphable.data.linear import load_linear_model
    from morphable.io import atomic_folder, check_output_folder, read_mesh, save_weights, write_json, write_mesh
    from morphable.metrics import read_ground_truth, region_metrics

    out = check_output_folder(out, overwrite)
    model = load_linear_model(model_path, unit=unit)
    try:
        if n_vertices is not None:
            model = model.subset_vertices(n_vertices)
        model = model.truncate(n_shape, n_expr)
    except MorphableError as exc:
        raise input_error(model_path, str(exc)) from None
    cloud = read_mesh(points_path).vertices
    if len(cloud) == 0 or not np.isfinite(cloud).all():
        raise input_error(points_path, "the point cloud is empty or has NaN/infinite coordinates")
    gt, mask = read_ground_truth(gt_path, region_vertices)
    started = time.perf_counter()
    from morphable.train import select_device

    points = torch.from_numpy(cloud).to(select_device(device))
    result = fit_linear_model(model, points, n_expr=model.n_expr, pose=pose, noise_mm=noise_mm,
                              truncation_mm=truncation_mm, prior_weight=prior_weight, iterations=iterations)
    seconds = time.perf_counter() - started
    vertices = result.vertices.cpu().numpy()
    metrics: dict[str, Any] = {"energy_first": result.energy[0], "energy_last": result.energy[result.best_iteration],
                               "iterations": len(result.energy) - 1, "inlier_fraction": result.inlier_fraction,
                               "fit_seconds": round(seconds, 3), "shape_modes": model.n_shape,
                               "expression_modes": model.n_expr}
    if gt is not None:
        metrics.update(region_metrics((vertices, model.faces), (gt.vertices, gt.faces), mask,
                                      UNIT_TO_MM[model.unit], n_samples=metric_samples))
        metrics["metric_samples"] = metric_samples
    with atomic_folder(out) as folder:
        write_mesh(folder / "fit.ply", vertices, model.faces)
        save_weights(folder / "coefficients.safetensors",
                     {"shape_coefficients": result.shape_coefficients.cpu(),
                      "expression_coefficients": result.expression_coefficients.cpu(),
                      "rotation": result.rotation.cpu(), "translation": result.translation.cpu(),
                      "scale": torch.tensor(result.scale)},
                     {"model": str(model_path), "pose": pose, "unit": model.unit})
        write_json(folder / "metrics.json", metrics)
    return metrics
