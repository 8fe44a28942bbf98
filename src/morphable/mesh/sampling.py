"""Points on a triangle mesh: the one surface sampler (SDF training data, surface metrics, benchmarks).

Area-weighted uniform sampling. With areas ``A_f`` a triangle is drawn with probability
``A_f / sum A``, by inverting the cumulative areas at ``u_0 ~ U(0, 1)``; on it the barycentric
coordinates

    b = (1 - sqrt(u_1),  sqrt(u_1) (1 - u_2),  sqrt(u_1) u_2),   u_1, u_2 ~ U(0, 1)

are uniform (``sqrt`` undoes the triangle's linear growth away from corner 0), and the point is
``p = sum_k b_k v_k``. The random numbers are drawn in the order ``u_0 (n,)``, ``u_1 (n,)``,
``u_2 (n,)`` from one numpy Generator, so a seed fixes the samples.

Normals: ``normals`` interpolate the area-weighted vertex normals ``n_k`` as ``normalise(sum_k b_k n_k)``
(smooth across edges, like the surface a scan approximates; the face normal where that sum vanishes);
``face_normals`` are the unit normals of the sampled triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals as area_weighted_normals


@dataclass(frozen=True)
class SurfaceSamples:
    """``n`` points on a mesh, all float64 except the face ids.

    Attributes:
        points: ``(n, 3)``, ``points[i] = sum_k barycentrics[i, k] * vertices[faces[face_ids[i], k]]``.
        face_ids: ``(n,)`` int64 row of ``faces`` each point lies on.
        barycentrics: ``(n, 3)`` non-negative, rows summing to 1.
        normals: ``(n, 3)`` unit, interpolated vertex normals.
        face_normals: ``(n, 3)`` unit normals of the triangles ``face_ids``.
    """

    points: np.ndarray
    face_ids: np.ndarray
    barycentrics: np.ndarray
    normals: np.ndarray
    face_normals: np.ndarray


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator | int = 0,
                   vertex_normals: np.ndarray | None = None) -> SurfaceSamples:
    """``n`` area-weighted uniform samples on the triangles ``faces``.

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)`` (may be a subset of a mesh's faces).
        n: number of samples (0 gives empty arrays and draws nothing).
        rng: a numpy Generator (advanced by ``3 n`` uniform draws) or a seed.
        vertex_normals: ``(V, 3)`` vertex normals to interpolate (default: the unit area-weighted
            normals of ``faces``).

    Returns:
        :class:`SurfaceSamples`.
    """
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if n == 0:
        empty = np.zeros((0, 3))
        return SurfaceSamples(empty, np.zeros(0, dtype=np.int64), empty, empty, empty)
    tri = V[F]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(area)
    if not len(F) or not cdf[-1] > 0:
        raise MorphableError(f"cannot sample {n} surface points: the mesh has no area ({len(F)} faces)")
    rng = np.random.default_rng(rng)
    which = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(F) - 1)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, tri[which])
    if vertex_normals is None:
        vertex_normals = area_weighted_normals(V, F)
    nrm = np.einsum("nk,nkd->nd", bary, np.asarray(vertex_normals, dtype=np.float64)[F[which]])
    length = np.linalg.norm(nrm, axis=1, keepdims=True)
    face_n = cross[which] / np.maximum(area[which], 1e-300)[:, None]
    nrm = np.where(length > 1e-12, nrm / np.maximum(length, 1e-300), face_n)
    return SurfaceSamples(points, which.astype(np.int64), bary, nrm, face_n)
