"""Connected components of a triangle mesh, and keeping the largest (VRN's post-processing of marching cubes,
which removes the separate blobs a predicted volume may hold)."""

from __future__ import annotations

import numpy as np

from morphable.errors import MorphableError


def connected_components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """``(V,)`` int64 component label of every vertex; two vertices share a label when a chain of triangles
    joins them (vertices in no triangle get labels of their own). Labels are ``0..C-1``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= n_vertices):
        raise MorphableError(f"faces index vertices outside 0..{n_vertices - 1}")
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_vertices, n_vertices))
    return components(graph, directed=False)[1].astype(np.int64)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The component with the most triangles: ``(vertices (V', 3), faces (F', 3))``, re-indexed, unused
    vertices dropped."""
    v, f = np.asarray(vertices), np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(f):
        raise MorphableError("a mesh without triangles has no largest component")
    labels = connected_components(f, len(v))
    face_labels = labels[f[:, 0]]
    keep = face_labels == np.bincount(face_labels).argmax()
    kept = f[keep]
    used = np.unique(kept)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[kept]
