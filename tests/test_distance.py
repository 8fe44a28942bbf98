"""Distances to meshes: exact magnitudes against a naive loop, signs on closed, open and real meshes, barycentrics."""

import numpy as np
import pytest

from conftest import ICT_NPZ, require
from mesh_fixtures import icosphere, sheet, tessellation_gap
from morphable.data.sdf import Similarity, sample_ball
from morphable.mesh.distance import barycentric_coordinates, signed_distance, winding_number
from morphable.mesh.sampling import sample_surface
from morphable.mesh.topology import edge_report

pytest.importorskip("igl")


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Naive: distance to the plane when the projection falls inside, else to the nearest edge segment."""
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n)
    q = p - np.dot(p - a, n) * n
    inside = all(np.dot(np.cross(v1 - v0, q - v0), n) >= 0 for v0, v1 in ((a, b), (b, c), (c, a)))
    if inside:
        return abs(float(np.dot(p - a, n)))
    best = np.inf
    for v0, v1 in ((a, b), (b, c), (c, a)):
        t = np.clip(np.dot(p - v0, v1 - v0) / np.dot(v1 - v0, v1 - v0), 0, 1)
        best = min(best, float(np.linalg.norm(p - (v0 + t * (v1 - v0)))))
    return best


def test_distance_matches_naive_loop_on_small_meshes():
    rng = np.random.default_rng(1)
    V, F = icosphere(1, 0.7)
    V = V * (1 + 0.15 * rng.random((len(V), 1)))  # star-shaped, not convex any more
    P = rng.uniform(-1, 1, size=(40, 3))
    naive = np.array([min(point_triangle_distance(p, *V[f]) for f in F) for p in P])
    d = signed_distance(P, V, F)
    np.testing.assert_allclose(np.abs(d), naive, rtol=1e-10, atol=1e-12)
    # sign: star-shaped about the origin, so p is inside iff the ray from 0 meets the mesh beyond p
    dirs = P / np.linalg.norm(P, axis=1, keepdims=True)
    tri = V[F]
    inside = []
    for p, u in zip(P, dirs):
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        t = (n * tri[:, 0]).sum(1) / (n @ u)
        q = t[:, None] * u
        bary_ok = np.all([((np.cross(tri[:, (k + 1) % 3] - tri[:, k], q - tri[:, k])) * n).sum(1) >= -1e-12
                          for k in range(3)], axis=0)
        inside.append(np.linalg.norm(p) < t[(t > 0) & bary_ok].min())
    np.testing.assert_array_equal(d < 0, np.array(inside))
    # the open version of the same mesh (a few faces removed): same magnitudes as the naive loop
    F_open = F[np.linalg.norm(V[F].mean(1)[:, :2], axis=1) > 0.2]
    naive_open = np.array([min(point_triangle_distance(p, *V[f]) for f in F_open) for p in P])
    np.testing.assert_allclose(np.abs(signed_distance(P, V, F_open)), naive_open, rtol=1e-10, atol=1e-12)


def test_sphere_sdf_matches_analytic():
    r = 0.8
    V, F = icosphere(5, r)
    gap = tessellation_gap(V, F, r)
    rng = np.random.default_rng(2)
    P = sample_ball(8000, rng)
    d = signed_distance(P, V, F, chunk_size=3000)
    analytic = np.linalg.norm(P, axis=1) - r
    err = d - analytic  # the mesh lies inside the sphere: mesh SDF >= sphere SDF, by at most the gap
    assert err.min() > -1e-12 and err.max() < gap + 1e-12
    assert gap < 3e-4
    np.testing.assert_array_equal(signed_distance(P, V, F, sign="winding") < 0, d < 0)
    np.testing.assert_allclose(winding_number(P[analytic < -0.01], V, F), 1.0, atol=1e-2)


def test_open_sheet_signs():
    V, F = sheet()
    rng = np.random.default_rng(3)
    xy = rng.uniform(-0.6, 0.6, size=(400, 2))
    z = rng.choice([-1.0, 1.0], 400) * rng.uniform(0.001, 0.015, 400)
    P = np.column_stack([xy, z])
    d = signed_distance(P, V, F, local_band=0.02)
    np.testing.assert_allclose(d, z, atol=1e-12)  # local side of the sheet: front +, behind -
    np.testing.assert_allclose(signed_distance(P, V, F, sign="pseudonormal"), z, atol=1e-12)
    # the winding number of a flat open sheet is below 0.5 on both sides: it encloses nothing
    w = winding_number(P, V, F)
    assert (w[z > 0] < 0).all() and (w[z < 0] < 0.5).all() and (w[z < 0] > 0.3).all()
    assert (signed_distance(P, V, F, sign="winding") > 0).all()
    # beyond the band, and beyond the boundary, the winding number decides: outside
    far = np.column_stack([xy, -0.3 * np.ones(len(xy))])
    assert (signed_distance(far, V, F, local_band=0.02) > 0).all()
    beyond = np.column_stack([1.0 + rng.uniform(0.001, 0.01, 50), rng.uniform(-0.5, 0.5, 50), -0.005 * np.ones(50)])
    assert (signed_distance(beyond, V, F) > 0).all()
    assert (signed_distance(beyond, V, F, sign="pseudonormal") < 0).all()  # pseudonormal extends the plane


def test_open_sphere_is_closed_by_the_winding_cap():
    """A sphere with its top cap cut off: inside exactly below the flat disc that spans the hole."""
    r, h = 0.8, 0.5
    V, F = icosphere(4, r)
    F = F[V[F][:, :, 2].max(axis=1) < h]
    rim = V[edge_report(F, len(V)).irregular_edges.ravel()][:, 2]  # a jagged loop: z in [rim_lo, rim_hi]
    rng = np.random.default_rng(4)
    P = sample_ball(20000, rng)
    d = signed_distance(P, V, F)
    radial = np.linalg.norm(P, axis=1) - r
    clear = (np.abs(radial) > 0.01) & ((P[:, 2] < rim.min() - 0.01) | (P[:, 2] > rim.max() + 0.01))
    expected_inside = (radial < 0) & (P[:, 2] < rim.min())
    np.testing.assert_array_equal((d < 0)[clear], expected_inside[clear])
    # the pseudonormal alone calls points between the disc and the missing cap inside
    pn = signed_distance(P, V, F, sign="pseudonormal")
    above_disc = clear & (radial < 0) & (P[:, 2] > rim.max())
    assert above_disc.sum() > 20 and (pn[above_disc] < 0).mean() > 0.9


def test_barycentric_coordinates_recover_known_weights():
    rng = np.random.default_rng(7)
    V = rng.normal(size=(30, 3))
    F = np.stack([rng.permutation(30)[:3] for _ in range(20)])
    which = rng.integers(0, len(F), 500)
    weights = rng.dirichlet(np.ones(3), 500) * 1.6 - 0.2  # also outside the triangle (sum stays 1)
    weights /= weights.sum(axis=1, keepdims=True)
    points = np.einsum("nk,nkd->nd", weights, V[F[which]])
    np.testing.assert_allclose(barycentric_coordinates(points, V, F, which), weights, atol=1e-9)
    # a point off the plane gets the weights of its orthogonal projection
    normal = np.cross(V[F[which, 1]] - V[F[which, 0]], V[F[which, 2]] - V[F[which, 0]])
    lifted = points + 0.3 * normal / np.linalg.norm(normal, axis=1, keepdims=True)
    np.testing.assert_allclose(barycentric_coordinates(lifted, V, F, which), weights, atol=1e-9)


def test_ict_skin_open_scan_signs():
    """The ICT skin (open at the neck, eyes and mouth) behaves like a closed head."""
    data = np.load(require(ICT_NPZ))
    F = data["triangles"].astype(np.int64)
    F = F[(F < 11248).all(axis=1)]
    neutral = data["neutral"][:11248].astype(np.float64)
    V = Similarity.fit([neutral]).apply(neutral)
    assert edge_report(F, len(V)).n_open_edges > 0
    rng = np.random.default_rng(6)
    surface = sample_surface(V, F, 3000, rng)
    pts, nrm = surface.points, surface.normals
    offset = rng.choice([-1.0, 1.0], 3000) * rng.uniform(0.0005, 0.004, 3000)
    d = signed_distance(pts + offset[:, None] * nrm, V, F)
    assert (np.sign(d) == np.sign(offset)).mean() > 0.995  # the side of the skin the point is on
    assert np.abs(np.abs(d) - np.abs(offset)).mean() < 2e-4
    centre = V[:9409].mean(0) - [0, 0, 0.3]  # well inside the skull
    far = np.array([[0, 0, 0.99], [0, -0.99, 0], [0.99, 0, 0], [0, 0, -0.99]])
    d2 = signed_distance(np.vstack([centre, far]), V, F)
    assert d2[0] < -0.1 and (d2[1:] > 0).all()
