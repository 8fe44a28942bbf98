"""SDF training data: normalisation, exact signed distance (closed and open meshes), sampling, storage."""

import json

import numpy as np
import pytest
import torch
import trimesh

from conftest import ICT_NPZ, require
from morphable.data import sdf
from morphable.errors import MorphableError

igl = pytest.importorskip("igl")


def sphere(subdivisions: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.icosphere(subdivisions, radius=radius)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def tessellation_gap(V: np.ndarray, F: np.ndarray, radius: float) -> float:
    """Largest distance between a sphere and its inscribed icosphere: radius minus the closest face plane."""
    tri = V[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return radius - float(np.abs((n * tri[:, 0]).sum(1) / np.linalg.norm(n, axis=1)).min())


def sheet(n: int = 8, half: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An open square ``[-half, half]^2`` at z = 0 with normals +z."""
    g = np.linspace(-half, half, n + 1)
    x, y = np.meshgrid(g, g, indexing="ij")
    V = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return V, F


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


# --------------------------------------------------------------------------- normalisation


def test_normalise_to_unit_sphere_and_mm():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(200, 3)) * [3.0, 5.0, 2.0] + [10.0, -4.0, 7.0]
    N, sim = sdf.normalise_to_unit_sphere(V)
    assert np.isclose(np.linalg.norm(N, axis=1).max(), 0.9)
    np.testing.assert_allclose((N.max(0) + N.min(0)) / 2, 0.0, atol=1e-12)
    np.testing.assert_allclose(sim.invert(N), V, atol=1e-12)
    np.testing.assert_allclose(N, (V - np.asarray(sim.translation)) * sim.scale)
    # a normalised length maps back to source units, then to mm
    d_src = np.linalg.norm(V[0] - V[1])
    d_norm = np.linalg.norm(N[0] - N[1])
    assert np.isclose(sim.to_mm(d_norm, "cm"), d_src * 10)
    assert np.isclose(sim.to_mm(d_norm, "m"), d_src * 1000)
    assert sdf.Similarity.from_dict(json.loads(json.dumps(sim.to_dict()))) == sim
    # shared similarity keeps relative sizes
    shared = sdf.Similarity.fit([V, V * 0.5])
    assert np.isclose(np.linalg.norm(shared.apply(V * 0.5) - shared.apply(V * 0.5).mean(0), axis=1).max() * 2,
                      np.linalg.norm(shared.apply(V) - shared.apply(V).mean(0), axis=1).max(), rtol=1e-9)


# --------------------------------------------------------------------------- signed distance


def test_distance_matches_naive_loop_on_small_meshes():
    rng = np.random.default_rng(1)
    V, F = sphere(1, 0.7)
    V = V * (1 + 0.15 * rng.random((len(V), 1)))  # star-shaped, not convex any more
    P = rng.uniform(-1, 1, size=(40, 3))
    naive = np.array([min(point_triangle_distance(p, *V[f]) for f in F) for p in P])
    d = sdf.signed_distance(P, V, F)
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
    np.testing.assert_allclose(np.abs(sdf.signed_distance(P, V, F_open)), naive_open, rtol=1e-10, atol=1e-12)


def test_sphere_sdf_matches_analytic():
    r = 0.8
    V, F = sphere(5, r)
    gap = tessellation_gap(V, F, r)
    rng = np.random.default_rng(2)
    P = sdf.sample_ball(8000, rng)
    d = sdf.signed_distance(P, V, F, chunk_size=3000)
    analytic = np.linalg.norm(P, axis=1) - r
    err = d - analytic  # the mesh lies inside the sphere: mesh SDF >= sphere SDF, by at most the gap
    assert err.min() > -1e-12 and err.max() < gap + 1e-12
    assert gap < 3e-4
    np.testing.assert_array_equal(sdf.signed_distance(P, V, F, sign="winding") < 0, d < 0)
    np.testing.assert_allclose(sdf.winding_number(P[analytic < -0.01], V, F), 1.0, atol=1e-2)


def test_open_sheet_signs():
    V, F = sheet()
    rng = np.random.default_rng(3)
    xy = rng.uniform(-0.6, 0.6, size=(400, 2))
    z = rng.choice([-1.0, 1.0], 400) * rng.uniform(0.001, 0.015, 400)
    P = np.column_stack([xy, z])
    d = sdf.signed_distance(P, V, F, local_band=0.02)
    np.testing.assert_allclose(d, z, atol=1e-12)  # local side of the sheet: front +, behind -
    np.testing.assert_allclose(sdf.signed_distance(P, V, F, sign="pseudonormal"), z, atol=1e-12)
    # the winding number of a flat open sheet is below 0.5 on both sides: it encloses nothing
    w = sdf.winding_number(P, V, F)
    assert (w[z > 0] < 0).all() and (w[z < 0] < 0.5).all() and (w[z < 0] > 0.3).all()
    assert (sdf.signed_distance(P, V, F, sign="winding") > 0).all()
    # beyond the band, and beyond the boundary, the winding number decides: outside
    far = np.column_stack([xy, -0.3 * np.ones(len(xy))])
    assert (sdf.signed_distance(far, V, F, local_band=0.02) > 0).all()
    beyond = np.column_stack([1.0 + rng.uniform(0.001, 0.01, 50), rng.uniform(-0.5, 0.5, 50), -0.005 * np.ones(50)])
    assert (sdf.signed_distance(beyond, V, F) > 0).all()
    assert (sdf.signed_distance(beyond, V, F, sign="pseudonormal") < 0).all()  # pseudonormal extends the plane


def test_open_sphere_is_closed_by_the_winding_cap():
    """A sphere with its top cap cut off: inside exactly below the flat disc that spans the hole."""
    r, h = 0.8, 0.5
    V, F = sphere(4, r)
    F = F[V[F][:, :, 2].max(axis=1) < h]
    rim = V[sdf.edge_report(F, len(V)).irregular_edges.ravel()][:, 2]  # a jagged loop: z in [rim_lo, rim_hi]
    rng = np.random.default_rng(4)
    P = sdf.sample_ball(20000, rng)
    d = sdf.signed_distance(P, V, F)
    radial = np.linalg.norm(P, axis=1) - r
    clear = (np.abs(radial) > 0.01) & ((P[:, 2] < rim.min() - 0.01) | (P[:, 2] > rim.max() + 0.01))
    expected_inside = (radial < 0) & (P[:, 2] < rim.min())
    np.testing.assert_array_equal((d < 0)[clear], expected_inside[clear])
    # the pseudonormal alone calls points between the disc and the missing cap inside
    pn = sdf.signed_distance(P, V, F, sign="pseudonormal")
    above_disc = clear & (radial < 0) & (P[:, 2] > rim.max())
    assert above_disc.sum() > 20 and (pn[above_disc] < 0).mean() > 0.9


def test_mesh_checks():
    V, F = sphere(1, 0.5)
    with pytest.raises(MorphableError, match="inwards"):
        sdf.check_mesh("inv", V, F[:, ::-1])
    bad = F.copy()
    bad[0] = bad[0, ::-1]
    with pytest.raises(MorphableError, match="consistently oriented"):
        sdf.check_mesh("flip", V, bad)
    with pytest.raises(MorphableError, match="nan: vertices contain NaN"):
        sdf.check_mesh("nan", np.where(np.arange(len(V))[:, None] == 3, np.nan, V), F)
    with pytest.raises(MorphableError, match="out of range"):
        sdf.check_mesh("range", V, F + 1)
    with pytest.raises(MorphableError, match="region mask"):
        sdf.check_mesh("mask", V, F, np.ones(3, dtype=bool))
    report = sdf.check_mesh("ok", *sheet(2))
    assert report.n_open_edges == 8 and not report.closed
    assert sdf.check_mesh("ok", V, F).closed


# --------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def sphere_samples():
    r = 0.8
    V, F = sphere(5, r)
    mask = V[:, 2] > 0.2
    samples = sdf.precompute_sdf_samples(V, F, mask, n_surface=20000, n_near=20000, n_ball=20000, seed=5)
    return r, V, F, mask, samples


def test_surface_samples_lie_on_the_surface_with_analytic_normals(sphere_samples):
    r, V, F, mask, s = sphere_samples
    gap = tessellation_gap(V, F, r)
    assert s.face_points.shape == (15000, 3) and s.nonface_points.shape == (5000, 3)
    for pts, nrm in ((s.face_points, s.face_normals), (s.nonface_points, s.nonface_normals)):
        sq, _, _ = igl.point_mesh_squared_distance(pts.astype(np.float64), V, F)
        assert np.sqrt(sq).max() < 1e-6  # float32 rounding
        rad = np.linalg.norm(pts, axis=1)
        assert rad.max() < r + 1e-6 and rad.min() > r - gap - 1e-6
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-6)
        assert ((nrm * pts).sum(1) / rad).min() > 0.9995
    # region split by triangle majority vote: face points sit above the mask's boundary
    assert s.face_points[:, 2].min() > 0.2 - 0.05 and s.nonface_points[:, 2].max() < 0.2 + 0.05
    # area-weighted: surface points are uniform on the sphere, so z is uniform on [-r, r] within a region
    z = s.nonface_points[:, 2]
    lo = z.min()
    assert abs(np.mean(z < (lo + 0.2) / 2) - 0.5) < 0.03


def test_barycentric_sampling_is_uniform_and_area_weighted():
    # two triangles of areas 1/2 and 3/2: a quarter of the samples on the first, uniform inside each
    V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [2, 3, 0]], dtype=np.float64)
    F = np.array([[0, 1, 2], [1, 3, 4]])
    pts, nrm = sdf.sample_surface(V, F, 40000, np.random.default_rng(0))
    first = pts[:, 0] + pts[:, 1] <= 1 + 1e-12
    assert abs(first.mean() - 0.25) < 0.01
    np.testing.assert_allclose(pts[first].mean(0), V[F[0]].mean(0), atol=0.005)
    np.testing.assert_allclose(pts[~first].mean(0), V[F[1]].mean(0), atol=0.01)
    # uniform in a triangle: the fraction in the corner sub-triangle (half the edge lengths) is 1/4
    assert abs((pts[first][:, 0] + pts[first][:, 1] < 0.5).mean() - 0.25) < 0.015
    np.testing.assert_allclose(nrm, np.broadcast_to([0, 0, 1.0], nrm.shape), atol=1e-12)


def test_face_region_majority_vote():
    F = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    mask = np.array([1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(sdf.face_region(F, mask), [True, False, False, False])
    np.testing.assert_array_equal(sdf.face_region(F, mask.astype(bool) | (np.arange(6) == 3)),
                                  [True, True, True, True])


def test_near_surface_sdf_matches_the_perturbation(sphere_samples):
    r, V, F, mask, s = sphere_samples
    gap = tessellation_gap(V, F, r)
    for level, sigma in enumerate(sdf.SIGMAS):
        for pts, d in ((s.near_face_points[level], s.near_face_sdf[level]),
                       (s.near_nonface_points[level], s.near_nonface_sdf[level])):
            # the exact SDF is the normal component of the N(0, sigma^2 I) offset: N(0, sigma^2)
            assert abs(d.std() / sigma - 1) < 0.03
            assert abs(np.abs(d).mean() / (sigma * np.sqrt(2 / np.pi)) - 1) < 0.03
            assert abs(d.mean()) < 0.05 * sigma
            err = d - (np.linalg.norm(pts, axis=1) - r)
            assert err.min() > -1e-6 and err.max() < gap + 1e-6


def test_ball_points_fill_the_unit_ball(sphere_samples):
    r, V, F, mask, s = sphere_samples
    rad = np.linalg.norm(s.ball_points, axis=1)
    assert rad.max() <= 1.0 + 1e-7
    assert abs(np.mean(rad ** 3) - 0.5) < 0.01  # |p|^3 ~ U(0, 1) for uniform points in the ball
    np.testing.assert_allclose(s.ball_points.mean(0), 0.0, atol=0.02)
    err = s.ball_sdf - (rad - r)
    assert err.min() > -1e-6 and err.max() < tessellation_gap(V, F, r) + 1e-6


def test_precompute_is_deterministic_and_checks_input():
    V, F = sphere(2, 0.7)
    mask = np.zeros(len(V), dtype=bool)
    a = sdf.precompute_sdf_samples(V, F, mask, n_surface=300, n_near=300, n_ball=200, seed=1)
    b = sdf.precompute_sdf_samples(V, F, mask, n_surface=300, n_near=300, n_ball=200, seed=1)
    c = sdf.precompute_sdf_samples(V, F, mask, n_surface=300, n_near=300, n_ball=200, seed=2)
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k])
    assert not np.array_equal(a.ball_points, c.ball_points)
    assert a.face_points.shape == (0, 3) and a.nonface_points.shape == (300, 3)  # empty face region
    with pytest.raises(MorphableError, match="unit ball"):
        sdf.precompute_sdf_samples(V * 2, F, mask, n_surface=10, n_near=10, n_ball=10)


def test_subsample_draws_stored_rows(sphere_samples):
    s = sphere_samples[-1]
    g = torch.Generator().manual_seed(0)
    batch = sdf.subsample(s, generator=g)
    assert batch["surface_points"].shape == (1000, 3) and batch["surface_normals"].shape == (1000, 3)
    assert batch["near_points"].shape == (2000, 3) and batch["near_sdf"].shape == (2000,)
    assert batch["ball_points"].shape == (300, 3) and batch["ball_sdf"].shape == (300,)
    assert batch["surface_is_face"].sum() == 750 and batch["surface_is_face"][:750].all()
    assert all(t.dtype in (torch.float32, torch.bool) for t in batch.values())
    # every drawn row is a stored row with its own label (look-up by exact coordinates)
    table = {tuple(p): d for p, d in zip(s.near_face_points[1], s.near_face_sdf[1])}
    rows = batch["near_points"][1000:1750].numpy()
    assert all(table[tuple(p)] == d for p, d in zip(rows, batch["near_sdf"][1000:1750].numpy()))
    ball = {tuple(p): d for p, d in zip(s.ball_points, s.ball_sdf)}
    assert all(ball[tuple(p)] == d for p, d in zip(batch["ball_points"].numpy(), batch["ball_sdf"].numpy()))
    # the small sigma level really is closer to the surface
    assert batch["near_sdf"][1000:].abs().mean() < 0.2 * batch["near_sdf"][:1000].abs().mean()
    again = sdf.subsample(s, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    # an empty region hands its share to the other one
    V, F = sphere(2, 0.7)
    one = sdf.precompute_sdf_samples(V, F, np.ones(len(V)), n_surface=100, n_near=100, n_ball=50)
    b1 = sdf.subsample(one, sdf.SubsampleCounts(face=30, nonface=10, ball=5))
    assert b1["surface_points"].shape == (40, 3) and b1["surface_is_face"].all() and b1["near_sdf"].shape == (80,)


# --------------------------------------------------------------------------- storage


def test_save_load_round_trip_and_broken_files(tmp_path, sphere_samples):
    s = sphere_samples[-1]
    path = tmp_path / "shape.npz"
    s.save(path)
    loaded = sdf.SdfSamples.load(path)
    for k, v in s.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["shape.npz"]

    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MorphableError, match="broken.npz"):
        sdf.SdfSamples.load(broken)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(MorphableError, match="garbage.npz"):
        sdf.SdfSamples.load(garbage)
    missing = tmp_path / "missing.npz"
    np.savez(missing, face_points=s.face_points)
    with pytest.raises(MorphableError, match="missing.npz.*missing"):
        sdf.SdfSamples.load(missing)
    arrays = s.arrays()
    arrays["ball_sdf"] = arrays["ball_sdf"][:-1]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    with pytest.raises(MorphableError, match="wrong.npz.*ball_sdf"):
        sdf.SdfSamples.load(wrong)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**s.arrays(), "ball_sdf": np.array([object()] * 3, dtype=object)})
    with pytest.raises(MorphableError, match="pickled.npz"):
        sdf.SdfSamples.load(pickled)
    with pytest.raises(MorphableError, match="nothere.npz.*not found"):
        sdf.SdfSamples.load(tmp_path / "nothere.npz")


def _two_spheres():
    V, F = sphere(2, 5.0)
    return [("small", V + [1.0, 2.0, 3.0], F, V[:, 2] > 0), ("big", 2 * V - [1.0, 0.0, 0.0], F, V[:, 2] > 0)]


def test_write_and_read_dataset(tmp_path):
    out = tmp_path / "sdf"
    counts = dict(n_surface=400, n_near=400, n_ball=200)
    sdf.write_sdf_dataset(_two_spheres(), out, "cm", progress=False, **counts)
    assert sorted(p.name for p in out.iterdir()) == ["big.npz", "sdf_dataset.json", "small.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["sdf"]  # no temporary folders left
    info = json.loads((out / "sdf_dataset.json").read_text())
    assert info["unit"] == "cm" and [s["name"] for s in info["shapes"]] == ["small", "big"]
    assert info["settings"]["n_surface"] == 400 and info["settings"]["sigmas"] == list(sdf.SIGMAS)

    ds = sdf.SdfDataset(out)
    assert len(ds) == 2 and ds.names == ["small", "big"] and ds.unit == "cm"
    assert ds.similarities[0] == ds.similarities[1]  # shared normalisation
    # shared similarity: centre of the union's bounding box = the big sphere's centre, its radius -> 0.9
    sim = ds.similarities[0]
    assert np.isclose(sim.scale, 0.09) and np.allclose(sim.translation, [-1.0, 0.0, 0.0])
    np.testing.assert_allclose(np.linalg.norm(ds.samples[1].face_points, axis=1), 0.89, atol=0.011)
    small_centre = (np.array([1.0, 2.0, 3.0]) - [-1.0, 0.0, 0.0]) * 0.09
    np.testing.assert_allclose(np.linalg.norm(ds.samples[0].face_points - small_centre, axis=1), 0.445, atol=0.006)
    assert np.isclose(ds.to_mm(1, 0.9), 100.0)  # 0.9 units = the big sphere's 10 cm radius

    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False)
    batch = next(iter(loader))
    assert batch["surface_points"].shape == (2, 1000, 3) and batch["near_sdf"].shape == (2, 2000)
    assert batch["index"].tolist() == [0, 1]
    ds.set_epoch(3)
    a, b = ds[1], ds[1]
    assert torch.equal(a["ball_points"], b["ball_points"])
    ds.set_epoch(4)
    assert not torch.equal(a["ball_points"], ds[1]["ball_points"])

    per = tmp_path / "per"
    sdf.write_sdf_dataset(_two_spheres(), per, "cm", normalisation="per_shape", progress=False, **counts)
    dp = sdf.SdfDataset(per)
    assert np.isclose(dp.similarities[1].scale * 2, dp.similarities[0].scale)
    for s in dp.samples:
        assert np.isclose(np.linalg.norm(s.face_points, axis=1).max(), 0.9, atol=0.01)

    with pytest.raises(MorphableError, match="not empty"):
        sdf.write_sdf_dataset(_two_spheres(), out, "cm", progress=False, **counts)
    sdf.write_sdf_dataset(_two_spheres()[:1], out, "cm", overwrite=True, progress=False, **counts)
    assert sdf.SdfDataset(out).names == ["small"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per", "sdf"]


def test_write_dataset_is_all_or_nothing(tmp_path, monkeypatch):
    meshes = _two_spheres()
    with pytest.raises(MorphableError, match="duplicate"):
        sdf.write_sdf_dataset(meshes + meshes[:1], tmp_path / "dup", "cm", progress=False)
    with pytest.raises(MorphableError, match="unknown unit"):
        sdf.write_sdf_dataset(meshes, tmp_path / "unit", "inch", progress=False)
    with pytest.raises(MorphableError, match="big.*inwards"):
        sdf.write_sdf_dataset([meshes[0], (meshes[1][0], meshes[1][1], meshes[1][2][:, ::-1], meshes[1][3])],
                              tmp_path / "inv", "cm", progress=False)
    calls = []

    def failing_save(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        np.savez(path, **self.arrays())

    monkeypatch.setattr(sdf.SdfSamples, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        sdf.write_sdf_dataset(meshes, tmp_path / "fail", "cm", n_surface=100, n_near=100, n_ball=50, progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_dataset_errors(tmp_path):
    with pytest.raises(MorphableError, match="not a folder"):
        sdf.SdfDataset(tmp_path / "none")
    with pytest.raises(MorphableError, match="sdf_dataset.json"):
        sdf.SdfDataset(tmp_path)
    out = tmp_path / "d"
    sdf.write_sdf_dataset(_two_spheres(), out, "mm", n_surface=100, n_near=100, n_ball=50, progress=False)
    (out / "big.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(MorphableError, match="big.npz"):
        sdf.SdfDataset(out)
    (out / "sdf_dataset.json").write_text('{"unit": "mm"}')
    with pytest.raises(MorphableError, match="malformed"):
        sdf.SdfDataset(out)


# --------------------------------------------------------------------------- real data


def test_ict_skin_open_scan_signs():
    """The ICT skin (open at the neck, eyes and mouth) behaves like a closed head."""
    data = np.load(require(ICT_NPZ))
    F = data["triangles"].astype(np.int64)
    F = F[(F < 11248).all(axis=1)]
    V, _ = sdf.normalise_to_unit_sphere(data["neutral"][:11248].astype(np.float64))
    report = sdf.check_mesh("ict", V, F)
    assert report.n_open_edges > 0
    rng = np.random.default_rng(6)
    pts, nrm = sdf.sample_surface(V, F, 3000, rng)
    offset = rng.choice([-1.0, 1.0], 3000) * rng.uniform(0.0005, 0.004, 3000)
    d = sdf.signed_distance(pts + offset[:, None] * nrm, V, F)
    assert (np.sign(d) == np.sign(offset)).mean() > 0.995  # the side of the skin the point is on
    assert np.abs(np.abs(d) - np.abs(offset)).mean() < 2e-4
    centre = V[:9409].mean(0) - [0, 0, 0.3]  # well inside the skull
    far = np.array([[0, 0, 0.99], [0, -0.99, 0], [0.99, 0, 0], [0, 0, -0.99]])
    d2 = sdf.signed_distance(np.vstack([centre, far]), V, F)
    assert d2[0] < -0.1 and (d2[1:] > 0).all()
