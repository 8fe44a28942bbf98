"""Fitting an identity code of a trained implicit model to a single-view depth point cloud (thesis 4.4).

With the network frozen, the code ``z`` (zero-initialised) minimises equation (4.23) for a neutral
observation ``X_p`` (N points, normalised units), with robust truncation of the residuals:

    E(z) = mean_i min(|f(x_i, z)|, tau) + lambda |z|^2

Residuals above ``tau`` (outliers: points the model cannot explain, stray depth pixels) then give no
gradient. Adam with learning rate 0.01 (NPHM), ``steps`` iterations. The thesis gives no value for
``lambda_id^fit``; the default 1e-4 (on the mean residual) is our choice, as is ``tau`` = 0.05.

``fit_run`` then extracts the mesh of the fitted code and, given a ground-truth mesh, reports the
NPHM surface metrics (:func:`morphable.metrics.region_metrics`, in mm) for the face region and the
whole head.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from morphable.errors import input_error
from morphable.metrics import METRIC_SAMPLES, read_ground_truth, region_metrics


def fit_code(field_fn, latent_dim: int, points: torch.Tensor, steps: int = 1000, lr: float = 0.01,
             truncation: float = 0.05, code_weight: float = 1e-4) -> tuple[torch.Tensor, list[float]]:
    """Minimise ``mean_i min(|f(x_i, z)|, tau) + code_weight |z|^2`` over ``z`` from ``z = 0``.

    field_fn: ``(codes (1, Z), points (1, N, 3)) -> sdf (1, N)`` (a frozen network);
    points: (N, 3) normalised observation. Returns the code (Z,) and the energy per step.
    """
    code = torch.zeros(1, latent_dim, device=points.device, dtype=points.dtype, requires_grad=True)
    optimiser = torch.optim.Adam([code], lr=lr)
    x = points.unsqueeze(0)
    history = []
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        residual = field_fn(code, x).abs().clamp(max=truncation).mean()
        energy = residual + code_weight * code.square().sum()
        energy.backward()
        optimiser.step()
        history.append(float(energy.detach()))
    return code.detach()[0], history


def fit_run(run_path: str | os.PathLike, points_path: str | os.PathLike, out: str | os.PathLike,
            gt_path: str | os.PathLike | None = None, region_vertices: int | None = None, steps: int = 1000,
            resolution: int = 256, device: str = "auto", metric_samples: int = METRIC_SAMPLES) -> dict[str, Any]:
    """Fit a code of the run's model to a point cloud (source units of its training data), write
    ``code.safetensors``, ``fit.ply`` (the extracted mesh, source units), ``fit.png`` (it, beside the ground
    truth when given) and ``metrics.json`` (fit energy,
    seconds, and with ``gt_path`` the face/head metrics) into ``out``; returns the metrics."""
    from morphable.implicit.experiment import load
    from morphable.io import UNIT_TO_MM, atomic_folder, read_mesh, save_weights, write_json, write_mesh
    from morphable.runs import Run
    from morphable.viz import mesh_strip

    model = load(Run.open(run_path), device)
    cloud = read_mesh(points_path).vertices
    gt, mask = read_ground_truth(gt_path, region_vertices)
    started = time.perf_counter()
    code, history = model.fit(cloud, steps, source=str(points_path))
    fit_seconds = time.perf_counter() - started
    vertices, faces = model.extract(code, resolution)
    if len(faces) == 0:
        raise input_error(points_path, "the fitted code has no surface inside the unit ball")
    metrics: dict[str, Any] = {"energy_first": history[0], "energy_last": history[-1], "steps": steps,
                               "fit_seconds": round(fit_seconds, 3)}
    if gt is not None:
        metrics.update(region_metrics((vertices, faces), (gt.vertices, gt.faces), mask, UNIT_TO_MM[model.unit],
                                      n_samples=metric_samples))
        metrics["metric_samples"] = metric_samples
    with atomic_folder(out) as folder:
        save_weights(folder / "code.safetensors", {"code": code.cpu()}, {"run": str(model.run.path)})
        write_mesh(folder / "fit.ply", vertices, faces)
        shown = [(vertices, faces)] + ([(gt.vertices, gt.faces)] if gt is not None else [])
        mesh_strip(folder / "fit.png", shown, ["fitted", "ground truth"][:len(shown)], columns=2)
        write_json(folder / "metrics.json", metrics)
    return metrics
