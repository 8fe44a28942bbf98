"""Mesh topology: edges, boundaries, components, Laplacians against naive loops and dense references."""

import numpy as np
import pytest
import scipy.sparse as sp

from mesh_fixtures import head_with_eyes, icosphere, open_cap
from morphable.mesh import topology
from morphable.mesh.topology import (adjacency, boundary_edges, chebyshev_laplacian, connected_components,
                                     edge_report, edges, face_normals, face_region, normalized_laplacian,
                                     vertex_faces)


def _naive_edge_counts(faces):
    counts = {}
    for face in faces.tolist():
        for k in range(3):
            a, b = face[k], face[(k + 1) % 3]
            key = (min(a, b), max(a, b))
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_edges_and_edge_report_match_naive_loop():
    v, f = open_cap(2)
    # a non-manifold fin on the first edge and one face listed twice in the same orientation
    f = np.concatenate([f, [[f[0, 0], f[0, 1], len(v)]], f[-1:]])
    naive = _naive_edge_counts(f)
    assert [tuple(x) for x in edges(f).tolist()] == sorted(naive)
    report = edge_report(f, len(v) + 1)
    assert report.n_open_edges == sum(c == 1 for c in naive.values()) > 0
    assert report.n_nonmanifold_edges == sum(c > 2 for c in naive.values()) > 0
    assert [tuple(x) for x in report.irregular_edges.tolist()] == sorted(k for k, c in naive.items() if c != 2)
    irregular = {i for k, c in naive.items() if c != 2 for i in k}
    assert set(np.nonzero(report.irregular_vertices)[0].tolist()) == irregular
    directed = [(face[k], face[(k + 1) % 3]) for face in f.tolist() for k in range(3)]
    assert report.flipped_edges == sum(directed.count(d) > 1 for d in set(directed)) > 0
    assert not report.closed
    closed = edge_report(icosphere(1)[1], 42)
    assert closed.closed and closed.flipped_edges == 0 and not closed.irregular_vertices.any()
    # Euler characteristic of a closed genus-0 surface: V - E + F = 2.
    vs, fs = icosphere(2)
    assert len(vs) - len(edges(fs)) + len(fs) == 2


def test_boundary_edges_follow_face_orientation():
    v, f = open_cap(2)
    naive = _naive_edge_counts(f)
    b = boundary_edges(f)
    assert len(b) == sum(1 for c in naive.values() if c == 1) > 0
    directed = {(face[k], face[(k + 1) % 3]) for face in f.tolist() for k in range(3)}
    for a, c in b.tolist():
        assert (a, c) in directed and (c, a) not in directed
    mask = np.bincount(b.ravel(), minlength=len(v)) > 0
    # One boundary loop: every boundary vertex has exactly one outgoing boundary half-edge.
    assert np.bincount(b[:, 0], minlength=len(v))[mask].tolist() == [1] * mask.sum()
    assert len(boundary_edges(icosphere(1)[1])) == 0


def test_connected_components_of_head_with_eyes():
    v, f = head_with_eyes(2)
    count, labels = connected_components(f, len(v))
    assert count == 3
    sizes = np.bincount(labels)
    assert sizes.tolist() == [162, 162, 162]
    assert labels[0] == 0 and labels[-1] == 2
    for face in f:
        assert labels[face[0]] == labels[face[1]] == labels[face[2]]


def test_adjacency_and_vertex_faces_match_naive():
    v, f = open_cap(1)
    n = len(v)
    dense = np.zeros((n, n))
    incidence = np.zeros((n, len(f)))
    for i, face in enumerate(f):
        for k in range(3):
            dense[face[k], face[(k + 1) % 3]] = dense[face[(k + 1) % 3], face[k]] = 1
            incidence[face[k], i] = k + 1
    np.testing.assert_array_equal(adjacency(f, n).toarray(), dense)
    np.testing.assert_array_equal(vertex_faces(f, n).toarray(), incidence)


def test_laplacians_match_dense_construction_and_spectrum():
    v, f = head_with_eyes(1)
    n = len(v)
    a = adjacency(f, n).toarray()
    d = a.sum(axis=1)
    naive = np.eye(n) - a / np.sqrt(np.outer(d, d))
    lap = normalized_laplacian(f, n)
    np.testing.assert_allclose(lap.toarray(), naive, atol=1e-14)
    cheb = chebyshev_laplacian(f, n)
    dense = cheb.toarray()
    np.testing.assert_allclose(dense, naive - np.eye(n), atol=1e-14)
    np.testing.assert_array_equal(dense, dense.T)
    eig = np.linalg.eigvalsh(dense)
    assert eig.min() >= -1 - 1e-12 and eig.max() <= 1 + 1e-12
    # Three components: eigenvalue 0 of L (-1 of the scaled form) has multiplicity 3; the graph
    # is not bipartite (triangles), so +1 is not reached.
    assert np.sum(np.abs(eig + 1) < 1e-9) == 3
    assert eig.max() < 1 - 1e-6
    assert isinstance(cheb, sp.csr_matrix)


def test_face_normals():
    v, f = icosphere(1)
    tri = v[f]
    np.testing.assert_allclose(face_normals(v, f), np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    # Outward orientation of the icosphere: normals point away from the centre.
    assert ((face_normals(v, f) * tri.mean(axis=1)).sum(axis=1) > 0).all()


def test_face_region_majority_vote():
    f = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    mask = np.array([1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(face_region(f, mask), [True, False, False, False])
    np.testing.assert_array_equal(face_region(f, mask.astype(bool) | (np.arange(6) == 3)), [True, True, True, True])


def _triangulated_grid(n: int, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n x n`` planar grid, every square split along its (1, 1) diagonal."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    vertices = np.stack([i.ravel() * spacing, j.ravel() * spacing, np.zeros(n * n)], axis=1)
    a = (i[:-1, :-1] * n + j[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([a, a + n, a + n + 1], 1), np.stack([a, a + n + 1, a + 1], 1)])
    return vertices, faces


def test_edge_length_laplacian_matches_naive():
    vertices, faces = _triangulated_grid(4, spacing=0.5)
    vertices = vertices + np.random.default_rng(0).normal(0, 0.05, vertices.shape)
    lap = topology.edge_length_laplacian(vertices, faces).toarray()
    expected = np.zeros_like(lap)
    for i, j in {tuple(sorted((f[a], f[(a + 1) % 3]))) for f in faces for a in range(3)}:
        w = 1.0 / np.sum((vertices[i] - vertices[j]) ** 2)
        expected[i, j] = expected[j, i] = -w
    expected[np.diag_indices_from(expected)] = -expected.sum(axis=1)
    assert np.allclose(lap, expected, rtol=1e-12)


def test_diffuse_keeps_constants_mass_and_sign_and_spreads_by_sigma():
    n, sigma = 61, 3.0
    vertices, faces = _triangulated_grid(n)
    values = np.zeros((n * n, 2))
    centre = (n // 2) * n + n // 2
    values[centre, 0] = 1.0
    values[:, 1] = 2.5
    out = topology.diffuse(values, vertices, faces, sigma)
    assert np.allclose(out[:, 1], 2.5)  # constants
    assert out[:, 0].sum() == pytest.approx(1.0, abs=1e-12)  # mass
    assert out.min() >= -1e-15  # sign
    # the kernel of (I + t L)^-1 has second moment 2t per unit of the stencil's symbol; on this triangulation the
    # symbol is |w|^2 + (w_x + w_y)^2 / 2, so the variance along x is 2t (1 + 1/2) = 1.5 sigma^2 (t = sigma^2 / 2)
    dx = vertices[:, 0] - vertices[centre, 0]
    assert np.sum(out[:, 0] * dx ** 2) == pytest.approx(1.5 * sigma ** 2, rel=0.02)
    assert np.array_equal(topology.diffuse(values, vertices, faces, 0.0), values)
