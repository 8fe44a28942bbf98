"""SDF training data: normalisation, mesh checks, surface / near / ball samples, storage.

The signed distance itself is tested in test_distance.py, the surface sampler in test_sampling.py.
"""

import json

import numpy as np
import pytest
import torch

from mesh_fixtures import icosphere, sheet, tessellation_gap
from morphable.data import sdf
from morphable.errors import MorphableError

igl = pytest.importorskip("igl")


# --------------------------------------------------------------------------- normalisation


def test_similarity_into_the_unit_sphere_and_mm():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(200, 3)) * [3.0, 5.0, 2.0] + [10.0, -4.0, 7.0]
    sim = sdf.Similarity.fit([V])
    N = sim.apply(V)
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


def test_mesh_checks():
    V, F = icosphere(1, 0.5)
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
    V, F = icosphere(5, r)
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
    V, F = icosphere(2, 0.7)
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
    V, F = icosphere(2, 0.7)
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
    V, F = icosphere(2, 5.0)
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
