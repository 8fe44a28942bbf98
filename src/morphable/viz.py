"""Pictures for people: cumulative error curves, meshes shaded or coloured by per-vertex error.

Meshes are drawn with matplotlib only (no GL): an orthographic camera looking down -z at the
x-right / y-up plane after a yaw rotation, back faces culled, faces painted far-to-near, Lambert
shaded. That is enough to see a face, an expression or where the error is, for ~10k triangles in
well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

ERROR_CMAP = "jet"
PREVIEW_FILE = "preview.png"


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a 110-dpi PNG atomically (no half-written file) and close it."""
    from morphable.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    pyplot().close(fig)


def error_colors(errors_mm: np.ndarray, vmax_mm: float, cmap: str = ERROR_CMAP) -> np.ndarray:
    """Per-vertex RGB uint8 ``(V, 3)`` for errors in mm, clipped at ``vmax_mm``."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(errors_mm) / max(vmax_mm, 1e-12), 0.0, 1.0))
    return (rgba[:, :3] * 255).round().astype(np.uint8)


def _yaw(vertices: np.ndarray, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return vertices @ rot.T


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, values: np.ndarray | None = None,
              vmax: float | None = None, cmap: str = ERROR_CMAP, yaw: float = 0.0,
              base_color: Sequence[float] = (0.85, 0.75, 0.68)) -> None:
    """Draw a mesh on a matplotlib axis.

    Args:
        vertices: ``(V, 3)``; faces ``(F, 3)``.
        values: optional per-vertex scalars ``(V,)`` shown with ``cmap`` in ``[0, vmax]``; otherwise
            a skin colour.
        yaw: rotation about the y axis in degrees before projecting along z.
    """
    import matplotlib
    from matplotlib.collections import PolyCollection

    v = _yaw(np.asarray(vertices, dtype=np.float64) - np.asarray(vertices).mean(axis=0), yaw)
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    visible = normals[:, 2] > 0
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = 0.35 + 0.65 * np.clip(normals @ light, 0, 1)
    if values is not None:
        vmax = float(np.max(values)) if vmax is None else vmax
        face_values = np.asarray(values)[faces].mean(axis=1) / max(vmax, 1e-12)
        colors = matplotlib.colormaps[cmap](np.clip(face_values, 0, 1))[:, :3]
    else:
        colors = np.tile(np.asarray(base_color, dtype=np.float64), (len(faces), 1))
    colors = colors * shade[:, None]
    order = np.argsort(tri[:, :, 2].mean(axis=1))
    order = order[visible[order]]
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors[order], edgecolors=colors[order],
                                     linewidths=0.3))
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    pad = 0.03 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.axis("off")


def mesh_grid(path: str | os.PathLike, meshes: Sequence[np.ndarray], faces: np.ndarray,
              titles: Sequence[str] | None = None, values: Sequence[np.ndarray] | None = None,
              vmax: float | None = None, columns: int = 6, yaw: float = 0.0, colorbar_label: str = "",
              suptitle: str = "") -> None:
    """Save a grid of meshes (optionally coloured by per-vertex values) as a PNG."""
    plt = pyplot()
    n = len(meshes)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    height = 2.5 * rows + (0.5 if suptitle else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, height), squeeze=False)
    fig.subplots_adjust(top=1 - 0.75 / height, bottom=0.02, left=0.02, right=0.85 if values is not None else 0.98)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        draw_mesh(ax, meshes[i], faces, None if values is None else values[i], vmax=vmax, yaw=yaw)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if values is not None:
        import matplotlib

        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, vmax), ERROR_CMAP)
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.6, label=colorbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    save_figure(fig, path)


def cumulative_error_plot(path: str | os.PathLike, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                          title: str = "Cumulative per-vertex error") -> None:
    """Plot ``name -> (thresholds_mm, fraction)`` curves like CoMA / Deep3DMM Fig. 1, as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (t, frac) in curves.items():
        ax.plot(t, 100 * np.asarray(frac), label=name)
    ax.set_xlabel("error threshold (mm)")
    ax.set_ylabel("% of vertices within threshold")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def mesh_strip(path: str | os.PathLike, meshes: Sequence[tuple[np.ndarray, np.ndarray] | None],
               titles: Sequence[str], columns: int = 8) -> None:
    """Save meshes of different topologies (``(vertices (V_i, 3), faces (F_i, 3))`` or None for an empty
    panel) side by side as a PNG, all drawn at one scale (so sizes compare), frontal view along -z."""
    plt = pyplot()
    n = len(meshes)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    extents = [np.abs(v[:, :2] - v.mean(axis=0)[:2]).max() for v, _ in (m for m in meshes if m is not None)]
    half = 1.03 * max(extents, default=1.0)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        if meshes[i] is not None:
            draw_mesh(ax, *meshes[i])
            ax.set_xlim(-half, half)
            ax.set_ylim(-half, half)
        ax.set_title(titles[i] if meshes[i] is not None else f"{titles[i]} (empty)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def loss_curves(log_path: str | os.PathLike, path: str | os.PathLike, title: str = "losses") -> None:
    """Plot every ``train_*`` / ``val_*`` column of a training ``log.csv`` against the epoch (log scale where
    all values are positive), one panel per loss, plus the learning rates (``lr*`` columns), as a PNG; where
    the ``stage`` column changes, a dashed line marks the boundary in every panel."""
    import csv

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    columns = [c for c in rows[0] if c != "epoch" and c != "seconds"]
    epochs = np.array([float(r["epoch"]) for r in rows])
    names = sorted({c.split("_", 1)[1] for c in columns if c.startswith(("train_", "val_"))})
    lrs = [c for c in columns if c.startswith("lr")]
    stages = [r.get("stage", "") for r in rows]
    boundaries = [0.5 * (epochs[i - 1] + epochs[i]) for i in range(1, len(rows)) if stages[i] != stages[i - 1]]
    panels = names + (["learning rate"] if lrs else [])
    plt = pyplot()
    cols = min(4, len(panels))
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.6 * n_rows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels):
        series = lrs if panel == "learning rate" else [c for c in (f"train_{panel}", f"val_{panel}") if c in columns]
        for column in series:
            values = np.array([float(r[column]) if r.get(column) not in (None, "") else np.nan for r in rows])
            ax.plot(epochs, values, label=column)
            if np.isfinite(values).any() and np.nanmin(values) > 0:
                ax.set_yscale("log")
        for boundary in boundaries:
            ax.axvline(boundary, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def dataset_preview(out_dir: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, subjects: Sequence[str],
                    expressions: Sequence[str], title: str) -> Path:
    """``out_dir/preview.png``: a grid with the most expressive frame of every expression of the first subject,
    then the first frame of up to six other subjects. ``vertices (N, V, 3)``, one subject and expression per mesh."""
    subjects_arr, expressions_arr = np.asarray(subjects), np.asarray(expressions)
    first = subjects_arr == subjects_arr[0]
    picks, titles = [], []
    for name in sorted(set(expressions)):
        idx = np.nonzero(first & (expressions_arr == name))[0]
        peak = idx[int(np.argmax(np.abs(vertices[idx] - vertices[idx[0]]).sum(axis=(1, 2))))]
        picks.append(peak)
        titles.append(f"{subjects[peak]}\n{name}")
    for s in sorted(set(subjects))[1:7]:
        idx = np.nonzero(subjects_arr == s)[0][0]
        picks.append(idx)
        titles.append(f"{s}\n{expressions[idx]} frame 0")
    path = Path(out_dir) / PREVIEW_FILE
    mesh_grid(path, [vertices[i] for i in picks], faces, titles=titles, columns=6, suptitle=title)
    return path
