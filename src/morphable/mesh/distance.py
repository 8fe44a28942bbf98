"""Distances to triangle meshes: signed distance robust to real-scan defects, winding numbers, barycentrics.

Signed distance (``sign="auto"``): the magnitude is the exact Euclidean distance to the triangles
(libigl AABB tree). The sign:

* closed, manifold, consistently oriented mesh: the angle-weighted pseudonormal test at the closest
  point (exact, Baerentzen & Aanaes); the generalised winding number would agree everywhere.
* open scan: the generalised winding number ``w(p)`` (libigl fast winding number; ``w = 1`` inside and
  ``0`` outside a closed surface, jumping by 1 across the scan). Points with ``w >= 0.5`` are inside:
  this treats the scan as if its holes were closed by the caps ``{w = 0.5}``, soap-film-like surfaces
  spanning each hole. Where the scan is nearly flat or the point sees it under a small solid angle,
  ``w`` stays near 0.5 on the back side and is no guide, so within ``local_band`` of the scan, when
  the closest point is not on the open boundary, the local side of the scan (pseudonormal test) decides.
  Near-surface samples therefore always get the side of the scan they lie on.
* non-manifold edges (a fin or flap glued to the surface, left by a real scan): the same, except that
  points whose closest triangle has a non-manifold edge take the winding number at any distance. The
  local side of a fin says nothing about the inside, while one triangle changes ``w`` by less than 0.5.

Limits for open scans: the caps are only implicit (distance magnitudes are to the scan, not to the
caps, so the field jumps from ``+d`` to ``-d`` across a cap); a flat open sheet encloses nothing, so
beyond ``local_band`` behind it points are outside; hole-caps of very large openings (a face-only mask)
are guesses; faces must be consistently oriented with outward normals (:mod:`morphable.mesh.repair`
re-orients inconsistent scans).

libigl is imported lazily (:func:`igl_module`), so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from morphable.errors import MorphableError
from morphable.mesh.topology import EdgeReport, edge_report, nonmanifold_faces

SignMethod = Literal["auto", "pseudonormal", "winding"]


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number ``w(p) = (1 / 4 pi) sum_f Omega_f(p)`` (signed solid angles), via
    libigl's fast (hierarchical, Barill et al. 2018) evaluation: ``(N, 3) -> (N,)`` float64."""
    return igl_module().fast_winding_number(np.ascontiguousarray(vertices, dtype=np.float64),
                                            np.ascontiguousarray(faces, dtype=np.int64),
                                            np.ascontiguousarray(points, dtype=np.float64))


def igl_module():
    """Import libigl (needed for distances, closest points and winding numbers) with a clear message
    when it is missing."""
    try:
        import igl
    except ImportError:
        raise MorphableError("signed distances and closest points need libigl: pip install libigl") from None
    return igl


def _irregular_face_edges(faces: np.ndarray, report: EdgeReport) -> np.ndarray:
    """``(F, 3)`` bool: is the edge opposite corner ``k`` of each face open or non-manifold."""
    n = int(faces.max()) + 1
    opposite = np.stack([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], axis=1)
    keys = np.sort(opposite, axis=2) @ np.array([n, 1], dtype=np.int64)
    return np.isin(keys, report.irregular_edges @ np.array([n, 1], dtype=np.int64))


def barycentric_coordinates(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                            tri_index: np.ndarray) -> np.ndarray:
    """Barycentric coordinates ``(N, 3)`` of ``points (N, 3)`` in the plane of triangles ``faces[tri_index]``.

    With ``e0 = b - a``, ``e1 = c - a``, ``e2 = p - a`` and ``d_ij = e_i . e_j``:
    ``b1 = (d11 d20 - d01 d21) / D``, ``b2 = (d00 d21 - d01 d20) / D``, ``D = d00 d11 - d01^2``, and
    ``(1 - b1 - b2, b1, b2)``; degenerate triangles (``D = 0``) use ``D = 1``.
    """
    f = faces[tri_index]
    a = vertices[f[:, 0]]
    e0, e1, e2 = vertices[f[:, 1]] - a, vertices[f[:, 2]] - a, points - a
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (e2 * e0).sum(1), (e2 * e1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(den > 0, den, 1.0)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - b1 - b2, b1, b2], axis=1)


def _on_irregular_feature(closest: np.ndarray, tri_index: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                          irregular_edges: np.ndarray, irregular_vertices: np.ndarray,
                          tol: float = 1e-7) -> np.ndarray:
    """True where the closest point lies on an open/non-manifold edge or vertex.

    Barycentric coordinates ``b`` of ``closest (N, 3)`` in triangle ``tri_index (N,)``: the point is on the
    edge opposite corner ``k`` when ``b_k ~ 0`` and on corner ``k`` when ``b_k ~ 1``.
    ``irregular_edges (F, 3)`` from :func:`_irregular_face_edges`, ``irregular_vertices (V,)``.
    """
    f = faces[tri_index]
    bary = barycentric_coordinates(closest, vertices, faces, tri_index)
    on_edge = (irregular_edges[tri_index] & (bary <= tol)).any(axis=1)
    on_vertex = (irregular_vertices[f] & (bary >= 1 - tol)).any(axis=1)
    return on_edge | on_vertex


def signed_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, sign: SignMethod = "auto",
                    local_band: float = 0.02, chunk_size: int = 100_000, progress: bool = False) -> np.ndarray:
    """Exact signed distance from ``points (N, 3)`` to the triangle mesh; negative inside.

    Args:
        points: ``(N, 3)`` query points.
        vertices: ``(V, 3)``; faces: ``(F, 3)`` consistently oriented, outward normals.
        sign: ``"auto"`` (pseudonormal for closed meshes; winding number with a local pseudonormal band
            for open ones, see the module docstring), ``"pseudonormal"`` or ``"winding"`` (``w >= 0.5``
            inside, everywhere).
        local_band: for open meshes, distance within which the local side of the scan decides the sign.
        chunk_size: points per libigl call (bounds memory; a progress bar counts chunks).
        progress: show a tqdm bar when there is more than one chunk.

    Returns:
        ``(N,)`` float64 signed distances.
    """
    if sign not in ("auto", "pseudonormal", "winding"):
        raise ValueError(f"unknown sign method {sign!r}")
    igl = igl_module()
    P = np.ascontiguousarray(points, dtype=np.float64)
    V = np.ascontiguousarray(vertices, dtype=np.float64)
    F = np.ascontiguousarray(faces, dtype=np.int64)
    report = edge_report(F, len(V)) if sign == "auto" else None
    local_side = report is not None and not report.closed
    edge_flags = _irregular_face_edges(F, report) if local_side else None
    fin_faces = nonmanifold_faces(F) if local_side and report.n_nonmanifold_edges else np.zeros(len(F), dtype=bool)
    starts = range(0, len(P), chunk_size)
    if progress and len(starts) > 1:
        from tqdm import tqdm

        starts = tqdm(starts, desc="signed distance", unit="chunk", leave=False)
    out = np.empty(len(P), dtype=np.float64)
    for s in starts:
        chunk = P[s:s + chunk_size]
        if sign == "winding":
            sq, _, _ = igl.point_mesh_squared_distance(chunk, V, F)
            inside = winding_number(chunk, V, F) >= 0.5
            out[s:s + len(chunk)] = np.where(inside, -1.0, 1.0) * np.sqrt(sq)
            continue
        dist, tri, closest, _ = igl.signed_distance(chunk, V, F, igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
        if local_side:
            use_winding = np.abs(dist) > local_band
            near = np.nonzero(~use_winding)[0]
            use_winding[near] = _on_irregular_feature(closest[near], tri[near], V, F, edge_flags,
                                                      report.irregular_vertices) | fin_faces[tri[near]]
            which = np.nonzero(use_winding)[0]
            if len(which):
                inside = winding_number(chunk[which], V, F) >= 0.5
                dist[which] = np.where(inside, -1.0, 1.0) * np.abs(dist[which])
        out[s:s + len(chunk)] = dist
    return out
