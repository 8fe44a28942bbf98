"""Spiral indices: a per-vertex Python reference, orientation, fallbacks, Neural3DMM padding."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from mesh_fixtures import head_with_eyes, icosphere, mediapipe_face, open_cap
from morphable.mesh.spiral import neural3dmm_spirals, ordered_rings, spiralnet_spirals
from morphable.mesh.topology import edges


def _naive_ring(faces, v):
    """Counter-clockwise one-ring of v by walking 'next' pointers of the faces around v."""
    succ = {}
    for face in faces.tolist():
        for k in range(3):
            if face[k] == v:
                succ[face[(k + 1) % 3]] = face[(k + 2) % 3]
    starts = [u for u in succ if u not in set(succ.values())]
    start = min(starts) if starts else min(succ)
    ring, cur = [start], start
    while cur in succ and succ[cur] != start:
        cur = succ[cur]
        ring.append(cur)
    return ring


def _naive_spiral(rings, s, first, need, max_rings=10**9):
    """Spiral of s: ring 1 from `first`, then each ring-vertex's ring after its parent."""
    r0 = rings[s]
    j = r0.index(first)
    last = [(r0[(j + t) % len(r0)], s) for t in range(len(r0))]
    seq, seen = [s] + [u for u, _ in last], {s, *r0}
    n_rings = 1
    while len(seq) < need and last and n_rings < max_rings:
        n_rings += 1
        nxt = []
        for u, p in last:
            r = rings[u]
            jp = r.index(p)
            for t in range(1, len(r)):
                w = r[(jp + t) % len(r)]
                if w not in seen:
                    seen.add(w)
                    nxt.append((w, u))
        seq += [w for w, _ in nxt]
        last = nxt
    return seq


@pytest.mark.parametrize("mesh", [icosphere, open_cap, mediapipe_face])
def test_ordered_rings_match_naive_walk_and_orientation(mesh):
    v, f = mesh(2) if mesh is not mediapipe_face else mesh()
    rings, degree = ordered_rings(f, len(v))
    faces = {tuple(np.roll(face, k)) for face in f.tolist() for k in range(3)}
    for i in range(len(v)):
        ring = rings[i, : degree[i]].tolist()
        assert ring == _naive_ring(f, i)
        assert (rings[i, degree[i]:] == -1).all()
        for a, b in zip(ring[:-1], ring[1:]):
            assert (i, a, b) in faces  # consecutive ring entries span a face in its orientation


@pytest.mark.parametrize("length,dilation", [(9, 1), (12, 2), (25, 1)])
def test_spiralnet_matches_reference_loop(length, dilation):
    v, f = head_with_eyes(2)
    n = len(v)
    spirals = spiralnet_spirals(f, n, length, dilation)
    assert spirals.shape == (n, length) and spirals.dtype == np.int64
    rings = {i: _naive_ring(f, i) for i in range(n)}
    for s in range(n):
        ref = _naive_spiral(rings, s, rings[s][0], length * dilation)[: length * dilation][::dilation]
        assert spirals[s].tolist() == ref
    assert (spirals[:, 0] == np.arange(n)).all()
    assert (spirals >= 0).all() and (spirals < n).all()
    assert all(len(set(row)) == length for row in spirals.tolist())


def test_spirals_do_not_depend_on_face_order():
    v, f = open_cap(2)
    rng = np.random.default_rng(0)
    shuffled = np.stack([np.roll(face, k) for face, k in zip(f[rng.permutation(len(f))], rng.integers(0, 3, len(f)))])
    a = spiralnet_spirals(f, len(v), 16, 1)
    np.testing.assert_array_equal(a, spiralnet_spirals(shuffled, len(v), 16, 1))
    np.testing.assert_array_equal(a, spiralnet_spirals(f, len(v), 16, 1))
    np.testing.assert_array_equal(neural3dmm_spirals(v, f, 2, 1), neural3dmm_spirals(v, shuffled, 2, 1))


def test_spiralnet_falls_back_to_nearest_indices_on_small_components():
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    far_v, far_f = icosphere(1)
    f = np.concatenate([far_f + 4, tet_f])  # the tetrahedron is vertices 0..3, the sphere 4..45
    spirals = spiralnet_spirals(f, 4 + len(far_v), 9, 1)
    for s in range(4):
        row = spirals[s].tolist()
        assert row[0] == s and set(row[:4]) == {0, 1, 2, 3}
        assert sorted(row[4:]) == [4, 5, 6, 7, 8]  # the five indices nearest to s outside its spiral
    assert (spirals[4:] >= 4).all()  # the sphere's spirals stay on the sphere
    # A mesh with fewer vertices than the spiral repeats its spiral.
    small = spiralnet_spirals(tet_f, 4, 9, 1)
    assert small.shape == (4, 9) and (small[:, 4:8] == small[:, 0:4]).all()


def test_neural3dmm_spirals_start_towards_the_reference_and_pad():
    v, f = icosphere(2)
    n = len(v)
    ref = int(np.argmax(v[:, 2]))
    spirals = neural3dmm_spirals(v, f, hops=2, dilation=1, reference_vertices=[ref])
    e = edges(f)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    graph = sp.csr_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
    _, pred = dijkstra(graph, indices=ref, return_predecessors=True)
    rings = {i: _naive_ring(f, i) for i in range(n)}
    nearest = min(rings[ref], key=lambda u: np.linalg.norm(v[u] - v[ref]))
    full = [_naive_spiral(rings, s, nearest if s == ref else int(pred[s]), 10**9, max_rings=2) for s in range(n)]
    lengths = np.array([len(seq) for seq in full])
    size = int(lengths.mean() + 2 * lengths.std())
    assert spirals.shape == (n, size)
    for s in range(n):
        expect = (full[s] + [n] * size)[:size]
        assert spirals[s].tolist() == expect
    assert spirals[ref, 1] == nearest
    assert (spirals[:, 1][np.arange(n) != ref] == pred[np.arange(n) != ref]).all()
    dil = neural3dmm_spirals(v, f, hops=2, dilation=2, reference_vertices=[ref])
    assert dil.shape[1] < size and (dil[:, 0] == np.arange(n)).all()
    np.testing.assert_array_equal(dil[:, 1:3], spirals[:, 1:5:2])


def test_neural3dmm_pads_boundary_vertices_with_dummy_index():
    v, f = mediapipe_face()
    spirals = neural3dmm_spirals(v, f, hops=1, dilation=1)
    n = len(v)
    assert (spirals <= n).all() and (spirals[:, 0] == np.arange(n)).all()
    _, degree = ordered_rings(f, n)
    padded = (spirals == n).sum(axis=1)
    assert (padded[degree + 1 < spirals.shape[1]] > 0).all()
    assert np.array_equal((spirals < n).sum(axis=1), np.minimum(degree + 1, spirals.shape[1]))
