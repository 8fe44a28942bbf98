"""Baselines for single-image reconstruction, scored beside VRN: the mean face placed by the 68 landmarks, and
a linear 3DMM fitted to them (the EOS row of VRN's Table 1).

The mean face is the mean shape of the training photos' ground-truth meshes in the model frame
(``X = R^T (X_c - t)`` with each photo's pose): what a method that ignores the photo's identity and expression
would predict. It is placed by a scaled-orthographic fit of its 68 landmark vertices ``L (68, 3)`` to the crop's
68 landmarks ``l (68, 2)``: the least-squares affine ``l ~ P [L, 1]`` (``P (2, 4)``), whose 2 x 3 part ``M`` is
projected onto ``s [r_1; r_2]`` (orthonormal rows, by the SVD ``M = U S V^T`` -> ``U V^T``, ``s`` the mean
singular value), ``r_3 = r_1 x r_2``; a vertex ``X`` goes to ``(P [X, 1], s r_3 (X - Lbar))`` in the crop
frame, ``Lbar`` the landmarks' centroid (the crop frame's depth 0 is the landmarks' mean depth).

The linear fit (:func:`fit_linear_to_landmarks`) alternates that pose with the coefficients ``c`` (standard-
deviation units) of ``X(c) = mean + sum_k c_k B_k``, which given the pose are the regularised least squares

    min_c  sum_j ||l_j - s R_2 X_j(c) - t||^2 / sigma^2 + ||c||^2

over the 68 landmark vertices (``R_2`` the pose's first two rows, ``sigma`` the landmarks' noise in crop
pixels), as EOS fits a 3DMM's shape to landmarks; the fitted shape is then placed like the mean face.
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


def linear_basis(model, topology: dict) -> tuple[np.ndarray, np.ndarray]:
    """A :class:`~morphable.data.linear.LinearFaceModel` restricted to a photo dataset's rendered vertices
    (``topology["source_vertex"]``): ``mean (V, 3)`` and ``basis (K, V, 3)``, the shape then the expression
    modes, each times its standard deviation."""
    from morphable.errors import MorphableError

    source = np.asarray(topology["source_vertex"])
    if source.max() >= model.n_vertices:
        raise MorphableError(f"the linear model has {model.n_vertices} vertices; the photos index vertex "
                             f"{int(source.max())}")
    modes = np.concatenate([model.shape_basis * model.shape_std[:, None, None],
                            model.expression_basis * model.expression_std[:, None, None]])
    return model.mean[source], modes[:, source]


def scaled_orthographic_pose(points: np.ndarray, landmarks_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fit of the module docstring of 3D ``points (68, 3)`` to ``landmarks_2d (68, 2)``: ``M = s [r_1; r_2]``
    ``(2, 3)``, the offset ``t (2,)`` and the scaled depth axis ``s r_3 (3,)``."""
    P = np.linalg.lstsq(np.column_stack([points, np.ones(len(points))]), landmarks_2d, rcond=None)[0].T  # (2, 4)
    U, S, Vt = np.linalg.svd(P[:, :3], full_matrices=False)
    rows, s = U @ Vt, float(S.mean())
    return s * rows, P[:, 3], s * np.cross(rows[0], rows[1])


def place_by_landmarks(vertices: np.ndarray, landmark_vertices: np.ndarray, landmarks_2d: np.ndarray) -> np.ndarray:
    """``vertices (V, 3)`` placed in a crop frame by the scaled-orthographic fit of the module docstring to the
    ``landmarks_2d (68, 2)`` crop pixels of ``vertices[landmark_vertices]``; ``(V, 3)``."""
    L = vertices[landmark_vertices]
    M, t, depth_axis = scaled_orthographic_pose(L, landmarks_2d)
    return np.column_stack([vertices @ M.T + t, (vertices - L.mean(axis=0)) @ depth_axis])


def fit_linear_to_landmarks(mean: np.ndarray, basis: np.ndarray, landmark_vertices: np.ndarray,
                            landmarks_2d: np.ndarray, sigma: float = 1.5, iterations: int = 6) -> np.ndarray:
    """``mean (V, 3)`` and ``basis (K, V, 3)`` (modes times their deviations) fitted to ``landmarks_2d (68, 2)``
    crop pixels by the alternation of the module docstring, ``iterations`` rounds; the fitted shape placed in
    the crop frame, ``(V, 3)``."""
    B = basis[:, landmark_vertices]  # (K, 68, 3)
    mean_L = mean[landmark_vertices]
    c = np.zeros(len(basis))
    for _ in range(iterations):
        M, t, _ = scaled_orthographic_pose(mean_L + np.tensordot(c, B, axes=1), landmarks_2d)
        design = np.einsum("rc,kjc->jrk", M, B).reshape(-1, len(basis))  # (68 * 2, K): d(projection)/dc
        residual = (landmarks_2d - t - mean_L @ M.T).reshape(-1)
        c = np.linalg.solve(design.T @ design / sigma ** 2 + np.eye(len(basis)), design.T @ residual / sigma ** 2)
    return place_by_landmarks(mean + np.tensordot(c, basis, axes=1), landmark_vertices, landmarks_2d)
