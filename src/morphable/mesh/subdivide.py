"""Midpoint subdivision of a textured triangle mesh (positions and per-corner UVs together).

Each iteration splits every triangle ``(a, b, c)`` into four, ``(a, m_ab, m_ca)``, ``(m_ab, b, m_bc)``,
``(m_ca, m_bc, c)``, ``(m_ab, m_bc, m_ca)``, with ``m_xy`` the midpoint of edge ``xy`` shared by the triangles
on both sides (trimesh's ``remesh.subdivide``). The UV mesh (``uvs`` with ``face_uvs``) is subdivided the same
way on its own: its triangles are those of the mesh, in the same order, so corner ``k`` of output triangle
``f`` has position ``vertices[faces[f, k]]`` and UV ``uvs[face_uvs[f, k]]``, both the midpoints (or corners)
of the same parent triangle's edges. Seams stay seams: an edge with two UVs on its sides gets two UV
midpoints and one position midpoint. ``V + E`` vertices and ``4 F`` triangles per iteration.
"""

from __future__ import annotations

import numpy as np

from morphable.errors import MorphableError


def subdivide_textured(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_uvs: np.ndarray,
                       iterations: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices (V', 3), faces (4^n F, 3), uvs (T', 2), face_uvs (4^n F, 3))`` after ``iterations`` midpoint
    subdivisions (module docstring)."""
    from trimesh.remesh import subdivide

    faces, face_uvs = np.asarray(faces, dtype=np.int64), np.asarray(face_uvs, dtype=np.int64)
    if faces.shape != face_uvs.shape or faces.ndim != 2 or faces.shape[1] != 3:
        raise MorphableError(f"faces {faces.shape} and face_uvs {face_uvs.shape} must both be (F, 3)")
    if iterations < 0:
        raise MorphableError(f"subdivision iterations must be >= 0, got {iterations}")
    v = np.asarray(vertices, dtype=np.float64)
    t = np.column_stack([np.asarray(uvs, dtype=np.float64), np.zeros(len(uvs))])
    for _ in range(iterations):
        v, faces = subdivide(v, faces)
        t, face_uvs = subdivide(t, face_uvs)
    return v, np.asarray(faces, dtype=np.int64), t[:, :2], np.asarray(face_uvs, dtype=np.int64)
