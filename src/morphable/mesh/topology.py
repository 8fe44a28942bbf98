"""Mesh connectivity as sparse matrices: edges, edge checks, adjacency, components, boundaries, Laplacians.

Everything here is numpy/scipy and vectorised (no per-vertex Python loops).

Conventions: ``faces (F, 3)`` int64 with counter-clockwise (outward) orientation, vertices
``0..V-1``. Undirected edges are rows ``(i, j)`` with ``i < j``, sorted lexicographically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as _cc


def half_edges(faces: np.ndarray) -> np.ndarray:
    """Directed edges of every face corner, ``(3F, 2)``: ``(a, b), (b, c), (c, a)`` per face ``(a, b, c)``.

    Row ``k * F + f`` is the ``k``-th half-edge of face ``f``.
    """
    f = np.asarray(faces, dtype=np.int64)
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=0)


def _edge_keys(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Undirected key ``min * n + max`` of every half-edge ``(3F,)`` and the key base ``n``."""
    he = half_edges(faces)
    n = int(he.max()) + 1 if len(he) else 1
    return np.minimum(he[:, 0], he[:, 1]) * n + np.maximum(he[:, 0], he[:, 1]), n


def edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges ``(E, 2)`` with ``i < j``, sorted lexicographically."""
    key, n = _edge_keys(faces)
    u = np.unique(key)
    return np.stack([u // n, u % n], axis=1)


@dataclass(frozen=True)
class EdgeReport:
    """Edge statistics of a triangle mesh: ``irregular_vertices`` are the corners of edges that do not
    have exactly two incident faces (open boundary or non-manifold); ``flipped_edges`` counts directed
    edges used twice in the same direction (inconsistent orientation)."""

    n_open_edges: int
    n_nonmanifold_edges: int
    flipped_edges: int
    irregular_edges: np.ndarray  # (E, 2) vertex pairs i < j, sorted lexicographically
    irregular_vertices: np.ndarray  # (V,) bool

    @property
    def closed(self) -> bool:
        return self.n_open_edges == 0 and self.n_nonmanifold_edges == 0


def edge_report(faces: np.ndarray, n_vertices: int) -> EdgeReport:
    """Count open (one face), non-manifold (three or more faces) and inconsistently oriented edges of
    ``faces (F, 3)``."""
    key, n = _edge_keys(faces)
    undirected, counts = np.unique(key, return_counts=True)
    he = half_edges(faces)
    _, directed_counts = np.unique(he[:, 0] * n + he[:, 1], return_counts=True)
    irregular = undirected[counts != 2]
    irregular_edges = np.stack([irregular // n, irregular % n], axis=1)
    irregular_vertices = np.zeros(n_vertices, dtype=bool)
    irregular_vertices[irregular_edges.reshape(-1)] = True
    return EdgeReport(int((counts == 1).sum()), int((counts > 2).sum()), int((directed_counts > 1).sum()),
                      irregular_edges, irregular_vertices)


def nonmanifold_faces(faces: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: the face has an edge shared by three or more faces."""
    key, _ = _edge_keys(faces)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return (counts[inverse] > 2).reshape(3, -1).any(axis=0)


def boundary_mask(faces: np.ndarray) -> np.ndarray:
    """``(3F,)`` bool: which rows of :func:`half_edges` lie on an open boundary (one face only)."""
    key, _ = _edge_keys(faces)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse] == 1


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """Boundary half-edges ``(B, 2)`` in face orientation: edges used by exactly one face."""
    return half_edges(faces)[boundary_mask(faces)]


def adjacency(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency ``A (V, V)`` float64 CSR: ``A_ij = 1`` iff ``(i, j)`` is an edge."""
    e = edges(faces)
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    a = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    a.sort_indices()
    return a


def vertex_faces(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Incidence ``(V, F)`` CSR: row ``v`` lists the faces that contain ``v`` (data = corner 1, 2, 3)."""
    f = np.asarray(faces, dtype=np.int64)
    n_faces = len(f)
    rows = f.T.ravel()
    cols = np.tile(np.arange(n_faces), 3)
    corner = np.repeat(np.arange(1, 4), n_faces)
    m = sp.csr_matrix((corner, (rows, cols)), shape=(n_vertices, n_faces))
    m.sort_indices()
    return m


def connected_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components of the edge graph: ``(count, labels (V,))``.

    Labels are numbered in order of each component's smallest vertex index; an unreferenced
    vertex is a component of its own.
    """
    count, labels = _cc(adjacency(faces, n_vertices), directed=False)
    first = np.full(count, n_vertices, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n_vertices))
    relabel = np.empty(count, dtype=np.int64)
    relabel[np.argsort(first, kind="stable")] = np.arange(count)
    return int(count), relabel[labels]


def face_region(faces: np.ndarray, region_mask: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: a triangle is in the region when at least two of its corners are in the per-vertex
    ``region_mask (V,)``."""
    return np.asarray(region_mask, dtype=bool)[faces].sum(axis=1) >= 2


def normalized_laplacian(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    r"""Normalised graph Laplacian ``L = I - D^{-1/2} A D^{-1/2}`` ``(V, V)`` CSR float64.

    ``A`` is the 0/1 edge adjacency and ``D = diag(A 1)``; an isolated vertex gets ``L_ii = 0``.
    The eigenvalues of ``L`` lie in ``[0, 2]``.
    """
    a = adjacency(faces, n_vertices)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = 1.0 / np.sqrt(deg[deg > 0])
    norm_a = sp.diags(inv_sqrt) @ a @ sp.diags(inv_sqrt)
    lap = sp.diags((deg > 0).astype(np.float64)) - norm_a
    lap = sp.csr_matrix(lap)
    lap.sort_indices()
    return lap


def chebyshev_laplacian(faces: np.ndarray, n_vertices: int, lmax: float = 2.0) -> sp.csr_matrix:
    r"""Scaled Laplacian for Chebyshev filters (CoMA): ``\tilde L = 2 L / l_max - I`` ``(V, V)`` CSR.

    With the default ``l_max = 2`` this is ``L - I = -D^{-1/2} A D^{-1/2}`` (isolated vertices:
    ``-1`` on the diagonal); its eigenvalues lie in ``[-1, 1]``.
    """
    lap = normalized_laplacian(faces, n_vertices) * (2.0 / lmax) - sp.identity(n_vertices, format="csr")
    lap = sp.csr_matrix(lap)
    lap.eliminate_zeros()
    lap.sort_indices()
    return lap


def edge_length_laplacian(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    r"""Graph Laplacian with inverse squared edge lengths, ``L = D - A`` ``(V, V)`` CSR float64.

    ``A_ij = 1 / |x_i - x_j|^2`` on every edge, ``D = diag(A 1)``. On a regular grid of spacing ``h`` this is
    the 5-point stencil of ``-\Delta``, so ``(I + t L)^{-1}`` approximates heat diffusion for time ``t``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    a = adjacency(faces, len(v)).tocoo()
    a.data = 1.0 / np.maximum(((v[a.row] - v[a.col]) ** 2).sum(axis=1), 1e-300)
    return sp.csr_matrix(sp.diags(np.asarray(a.sum(axis=1)).ravel()) - a)


def diffuse(values: np.ndarray, vertices: np.ndarray, faces: np.ndarray, sigma: float) -> np.ndarray:
    r"""Smooth per-vertex ``values (V, C)`` over the mesh: ``(I + \sigma^2/2 \, L)^{-1} values``.

    ``L`` is :func:`edge_length_laplacian`, so this is one implicit heat-diffusion step whose kernel has standard
    deviation about ``sigma`` (in the units of ``vertices``). Constants are kept, the sum over vertices of every
    column is kept (``L`` is symmetric with zero row sums) and non-negative values stay non-negative (the
    system matrix is an M-matrix). ``sigma = 0`` returns the values unchanged.
    """
    from scipy.sparse.linalg import splu

    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0:
        return values.copy()
    n = len(vertices)
    system = sp.identity(n, format="csc") + 0.5 * sigma ** 2 * edge_length_laplacian(vertices, faces).tocsc()
    return splu(sp.csc_matrix(system)).solve(values.reshape(n, -1)).reshape(values.shape)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals ``(F, 3)``: ``(b - a) x (c - a)`` (length = twice the area)."""
    v = np.asarray(vertices, dtype=np.float64)
    a = v[faces[:, 0]]
    u, w = v[faces[:, 1]] - a, v[faces[:, 2]] - a
    out = np.empty_like(u)
    out[:, 0] = u[:, 1] * w[:, 2] - u[:, 2] * w[:, 1]
    out[:, 1] = u[:, 2] * w[:, 0] - u[:, 0] * w[:, 2]
    out[:, 2] = u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]
    return out
