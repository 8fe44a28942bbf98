"""Baselines for single-image reconstruction, scored beside VRN: the mean face placed by the 68 landmarks.

The mean face is the mean shape of the training photos' ground-truth meshes in the model frame
(``X = R^T (X_c - t)`` with each photo's pose): what a method that ignores the photo's identity and expression
would predict. It is placed by a scaled-orthographic fit of its 68 landmark vertices ``L (68, 3)`` to the crop's
68 landmarks ``l (68, 2)``: the least-squares affine ``l ~ P [L, 1]`` (``P (2, 4)``), whose 2 x 3 part ``M`` is
projected onto ``s [r_1; r_2]`` (orthonormal rows, by the SVD ``M = U S V^T`` -> ``U V^T``, ``s`` the mean
singular value), ``r_3 = r_1 x r_2``; a vertex ``X`` goes to ``(P [X, 1], s r_3 (X - Lbar))`` in the crop
frame, ``Lbar`` the landmarks' centroid (the crop frame's depth 0 is the landmarks' mean depth).
"""

from __future__ import annotations

import numpy as np


def mean_face(dataset, indices) -> np.ndarray:
    """``(V, 3)`` the mean model-frame shape of the ground-truth meshes of ``indices``."""
    total = None
    for i in indices:
        pose = dataset.annotations["pose"][i]
        model = (dataset.mesh(i).astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]
        total = model if total is None else total + model
    return total / len(indices)


def place_by_landmarks(vertices: np.ndarray, landmark_vertices: np.ndarray, landmarks_2d: np.ndarray) -> np.ndarray:
    """``vertices (V, 3)`` placed in a crop frame by the scaled-orthographic fit of the module docstring to the
    ``landmarks_2d (68, 2)`` crop pixels of ``vertices[landmark_vertices]``; ``(V, 3)``."""
    L = vertices[landmark_vertices]
    design = np.column_stack([L, np.ones(len(L))])
    P = np.linalg.lstsq(design, landmarks_2d, rcond=None)[0].T  # (2, 4)
    U, S, Vt = np.linalg.svd(P[:, :3], full_matrices=False)
    rows = U @ Vt
    s = float(S.mean())
    r3 = np.cross(rows[0], rows[1])
    xy = s * vertices @ rows.T + P[:, 3]
    return np.column_stack([xy, s * (vertices - L.mean(axis=0)) @ r3])
