"""Implicit identity models in the shared loop and the CLI: npm-small / triplane-small on two spheres."""

import csv

import numpy as np
import pytest
import torch
import trimesh

from morphable.cli import main
from morphable.config import PRESETS, config_from_dict
from morphable.data.sdf import SdfDataset
from morphable.experiment import train
from morphable.io import load_weights, read_json, read_mesh, read_ply, write_json, write_ply
from morphable.train import LAST_CHECKPOINT
from conftest import SPHERE_RADII

def _log(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sdf_dataset_from_cli(sdf_dir):
    data = SdfDataset(sdf_dir)
    assert data.names == ["large", "small"]
    scale = data.similarities[0].scale  # shared: the large sphere fills radius 0.9
    assert scale == pytest.approx(0.9 / 0.8, rel=1e-3)
    s = data.samples[1]
    # analytic SDF of the (faceted) small sphere: |x| - r within the tessellation error
    r = 0.5 * scale
    assert np.abs(np.linalg.norm(s.ball_points, axis=1) - r - s.ball_sdf).max() < 0.01
    assert np.abs(np.linalg.norm(s.face_points, axis=1) - r).max() < 0.01


def test_npm_small_losses_fall_and_metrics(npm_run):
    rows = _log(npm_run)
    assert len(rows) == PRESETS["npm-small"]().train.epochs
    first, last = rows[0], rows[-1]
    assert float(last["train_loss"]) < 0.5 * float(first["train_loss"])
    assert float(last["train_surface"]) < 0.5 * float(first["train_surface"])
    metrics = read_json(npm_run / "metrics.json")
    assert metrics["final"]["loss"] == pytest.approx(float(last["train_loss"]))
    assert set(metrics["final"]) == {"surface", "normal", "eikonal", "non_surface", "code", "loss"}
    tensors, meta = load_weights(npm_run / "model.safetensors")
    assert meta["method"] == "npm" and meta["n_codes"] == "2"
    assert tensors["method_extra.codes"].shape == (2, 16)


def test_triplane_small_losses_fall(sdf_dir, tmp_path):
    out = tmp_path / "tp"
    assert main(["train", "triplane-small", "--data", str(sdf_dir), "--out", str(out), "--quiet"]) == 0
    rows = _log(out)
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert float(rows[-1]["train_surface"]) < 0.5 * float(rows[0]["train_surface"])
    assert {"train_density", "train_total_variation", "train_triplane"} <= set(rows[0])
    assert "train_code" not in rows[0]  # Table 4.1 has no code term


def test_extract_cli_gives_each_code_its_sphere(npm_run, sdf_dir, tmp_path):
    scale = SdfDataset(sdf_dir).similarities[0].scale
    for code, name in enumerate(sorted(SPHERE_RADII)):
        norm_path, src_path = tmp_path / f"n{code}.ply", tmp_path / f"s{code}.obj"
        assert main(["extract", str(npm_run), "--code", str(code), "--res", "48", "--out", str(norm_path),
                     "--normalised"]) == 0
        assert main(["extract", str(npm_run), "--code", str(code), "--res", "48", "--out", str(src_path)]) == 0
        normalised, source = read_mesh(norm_path), read_mesh(src_path)
        radius = np.linalg.norm(normalised.vertices, axis=1)
        # 20 CPU steps already separate the codes: within 7 % of the true radii (0.9 and 0.5625)
        assert abs(radius.mean() - SPHERE_RADII[name] * scale) < 0.07 * SPHERE_RADII[name] * scale
        # source units = normalised / scale (the spheres are centred, so no translation)
        np.testing.assert_allclose(source.vertices, normalised.vertices / scale, atol=1e-5)
        np.testing.assert_array_equal(source.faces, normalised.faces)


def test_resume_gives_the_uninterrupted_weights(sdf_dir, tmp_path):
    config = PRESETS["npm-small"]()
    config.data.path = str(sdf_dir)
    config.train.epochs = 4
    train(config, tmp_path / "full", progress=False)
    config.train.epochs = 2
    train(config, tmp_path / "part", progress=False)
    stored = read_json(tmp_path / "part" / "config.json")
    stored["train"]["epochs"] = 4
    write_json(tmp_path / "part" / "config.json", stored)
    assert config_from_dict(stored).train.epochs == 4
    train(config, tmp_path / "part", resume=True, progress=False)
    full, _ = load_weights(tmp_path / "full" / LAST_CHECKPOINT)
    part, _ = load_weights(tmp_path / "part" / LAST_CHECKPOINT)
    assert full.keys() == part.keys()
    for key in full:
        torch.testing.assert_close(part[key], full[key], rtol=0, atol=0, msg=key)


def test_depth_cli_sees_the_front_of_the_sphere(sdf_dir, tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.8)
    write_ply(tmp_path / "sphere.ply", sphere.vertices, sphere.faces)
    assert main(["data", "depth", str(tmp_path / "sphere.ply"), "--out", str(tmp_path / "cloud.ply")]) == 0
    cloud = read_ply(tmp_path / "cloud.ply")
    assert cloud.vertices.shape == (2500, 3) and len(cloud.faces) == 0
    radius = np.linalg.norm(cloud.vertices, axis=1)
    assert np.abs(radius - 0.8).max() < 0.01  # on the (faceted) surface
    assert cloud.vertices[:, 2].min() > -1e-3  # only the hemisphere facing the camera on +z


def test_bad_inputs_exit_2_with_one_line(npm_run, tmp_path, capsys):
    not_sdf = tmp_path / "meshes"
    not_sdf.mkdir()
    (not_sdf / "a.obj").write_text("v 0 0 0\n")
    assert main(["train", "npm-small", "--data", str(not_sdf), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(not_sdf) in err[0] and "not an SDF dataset" in err[0]
    assert not (tmp_path / "run").exists()
    assert main(["extract", str(npm_run), "--code", "5", "--out", str(tmp_path / "m.ply")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "code 5 out of range" in err[0]
    assert main(["data", "sdf", str(tmp_path / "empty_missing"), "--out", str(tmp_path / "o"), "--unit", "m"]) == 2


def test_fit_cli_recovers_the_observed_sphere(npm_run, sdf_dir, tmp_path):
    from morphable.implicit.experiment import load_implicit
    from morphable.io import UNIT_TO_MM
    from morphable.metrics import region_metrics

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=SPHERE_RADII["large"])
    write_ply(tmp_path / "gt.ply", sphere.vertices, sphere.faces)
    assert main(["data", "depth", str(tmp_path / "gt.ply"), "--out", str(tmp_path / "cloud.ply")]) == 0
    assert main(["fit", str(npm_run), "--points", str(tmp_path / "cloud.ply"), "--out", str(tmp_path / "fit"),
                 "--gt", str(tmp_path / "gt.ply"), "--region-vertices", "300", "--steps", "100",
                 "--res", "32", "--metric-samples", "20000"]) == 0
    metrics = read_json(tmp_path / "fit" / "metrics.json")
    assert metrics["energy_last"] < 0.5 * metrics["energy_first"]
    assert (tmp_path / "fit" / "fit.png").stat().st_size > 1000
    assert set(metrics["face"]) >= {"chamfer_l1_mm", "normal_consistency", "fscore_1mm"}
    # the other training shape (radius 0.5 m) as the prediction: about 300 mm off
    other = tmp_path / "other.ply"
    assert main(["extract", str(npm_run), "--code", "1", "--res", "32", "--out", str(other)]) == 0
    mesh = read_mesh(other)
    wrong = region_metrics((mesh.vertices, mesh.faces), (sphere.vertices, sphere.faces), None, UNIT_TO_MM["m"],
                           n_samples=20_000)
    assert metrics["head"]["chamfer_l1_mm"] < 0.3 * wrong["head"]["chamfer_l1_mm"]
    # energy of the fitted code vs a random code on the same (normalised) points
    method, _, _ = load_implicit(npm_run)
    cloud = torch.as_tensor(read_ply(tmp_path / "cloud.ply").vertices * SdfDataset(sdf_dir).similarities[0].scale,
                            dtype=torch.float32)[None]
    fitted = load_weights(tmp_path / "fit" / "code.safetensors")[0]["code"][None]
    random_code = torch.randn(1, 16, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        e_fit = method.network(fitted, cloud)[0].abs().mean()
        e_random = method.network(random_code, cloud)[0].abs().mean()
    assert e_fit < 0.5 * e_random


def test_space_sdf_term_is_logged_and_falls(sdf_dir, tmp_path):
    from morphable.config import PRESETS
    
    config = PRESETS["triplane-small"]()
    config.data.path = str(sdf_dir)
    config.model.loss_weights = {"space_sdf": 2.0}
    train(config, tmp_path / "tp", progress=False)
    rows = _log(tmp_path / "tp")
    assert float(rows[-1]["train_space_sdf"]) < 0.7 * float(rows[0]["train_space_sdf"])
