"""Metrics: mesh and surface errors in millimetres; image metrics normalised (NME) or in millimetres.

Registered meshes (CoMA protocol):
    e[n, v] = || pred[n, v] - target[n, v] ||_2 * to_mm
    mean / std / median over all N*V per-vertex errors (a true median, not a mean of medians),
    cumulative error curve  C(t) = #{e <= t} / (N*V).

Surfaces (NPHM protocol): points sampled on both surfaces, Euclidean nearest-neighbour distances:
    accuracy     = mean_{p in pred} min_{q in gt} ||p - q||
    completeness = mean_{q in gt}   min_{p in pred} ||p - q||
    Chamfer-L1   = (accuracy + completeness) / 2
    normal consistency = mean of |<n_p, n_nn(p)>| over both directions
    F-score@t    = 2 P R / (P + R), P = share of pred points within t of gt, R the reverse.
Meshes are compared through :data:`METRIC_SAMPLES` area-weighted samples of each
(:func:`region_metrics`, for the face region and the whole head).

Single-image reconstructions (docs/images.md, "Image metrics"):
    2D landmark NME   e_n = (1/|V_n|) sum_{i in V_n} ||p_ni - g_ni|| / d_n    (:func:`landmark_nme`),
                      d_n = outer inter-ocular distance ||g_n,36 - g_n,45|| or sqrt(w_n h_n) of the GT box;
    3D NME (VRN)      mean_{q in gt} min_{p in T(pred)} ||p - q|| / ||e_1 - e_2||    (:func:`nme_3d`),
                      T the rigid / similarity ICP of the prediction onto the GT, e the GT outer eye corners;
    point-to-plane    |<q - p_j, n_j>| * to_mm for every GT point q, p_j its nearest vertex of the aligned
                      prediction and n_j that vertex's normal, or the exact distance to the predicted
                      triangles; mean and median in mm    (:func:`point_to_plane_distance`, HRN / MICC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from morphable.errors import MorphableError, input_error
from morphable.mesh.icp import Init, SimilarityTransform, icp, points3


def per_vertex_errors(pred: np.ndarray, target: np.ndarray, to_mm: float) -> np.ndarray:
    """Euclidean per-vertex errors in mm: ``pred, target (N, V, 3)`` -> ``(N, V)``."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")
    return np.linalg.norm(pred - target, axis=-1) * to_mm


def error_summary(errors_mm: np.ndarray) -> dict[str, float]:
    """``mean_mm``, ``std_mm``, ``median_mm``, ``max_mm`` of all per-vertex errors ``(N, V)``."""
    e = np.asarray(errors_mm, dtype=np.float64).ravel()
    return {
        "mean_mm": float(e.mean()),
        "std_mm": float(e.std()),
        "median_mm": float(np.median(e)),
        "max_mm": float(e.max()),
        "n_meshes": int(np.asarray(errors_mm).shape[0]),
    }


def cumulative_error_curve(errors_mm: np.ndarray, thresholds_mm: np.ndarray) -> np.ndarray:
    """Fraction of per-vertex errors ``<= t`` for each threshold: ``(T,)`` in [0, 1]."""
    e = np.sort(np.asarray(errors_mm, dtype=np.float64).ravel())
    return np.searchsorted(e, np.asarray(thresholds_mm, dtype=np.float64), side="right") / e.size


def nearest_neighbours(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance and index of the nearest ``reference (M, 3)`` point to each ``query (N, 3)`` point."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(np.asarray(reference, dtype=np.float64)).query(
        np.asarray(query, dtype=np.float64), k=1, workers=-1)
    return distance, index


def surface_metrics(pred_points: np.ndarray, pred_normals: np.ndarray | None, gt_points: np.ndarray,
                    gt_normals: np.ndarray | None, to_mm: float, thresholds_mm: tuple[float, ...] = (1.0,)
                    ) -> dict[str, float]:
    """Chamfer-L1, normal consistency and F-scores between two point sets sampled on surfaces.

    Args:
        pred_points, gt_points: ``(N, 3)`` and ``(M, 3)`` points in the data's unit.
        pred_normals, gt_normals: unit normals of the points, or None to skip normal consistency.
        to_mm: unit -> millimetres factor.
        thresholds_mm: F-score thresholds; keys ``fscore_<t>mm``.
    """
    d_pred, i_pred = nearest_neighbours(pred_points, gt_points)
    d_gt, i_gt = nearest_neighbours(gt_points, pred_points)
    d_pred, d_gt = d_pred * to_mm, d_gt * to_mm
    out = {
        "accuracy_mm": float(d_pred.mean()),
        "completeness_mm": float(d_gt.mean()),
        "chamfer_l1_mm": float((d_pred.mean() + d_gt.mean()) / 2),
    }
    if pred_normals is not None and gt_normals is not None:
        dot_pred = np.abs(np.sum(pred_normals * gt_normals[i_pred], axis=1))
        dot_gt = np.abs(np.sum(gt_normals * pred_normals[i_gt], axis=1))
        out["normal_consistency"] = float((dot_pred.mean() + dot_gt.mean()) / 2)
    for t in thresholds_mm:
        precision = float((d_pred <= t).mean())
        recall = float((d_gt <= t).mean())
        score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out[f"fscore_{t:g}mm"] = score
    return out


METRIC_SAMPLES = 1_000_000
"""Surface samples per mesh for the metrics. The metrics have a floor that depends on the sample count: a
perfect reconstruction of an ICT-FaceKit head scores Chamfer-L1 0.72 mm at 100k samples, 0.31 mm at 500k
and 0.23 mm at 1M. The thesis samples 2.5M."""


def region_metrics(pred: tuple[np.ndarray, np.ndarray], gt: tuple[np.ndarray, np.ndarray],
                   gt_region_mask: np.ndarray | None, to_mm: float, n_samples: int = METRIC_SAMPLES,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """``{"face": ..., "head": ...}`` :func:`surface_metrics` of a predicted mesh against a ground-truth mesh.

    Both meshes are sampled with :func:`morphable.mesh.sampling.sample_surface` (seeds ``seed`` and
    ``seed + 1``), with the face normals of the sampled triangles (as NPHM's evaluation).

    Args:
        pred, gt: ``(vertices (V, 3), faces (F, 3))`` in the same unit.
        gt_region_mask: ``(V_gt,)`` face-region vertices (a gt triangle is in the face region when at
            least two corners are); None: the whole mesh. The face region of the prediction is the set
            of its samples whose nearest gt sample is a face sample.
        to_mm: unit -> millimetres factor.
        n_samples: samples per mesh.
    """
    from morphable.mesh.sampling import sample_surface
    from morphable.mesh.topology import face_region

    p = sample_surface(*pred, n_samples, seed)
    g = sample_surface(*gt, n_samples, seed + 1)
    g_face = np.ones(len(g.points), bool) if gt_region_mask is None else face_region(gt[1], gt_region_mask)[g.face_ids]
    return sampled_region_metrics(p.points, p.face_normals, g.points, g.face_normals, g_face, to_mm)


def sampled_region_metrics(pred_points: np.ndarray, pred_normals: np.ndarray, gt_points: np.ndarray,
                           gt_normals: np.ndarray, gt_face: np.ndarray, to_mm: float) -> dict[str, dict[str, float]]:
    """``{"face": ..., "head": ...}`` :func:`surface_metrics` of surface samples: ``pred_points (N, 3)``,
    ``gt_points (M, 3)`` with unit normals, ``gt_face (M,)`` bool the ground truth's face-region samples. The
    face region of the prediction is the set of its samples whose nearest ground-truth sample is a face sample."""
    out = {"head": surface_metrics(pred_points, pred_normals, gt_points, gt_normals, to_mm)}
    _, nearest = nearest_neighbours(pred_points, gt_points)
    p_face = gt_face[nearest]
    out["face"] = surface_metrics(pred_points[p_face], pred_normals[p_face], gt_points[gt_face], gt_normals[gt_face],
                                  to_mm)
    return out


def read_ground_truth(gt_path: str | os.PathLike | None, region_vertices: int | None):
    """The ground-truth mesh of ``--gt`` (or None) and its face-region mask ``(V',)`` (vertices
    ``0..region_vertices-1`` of the file; None: the whole mesh), checked before any work is done.

    The mesh is repaired (:func:`morphable.mesh.repair.repair_and_warn`, one warning line when it has
    defects): duplicate faces would weigh twice in the surface samples, degenerate ones and unreferenced
    vertices are dropped (the mask follows the vertex map); orientation does not matter to the metrics."""
    from morphable.io import Mesh, read_mesh
    from morphable.mesh.repair import repair_and_warn

    if gt_path is None:
        return None, None
    gt = read_mesh(gt_path)
    if region_vertices is not None and not 0 < region_vertices <= len(gt.vertices):
        raise input_error(gt_path, f"--region-vertices {region_vertices} is not in 1..{len(gt.vertices)}")
    repaired = repair_and_warn(str(gt_path), gt.vertices, gt.faces, "metrics use the repaired mesh", orient=False)
    if len(repaired.faces) == 0:
        raise input_error(gt_path, "the mesh has no face with a non-zero area")
    mesh = Mesh(repaired.vertices, repaired.faces)
    if region_vertices is None:
        return mesh, None
    return mesh, repaired.vertex_map < region_vertices


IBUG_OUTER_EYE_CORNERS = (36, 45)
"""0-based iBUG-68 indices of the outer eye corners (the subject's right eye's, then the left eye's)."""

Normalisation = Literal["inter_ocular", "bbox"]
Alignment = Literal["rigid", "similarity", "none"]
PlaneMethod = Literal["vertex_plane", "triangle"]


@dataclass(frozen=True)
class LandmarkNME:
    """Normalised mean errors of :func:`landmark_nme`: ``per_image (N,)`` and their mean."""

    per_image: np.ndarray
    mean: float


def _landmarks_2d(x: np.ndarray, what: str) -> np.ndarray:
    """``(L, 2)`` or ``(N, L, 2)`` finite landmarks as ``(N, L, 2)`` float64."""
    a = np.asarray(x, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    if a.ndim != 3 or a.shape[2] != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise MorphableError(f"{what} landmarks must have shape (L, 2) or (N, L, 2), got {np.shape(x)}")
    if not np.isfinite(a).all():
        raise MorphableError(f"{what} landmarks have NaN or infinite coordinates")
    return a


def landmark_nme(pred: np.ndarray, gt: np.ndarray, normalisation: Normalisation = "inter_ocular",
                 visible: np.ndarray | None = None) -> LandmarkNME:
    """2D landmark normalised mean error, per image and over images.

    ``e_n = (1 / |V_n|) sum_{i in V_n} ||p_ni - g_ni||_2 / d_n`` over the landmarks ``V_n`` visible in
    image ``n`` (all when ``visible`` is None), and ``mean = (1/N) sum_n e_n``. The normaliser comes from
    the ground truth alone, from all its landmarks (visible or not):

    * ``"inter_ocular"``: ``d_n = ||g_n,36 - g_n,45||``, the outer eye corners of the iBUG-68 scheme
      (300-W's inter-ocular NME; not the inter-pupil distance). Needs ``L = 68``.
    * ``"bbox"``: ``d_n = sqrt(w_n h_n)`` with ``w_n, h_n`` the width and height of the axis-aligned
      bounding box of the GT landmarks (the AFLW2000-3D / 3DDFA convention); any ``L``.

    Args:
        pred, gt: ``(N, L, 2)`` or ``(L, 2)`` pixel coordinates (the same shape).
        normalisation: ``"inter_ocular"`` or ``"bbox"``.
        visible: ``(N, L)`` or ``(L,)`` booleans, the landmarks that count; None: all.

    Returns:
        :class:`LandmarkNME` (``per_image`` has ``N = 1`` for ``(L, 2)`` input).

    Raises:
        MorphableError: shapes differ, NaN, an unknown normalisation, a zero normaliser, or an image
            without a visible landmark.
    """
    p, g = _landmarks_2d(pred, "predicted"), _landmarks_2d(gt, "ground-truth")
    if p.shape != g.shape:
        raise MorphableError(f"predicted and ground-truth landmarks differ in shape: {p.shape} vs {g.shape}")
    if normalisation == "inter_ocular":
        if g.shape[1] != 68:
            raise MorphableError(f"inter-ocular normalisation needs the 68 iBUG landmarks, got {g.shape[1]}")
        d = np.linalg.norm(g[:, IBUG_OUTER_EYE_CORNERS[0]] - g[:, IBUG_OUTER_EYE_CORNERS[1]], axis=1)
    elif normalisation == "bbox":
        extent = g.max(axis=1) - g.min(axis=1)
        d = np.sqrt(extent[:, 0] * extent[:, 1])
    else:
        raise MorphableError(f"unknown normalisation {normalisation!r} (expected 'inter_ocular' or 'bbox')")
    if not (d > 0).all():
        raise MorphableError(f"image {int(np.argmin(d > 0))}: the {normalisation} normaliser of the ground truth is 0")
    mask = np.ones(g.shape[:2], bool) if visible is None else np.asarray(visible)
    if mask.dtype != bool or mask.shape not in (g.shape[:2], g.shape[1:2]):
        raise MorphableError(f"visible must be booleans of shape {g.shape[:2]} or {g.shape[1:2]}, "
                             f"got {mask.dtype} {mask.shape}")
    mask = np.broadcast_to(mask, g.shape[:2])
    count = mask.sum(axis=1)
    if (count == 0).any():
        raise MorphableError(f"image {int(np.argmin(count))} has no visible landmark")
    per_image = (np.linalg.norm(p - g, axis=2) * mask).sum(axis=1) / count / d
    return LandmarkNME(per_image, float(per_image.mean()))


def _select_points(points: np.ndarray, spec: np.ndarray, what: str) -> np.ndarray:
    """``spec`` as coordinates: ``(L,)`` integer indices into ``points (N, 3)``, or ``(L, 3)`` coordinates."""
    a = np.asarray(spec)
    if a.ndim == 1 and np.issubdtype(a.dtype, np.integer):
        if ((a < 0) | (a >= len(points))).any():
            raise MorphableError(f"{what}: indices must be in 0..{len(points) - 1}")
        return points[a]
    return points3(a, what)


def align_prediction(pred_points: np.ndarray, gt_points: np.ndarray, *, alignment: Alignment = "rigid",
                     init: Init = "centroid", pred_landmarks: np.ndarray | None = None,
                     gt_landmarks: np.ndarray | None = None,
                     reject_distance: float | None = None) -> SimilarityTransform:
    """The transform that carries a prediction onto the ground truth before it is scored.

    ``"rigid"`` / ``"similarity"``: :func:`morphable.mesh.icp.icp` of ``pred_points (P, 3)`` onto
    ``gt_points (M, 3)`` (nearest-point pairs, closed-form Kabsch / Umeyama steps), started from centroids
    or from landmark pairs; ``"none"``: the identity (the prediction is already in the GT frame).

    Args:
        pred_landmarks, gt_landmarks: for ``init="landmarks"``: ``(L,)`` vertex indices into the point
            set, or ``(L, 3)`` coordinates, ``L >= 3`` pairs in the same order.
        reject_distance: ICP leaves out pairs farther apart than this (GT unit); None keeps all.
    """
    pred, gt = points3(pred_points, "predicted points", at_least=3), points3(gt_points, "ground-truth points")
    if alignment == "none":
        return SimilarityTransform.identity()
    if alignment not in ("rigid", "similarity"):
        raise MorphableError(f"unknown alignment {alignment!r} (expected 'rigid', 'similarity' or 'none')")
    src = None if pred_landmarks is None else _select_points(pred, pred_landmarks, "predicted landmarks")
    dst = None if gt_landmarks is None else _select_points(gt, gt_landmarks, "ground-truth landmarks")
    if src is not None and dst is not None and src.shape != dst.shape:
        raise MorphableError(f"{len(src)} predicted landmarks for {len(dst)} ground-truth landmarks")
    return icp(pred, gt, scale=alignment == "similarity", init=init, source_landmarks=src, target_landmarks=dst,
               reject_distance=reject_distance).transform


@dataclass(frozen=True)
class Nme3D:
    """:func:`nme_3d`: the NME, the per-GT-point distances ``(M,)`` (GT unit), the GT outer inter-ocular
    distance that normalises them and the prediction -> GT transform."""

    nme: float
    distances: np.ndarray
    inter_ocular: float
    transform: SimilarityTransform


def nme_3d(pred_points: np.ndarray, gt_points: np.ndarray, gt_eye_corners: np.ndarray, *,
           alignment: Alignment = "rigid", init: Init = "centroid", pred_landmarks: np.ndarray | None = None,
           gt_landmarks: np.ndarray | None = None, reject_distance: float | None = None) -> Nme3D:
    """3D normalised mean error of a reconstruction (VRN's protocol).

    The prediction is aligned with :func:`align_prediction` (rigid ICP by default, or similarity), then

        NME = (1/M) sum_{q in gt} min_{p in T(pred)} ||p - q||_2 / ||e_1 - e_2||_2,

    the mean distance from every GT point to its nearest aligned predicted point, over the GT's outer
    inter-ocular distance (``e_1, e_2`` its outer eye corners, iBUG 36 and 45). Unitless.

    Args:
        pred_points: ``(P, 3)`` predicted vertices (or points).
        gt_points: ``(M, 3)`` ground-truth vertices (or points).
        gt_eye_corners: the GT outer eye corners: ``(2,)`` integer indices into ``gt_points`` or
            ``(2, 3)`` coordinates.
        alignment, init, pred_landmarks, gt_landmarks, reject_distance: see :func:`align_prediction`.

    Raises:
        MorphableError: bad shapes, NaN, eye corners out of range or coinciding.
    """
    gt = points3(gt_points, "ground-truth points")
    eyes = _select_points(gt, gt_eye_corners, "gt_eye_corners")
    if len(eyes) != 2:
        raise MorphableError(f"gt_eye_corners must name 2 points, got {len(eyes)}")
    inter_ocular = float(np.linalg.norm(eyes[0] - eyes[1]))
    if not inter_ocular > 0:
        raise MorphableError("gt_eye_corners: the two eye corners coincide")
    transform = align_prediction(pred_points, gt, alignment=alignment, init=init, pred_landmarks=pred_landmarks,
                                 gt_landmarks=gt_landmarks, reject_distance=reject_distance)
    distances, _ = nearest_neighbours(gt, transform.apply(pred_points))
    return Nme3D(float(distances.mean() / inter_ocular), distances, inter_ocular, transform)


@dataclass(frozen=True)
class PointToPlane:
    """:func:`point_to_plane_distance`: per-GT-point distances ``(M,)`` in mm, their mean and median, and
    the prediction -> GT transform."""

    mean_mm: float
    median_mm: float
    distances_mm: np.ndarray
    transform: SimilarityTransform


def point_to_plane_distance(pred_vertices: np.ndarray, pred_faces: np.ndarray, gt_points: np.ndarray, *,
                            unit: str | float = "mm", method: PlaneMethod = "vertex_plane",
                            alignment: Alignment = "rigid", init: Init = "centroid",
                            pred_landmarks: np.ndarray | None = None, gt_landmarks: np.ndarray | None = None,
                            reject_distance: float | None = None) -> PointToPlane:
    """Distance in mm from every GT point to the aligned predicted surface (HRN / MICC protocol).

    The prediction is aligned with :func:`align_prediction` (its vertices onto the GT points). Then, for
    every GT point ``q``:

    * ``"vertex_plane"`` (point-to-plane): ``d(q) = |<q - p_j, n_j>|`` with ``p_j`` the nearest aligned
      predicted vertex (among the vertices of ``pred_faces``) and ``n_j`` its unit area-weighted vertex
      normal (:func:`morphable.mesh.normals.vertex_normals` of the aligned mesh): the distance to the
      tangent plane at the nearest predicted point.
    * ``"triangle"`` (point-to-surface): ``d(q) = min_f dist(q, triangle f)``, exact (libigl AABB tree;
      needs ``pip install libigl``).

    Distances are multiplied by ``UNIT_TO_MM[unit]``. MICC crops the GT scan to 95 mm around the nose tip
    first: pass ``gt[np.linalg.norm(gt - nose, axis=1) <= 95 / UNIT_TO_MM[unit]]``.

    Args:
        pred_vertices: ``(V, 3)``; pred_faces: ``(F, 3)`` integer triangles of the prediction.
        gt_points: ``(M, 3)`` ground-truth scan points (vertices), same unit as the prediction.
        unit: the data's length unit (``m``, ``cm``, ``mm`` or mm per unit, :data:`morphable.io.UNIT_TO_MM`).
        method: ``"vertex_plane"`` or ``"triangle"``.
        alignment, init, pred_landmarks, gt_landmarks, reject_distance: see :func:`align_prediction`.

    Raises:
        MorphableError: bad shapes, NaN, faces out of range, an unknown unit or method.
    """
    from morphable.io import UNIT_TO_MM
    from morphable.mesh.normals import vertex_normals

    vertices = points3(pred_vertices, "predicted vertices", at_least=3)
    gt = points3(gt_points, "ground-truth points")
    faces = np.asarray(pred_faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise MorphableError(f"predicted faces must be integers of shape (F, 3) with F >= 1, got {faces.dtype} "
                             f"{faces.shape}")
    if ((faces < 0) | (faces >= len(vertices))).any():
        raise MorphableError(f"predicted faces must index vertices 0..{len(vertices) - 1}")
    if unit not in UNIT_TO_MM:
        raise MorphableError(f"unknown unit {unit!r} (expected m, cm, mm or millimetres per unit)")
    if method not in ("vertex_plane", "triangle"):
        raise MorphableError(f"unknown method {method!r} (expected 'vertex_plane' or 'triangle')")
    transform = align_prediction(vertices, gt, alignment=alignment, init=init, pred_landmarks=pred_landmarks,
                                 gt_landmarks=gt_landmarks, reject_distance=reject_distance)
    aligned = transform.apply(vertices)
    if method == "triangle":
        from morphable.mesh.distance import igl_module

        squared, _, _ = igl_module().point_mesh_squared_distance(gt, aligned, np.ascontiguousarray(faces, np.int64))
        distances = np.sqrt(squared)
    else:
        used = np.unique(faces)
        normals = vertex_normals(aligned, faces)[used]
        _, nearest = nearest_neighbours(gt, aligned[used])
        distances = np.abs(((gt - aligned[used][nearest]) * normals[nearest]).sum(axis=1))
    distances = distances * UNIT_TO_MM[unit]
    return PointToPlane(float(distances.mean()), float(np.median(distances)), distances, transform)
