"""Evaluation of reconstructions of registered meshes, written into a run folder.

``evaluate_reconstructions`` turns predictions and targets ``(N, V, 3)`` into the CoMA metrics
(mean, std, median per-vertex error in mm), a per-expression table, the cumulative error curve, an
error heat-map picture of a few test meshes and PLY meshes coloured by error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from morphable.io import write_ply
from morphable.metrics import cumulative_error_curve, error_summary, per_vertex_errors
from morphable.runs import Run

CURVE_POINTS = 101


def curve_thresholds(errors_mm: np.ndarray) -> np.ndarray:
    """Thresholds from 0 to a round number above the 99th percentile of the errors."""
    top = float(np.percentile(errors_mm, 99)) * 1.2
    step = 10 ** np.floor(np.log10(max(top, 1e-6)))
    top = np.ceil(top / step) * step
    return np.linspace(0.0, top, CURVE_POINTS)


def per_label_table(errors_mm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, std and median error of the meshes of each label (e.g. expression)."""
    table = {}
    labels = np.asarray(labels)
    for label in sorted(set(labels.tolist())):
        if label:
            e = errors_mm[labels == label]
            table[label] = {k: v for k, v in error_summary(e).items() if k in ("mean_mm", "std_mm", "median_mm")}
    return table


def evaluate_reconstructions(run: Run, name: str, pred: np.ndarray, target: np.ndarray, faces: np.ndarray,
                             to_mm: float, expressions: Sequence[str], titles: Sequence[str],
                             n_show: int = 6) -> dict:
    """Metrics of ``pred`` vs ``target`` ``(N, V, 3)``, with plots and coloured meshes in the run folder.

    Returns the summary dict (``mean_mm``, ``std_mm``, ``median_mm``, ``max_mm``, ``n_meshes``,
    ``per_expression``, ``curve``).
    """
    from morphable.viz import error_colors, mesh_grid

    errors = per_vertex_errors(pred, target, to_mm)
    summary = error_summary(errors)
    summary["per_expression"] = per_label_table(errors, expressions)
    thresholds = curve_thresholds(errors)
    summary["curve"] = {"thresholds_mm": thresholds.round(6).tolist(),
                        "fraction": cumulative_error_curve(errors, thresholds).round(6).tolist()}
    show = np.unique(np.linspace(0, len(pred) - 1, min(n_show, len(pred))).round().astype(int))
    vmax = float(np.percentile(errors, 99))
    mesh_grid(run.file("plots", f"{name}_error_heatmaps.png"), [pred[i] for i in show], faces,
              titles=[titles[i] for i in show], values=[errors[i] for i in show], vmax=vmax,
              colorbar_label="per-vertex error (mm)", suptitle=f"{name}: reconstructions coloured by error")
    for i in show:
        write_ply(run.file("meshes", f"{name}_{i:05d}_error.ply"), pred[i], faces, error_colors(errors[i], vmax))
    return summary
