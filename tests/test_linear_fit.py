"""Linear-model depth fitting: recovery of known ICT-FaceKit identities, the energy's minimiser, truncation,
poses, expressions, a PCA export fitted through the CLI, the run writer and bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.optimize import minimize

from conftest import ICT_NPZ, require
from morphable.cli import main
from morphable.data.linear import ICT_FACE_VERTICES, ICT_SKIN_VERTICES, LinearFaceModel, load_ict
from morphable.errors import MorphableError
from morphable.explicit.linear_fit import closest_points, fit_linear_model, fit_linear_run
from morphable.explicit.pca import PCAModel
from morphable.io import load_weights, read_json, read_mesh, write_ply
from morphable.metrics import region_metrics
from morphable.render import Camera, depth_point_cloud

N_MODES = 20


def frontal_points(vertices: np.ndarray, faces: np.ndarray, n: int = 2500) -> torch.Tensor:
    """Depth observation from +z as ``morphable data depth`` makes it (4.5 bounding radii, 30 deg)."""
    centre = (vertices.min(0) + vertices.max(0)) / 2
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    camera = Camera.look_at(tuple(centre + [0.0, 0.0, 4.5 * radius]), tuple(centre), fov_deg=30.0)
    points, _ = depth_point_cloud(torch.from_numpy(vertices), torch.from_numpy(faces), camera, n_points=n)
    return points


@pytest.fixture(scope="module")
def ict():
    """ICT skin with its first N_MODES modes, a random identity and its frontal depth observation."""
    model = load_ict(require(ICT_NPZ)).subset_vertices(ICT_SKIN_VERTICES).truncate(N_MODES, 0)
    truth = np.random.default_rng(11).standard_normal(N_MODES)
    vertices = model.vertices(truth)
    return model, truth, vertices, frontal_points(vertices, model.faces)


def face_error_mm(vertices, reference) -> float:
    """Mean per-vertex distance over the ICT face region, cm -> mm."""
    return float(np.linalg.norm(np.asarray(vertices) - reference, axis=1)[:ICT_FACE_VERTICES].mean() * 10)


def test_recovers_a_model_instance_far_better_than_zero_coefficients(ict):
    model, truth, vertices, points = ict
    fit = fit_linear_model(model, points)
    zero_error = face_error_mm(model.mean, vertices)
    error = face_error_mm(fit.vertices, vertices)
    assert zero_error > 3.0
    assert error < 0.02 * zero_error
    coefficient_error = np.linalg.norm(fit.shape_coefficients.numpy() - truth)
    assert coefficient_error < 0.1 * np.linalg.norm(truth)
    assert fit.energy[fit.best_iteration] < 1e-3 * fit.energy[0]
    assert fit.inlier_fraction == 1.0 and fit.scale == 1.0
    np.testing.assert_array_equal(fit.rotation.numpy(), np.eye(3))
    # the returned mesh is the model at the returned coefficients
    np.testing.assert_allclose(fit.vertices.numpy(), model.vertices(fit.shape_coefficients.numpy()), atol=1e-9)
    assert fit.expression_coefficients.shape == (0,)


def _sphere_model() -> tuple[LinearFaceModel, np.ndarray]:
    """A sphere of radius 100 mm with two modes: +1 mm along z, +1 % radius."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=100.0)
    v = np.asarray(sphere.vertices)
    modes = np.stack([np.tile([0.0, 0.0, 1.0], (len(v), 1)), 0.01 * v])
    return LinearFaceModel(v, modes, np.asarray(sphere.faces), unit="mm"), v


def test_the_fit_is_the_minimiser_of_the_stated_energy():
    model, v = _sphere_model()
    truth = np.array([3.0, 2.0])
    points = frontal_points(model.vertices(truth), model.faces, n=400)
    faces = model.faces
    sigma, tau, lam = 5.0, 10.0, 1.0

    def energy(w: np.ndarray) -> float:
        d, _, _ = closest_points(points.numpy(), model.vertices(w), faces)
        return float((np.minimum(d, tau) ** 2).sum() / (2 * sigma ** 2) + 0.5 * lam * (w @ w))

    fit = fit_linear_model(model, points, noise_mm=sigma, truncation_mm=tau, prior_weight=lam)
    w = fit.shape_coefficients.numpy()
    assert fit.energy[fit.best_iteration] == pytest.approx(energy(w), rel=1e-9)
    reference = minimize(energy, np.zeros(2), method="Nelder-Mead",
                         options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 2000})
    np.testing.assert_allclose(w, reference.x, atol=2e-3)
    assert energy(w) <= reference.fun + 1e-6
    # the prior visibly shrinks the estimate; without it the exact instance is recovered
    assert np.linalg.norm(w - truth) > 0.05
    free = fit_linear_model(model, points, noise_mm=sigma, truncation_mm=tau, prior_weight=0.0)
    np.testing.assert_allclose(free.shape_coefficients.numpy(), truth, atol=1e-4)


def test_truncated_outliers_do_not_move_the_fit(ict):
    model, _, _, points = ict
    clean = fit_linear_model(model, points)
    rng = np.random.default_rng(0)
    outliers = points[rng.choice(len(points), 100, replace=False)] + torch.tensor([0.0, 0.0, 5.0], dtype=points.dtype)
    noisy = fit_linear_model(model, torch.cat([points, outliers]))
    d, _, _ = closest_points(outliers.numpy(), noisy.vertices.numpy(), model.faces)
    assert d.min() > 1.0  # every outlier is beyond tau = 10 mm = 1 cm
    assert noisy.inlier_fraction == pytest.approx(len(points) / (len(points) + 100))
    np.testing.assert_allclose(noisy.shape_coefficients.numpy(), clean.shape_coefficients.numpy(), atol=1e-6)
    # without truncation the same outliers pull the face
    pulled = fit_linear_model(model, torch.cat([points, outliers]), truncation_mm=1e3)
    assert np.linalg.norm(pulled.shape_coefficients.numpy() - clean.shape_coefficients.numpy()) > 0.1


def test_expression_modes_are_fitted_with_the_shape():
    shape_model, v = _sphere_model()
    model = LinearFaceModel(v, shape_model.shape_basis, shape_model.faces,
                            expression_basis=(0.02 * v * [1.0, 0.0, 0.0])[None], expression_std=[2.0], unit="mm")
    truth_a, truth_b = np.array([3.0, 2.0]), np.array([1.5])
    points = frontal_points(model.vertices(truth_a, truth_b), model.faces, n=400)
    both = fit_linear_model(model, points, n_expr=1, prior_weight=0.0)
    np.testing.assert_allclose(both.shape_coefficients.numpy(), truth_a, atol=1e-4)
    np.testing.assert_allclose(both.expression_coefficients.numpy(), truth_b, atol=1e-4)
    np.testing.assert_allclose(both.vertices.numpy(), model.vertices(truth_a, truth_b), atol=1e-6)
    shape_only = fit_linear_model(model, points, prior_weight=0.0)  # n_expr = 0: the x-stretch is unexplained
    assert shape_only.energy[shape_only.best_iteration] > 1e3 * (both.energy[both.best_iteration] + 1e-9)


def pca_export(tmp_path) -> tuple[LinearFaceModel, Path]:
    """A PCA (3 components) of 40 smoothly deformed icospheres (mm), exported as a generic npz."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=100.0)
    v = np.asarray(sphere.vertices)
    fields = np.stack([v * [0.05, 0.0, 0.0], np.tile([0.0, 0.0, 3.0], (len(v), 1)), v * [0.0, 0.03, 0.03]])
    w = np.random.default_rng(0).standard_normal((40, 3))
    data = v + np.einsum("nk,kvc->nvc", w, fields)
    model = PCAModel.fit(data, 3).to_linear_model(np.asarray(sphere.faces), "mm")
    model.save_npz(tmp_path / "pca.npz")
    return model, tmp_path / "pca.npz"


def test_pca_export_through_fit_linear_recovers_the_coefficients(tmp_path):
    model, path = pca_export(tmp_path)
    truth = np.array([1.2, -0.7, 0.4])
    vertices = model.vertices(truth)
    exact = fit_linear_model(model, torch.from_numpy(vertices), prior_weight=0.0)  # cloud = model vertices
    np.testing.assert_allclose(exact.shape_coefficients.numpy(), truth, atol=1e-8)
    write_ply(tmp_path / "cloud.ply", vertices)  # float32 coordinates
    assert main(["fit-linear", str(path), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "fit"),
                 "--prior-weight", "0"]) == 0
    tensors, meta = load_weights(tmp_path / "fit" / "coefficients.safetensors")
    np.testing.assert_allclose(tensors["shape_coefficients"].numpy(), truth, atol=1e-4)
    assert tensors["expression_coefficients"].shape == (0,) and meta["unit"] == "mm"
    metrics = read_json(tmp_path / "fit" / "metrics.json")
    assert metrics["shape_modes"] == 3 and metrics["energy_last"] < 1e-4 * metrics["energy_first"]
    # the model's own prior shrinks every coefficient towards 0 a little
    assert main(["fit-linear", str(path), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "map")]) == 0
    shrunk = load_weights(tmp_path / "map" / "coefficients.safetensors")[0]["shape_coefficients"].numpy()
    assert np.all(np.abs(shrunk) < np.abs(truth)) and np.allclose(shrunk, truth, atol=0.05)


def test_output_folder_is_refused_replaced_or_left_untouched(tmp_path, capsys, monkeypatch):
    model, path = pca_export(tmp_path)
    write_ply(tmp_path / "cloud.ply", model.vertices([0.5, 0.5, 0.5]))
    args = ["fit-linear", str(path), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "fit")]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "fit").iterdir()}
    assert sorted(before) == ["coefficients.safetensors", "fit.ply", "metrics.json"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("fit: output folder exists and is not empty (use --overwrite)") and "\n" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "fit").iterdir()} == before
    (tmp_path / "fit" / "stale.txt").write_text("old")
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "fit").iterdir()) == sorted(before)
    # a failure while writing leaves neither the folder nor a temporary one
    import morphable.io

    def broken(*_args, **_kwargs):
        raise MorphableError("disk full")

    monkeypatch.setattr(morphable.io, "write_json", broken)
    with pytest.raises(MorphableError, match="disk full"):
        fit_linear_run(path, tmp_path / "cloud.ply", tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply", "fit", "pca.npz"]


def _rotation_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


@pytest.mark.parametrize("pose, scale", [("rigid", 1.0), ("similarity", 1.03)])
def test_pose_recovers_a_moved_observation(ict, pose, scale):
    model, _, vertices, points = ict
    centre = model.mean.mean(axis=0)
    R, t = _rotation_y(3.0), np.array([0.3, -0.2, 0.4])
    moved_vertices = scale * (vertices - centre) @ R.T + centre + t
    moved = torch.from_numpy(scale * (points.numpy() - centre) @ R.T + centre + t)
    fixed = fit_linear_model(model, moved)
    fit = fit_linear_model(model, moved, pose=pose)
    assert face_error_mm(fixed.vertices, moved_vertices) > 1.0
    assert face_error_mm(fit.vertices, moved_vertices) < 0.2
    np.testing.assert_allclose(fit.rotation.numpy(), R, atol=2e-3)
    np.testing.assert_allclose(fit.rotation.numpy() @ fit.rotation.numpy().T, np.eye(3), atol=1e-12)
    assert fit.scale == pytest.approx(scale, abs=3e-3)


def test_run_writes_mesh_coefficients_and_metrics(tmp_path):
    model = load_ict(require(ICT_NPZ)).subset_vertices(ICT_SKIN_VERTICES)
    truth = np.random.default_rng(5).standard_normal(model.n_shape)
    vertices = model.vertices(truth)
    write_ply(tmp_path / "gt.ply", vertices, model.faces)
    write_ply(tmp_path / "cloud.ply", frontal_points(vertices, model.faces).numpy())
    assert main(["fit-linear", str(ICT_NPZ), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "fit"),
                 "--gt", str(tmp_path / "gt.ply"), "--region-vertices", str(ICT_FACE_VERTICES),
                 "--vertices", str(model.n_vertices), "--metric-samples", "50000"]) == 0
    metrics = read_json(tmp_path / "fit" / "metrics.json")
    assert metrics["metric_samples"] == 50_000
    # point-to-point metrics have a sampling floor: the ground truth against itself
    mask = np.arange(len(vertices)) < ICT_FACE_VERTICES
    floor = region_metrics((vertices, model.faces), (vertices, model.faces), mask, 10.0, n_samples=50_000)
    assert metrics["energy_last"] < metrics["energy_first"]
    for region in ("face", "head"):
        assert set(metrics[region]) >= {"chamfer_l1_mm", "normal_consistency", "fscore_1mm"}
    assert metrics["face"]["chamfer_l1_mm"] < floor["face"]["chamfer_l1_mm"] + 0.1
    assert metrics["face"]["fscore_1mm"] > floor["face"]["fscore_1mm"] - 0.05
    assert metrics["head"]["chamfer_l1_mm"] >= metrics["face"]["chamfer_l1_mm"]
    mesh = read_mesh(tmp_path / "fit" / "fit.ply")
    assert mesh.vertices.shape == vertices.shape and np.array_equal(mesh.faces, model.faces)
    # a face region larger than the ground truth is refused before anything is written
    assert main(["fit-linear", str(ICT_NPZ), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "bad"),
                 "--gt", str(tmp_path / "gt.ply"), "--region-vertices", str(len(vertices) + 1)]) == 2
    assert not (tmp_path / "bad").exists()


def test_bad_input_is_reported(ict, tmp_path):
    model, _, _, points = ict
    bad = points.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(MorphableError, match="NaN"):
        fit_linear_model(model, bad)
    with pytest.raises(MorphableError, match="shape"):
        fit_linear_model(model, points[:, :2])
    with pytest.raises(MorphableError, match="n_shape 21"):
        fit_linear_model(model, points, n_shape=N_MODES + 1)
    with pytest.raises(MorphableError, match="n_expr 1"):
        fit_linear_model(model, points, n_expr=1)
    with pytest.raises(MorphableError, match="pose"):
        fit_linear_model(model, points, pose="affine")
    (tmp_path / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(MorphableError, match="empty.ply"):
        fit_linear_run(ICT_NPZ, tmp_path / "empty.ply", tmp_path / "out")
