"""Every verb on a run of each family, asserting what it writes (files, metric keys, plausible values), and
the options that mean the same everywhere (``--n``, ``--overwrite``, wrong-family errors in one line)."""

import json

import numpy as np
import pytest

from morphable.cli import main
from morphable.io import load_weights, read_json, read_mesh


@pytest.fixture(scope="module")
def pca_run(tiny_faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("verbs") / "pca"
    assert main(["train", "pca", "--data", str(tiny_faces), "--out", str(out), "--latent", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def coma_run(tiny_faces, tmp_path_factory):
    """CoMA for 2 epochs, with a hierarchy (factors 2) that suits a 642-vertex mesh."""
    from morphable.config import PRESETS
    from morphable.experiment import train

    out = tmp_path_factory.mktemp("verbs") / "coma"
    config = PRESETS["coma"]()
    config.data.path, config.model.latent, config.model.factors = str(tiny_faces), 4, [2, 2, 2, 2]
    config.train.epochs, config.train.batch_size = 2, 8
    train(config, out, progress=False)
    return out


def one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("run_name", ["pca_run", "coma_run"])
def test_mesh_model_verbs(run_name, request, tmp_path, capsys):
    run = request.getfixturevalue(run_name)
    metrics = read_json(run / "metrics.json")
    assert {"mean_mm", "median_mm", "splits", "fit"} <= set(metrics) and 0 < metrics["mean_mm"] < 100
    assert (run / "report.md").read_text().count("plots/") >= 3
    assert main(["eval", str(run)]) == 0
    again = read_json(run / "metrics.json")
    assert again["mean_mm"] == pytest.approx(metrics["mean_mm"], rel=1e-6) and again["fit"] == metrics["fit"]

    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    info = read_json(tmp_path / "s" / "samples.json")
    template = np.load(run / "template_vertices.npy")
    assert info["n"] == 3 and (tmp_path / "s" / "samples.png").exists()
    codes = load_weights(tmp_path / "s" / "codes.safetensors")[0]["codes"]
    assert codes.shape == (3, 4)
    sample = read_mesh(tmp_path / "s" / "sample_00.ply").vertices
    assert sample.shape == template.shape and np.isfinite(sample).all()
    # samples stay in the data's range: radius of the bumpy spheres is 0.1 m +- a few mm
    assert 0.05 < np.linalg.norm(sample, axis=1).mean() < 0.15
    one_line_error(capsys, ["sample", str(run), "--n", "3", "--out", str(tmp_path / "s")], "--overwrite")

    assert main(["interpolate", str(run), "--source", "0", "--target", "1", "--n", "4",
                 "--out", str(tmp_path / "i")]) == 0
    ends = [read_mesh(tmp_path / "i" / f"interp_{k:02d}.ply").vertices for k in (0, 3)]
    from morphable import load_run

    model = load_run(run, "cpu")
    test = model.test_meshes()
    np.testing.assert_allclose(ends[0], model.reconstruct(test[:1])[0], atol=1e-5)
    np.testing.assert_allclose(ends[1], model.reconstruct(test[1:2])[0], atol=1e-5)
    one_line_error(capsys, ["extract", str(run), "--out", str(tmp_path / "x.ply")], "applies to implicit runs")
    one_line_error(capsys, ["fit", str(run), "--points", str(tmp_path / "i" / "interp_00.ply"),
                            "--out", str(tmp_path / "f")], "applies to implicit runs", "fit-linear")
    one_line_error(capsys, ["parts", str(run), "--source", "0", "--target", "1", "--out", str(tmp_path / "p")],
                   "part codes")
    one_line_error(capsys, ["eval", str(run), "--gt", str(tmp_path / "i" / "interp_00.ply")], "implicit runs")


def test_implicit_verbs(npm_run, sdf_dir, tmp_path, capsys):
    import trimesh

    from conftest import SPHERE_RADII
    from morphable.io import write_ply

    metrics = read_json(npm_run / "metrics.json")
    assert {"final", "validation", "n_shapes", "fit"} <= set(metrics)
    assert metrics["validation"]["loss"] > 0 and (npm_run / "plots" / "training_shapes.png").exists()
    gt = tmp_path / "large.ply"  # named like training shape 0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADII["large"])
    write_ply(gt, sphere.vertices, sphere.faces)
    assert main(["eval", str(npm_run), "--gt", str(gt), "--res", "48", "--metric-samples", "20000"]) == 0
    scored = read_json(npm_run / "metrics.json")
    head = scored["ground_truth"]["large"]["head"]
    assert 0 < head["chamfer_l1_mm"] < 100 and scored["fit"] == metrics["fit"]  # 800 mm sphere, 20 epochs
    one_line_error(capsys, ["eval", str(npm_run), "--gt", str(tmp_path / "nobody.ply")], "nobody")
    one_line_error(capsys, ["eval", str(npm_run), "--data", str(sdf_dir)], "--gt")
    one_line_error(capsys, ["interpolate", str(npm_run), "--source", "a.ply", "--target", "1",
                            "--out", str(tmp_path / "i")], "training-code index")
    assert main(["interpolate", str(npm_run), "--source", "0", "--target", "1", "--n", "3", "--res", "32",
                 "--out", str(tmp_path / "i")]) == 0
    assert json.loads((tmp_path / "i" / "interpolation.json").read_text())["steps"] == 3
    assert main(["extract", str(npm_run), "--code", "1", "--res", "32", "--out", str(tmp_path / "x.ply")]) == 0
    one_line_error(capsys, ["extract", str(npm_run), "--code", "1", "--out", str(tmp_path / "x.ply")], "--overwrite")
    one_line_error(capsys, ["parts", str(npm_run), "--source", "0", "--target", "1", "--out", str(tmp_path / "p")],
                   "part codes")


def test_bad_config_values_are_one_line(tiny_faces, tmp_path, capsys):
    one_line_error(capsys, ["train", "coma", "--data", str(tiny_faces), "--out", str(tmp_path / "r"),
                            "--epochs", "0"], "--epochs")
    one_line_error(capsys, ["train", "coma", "--data", str(tiny_faces), "--out", str(tmp_path / "r"),
                            "--lr", "-1"], "--lr")
    assert not (tmp_path / "r").exists()
    run = tmp_path / "edited"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "coma", "train": {"optimizer": "lbfgs"}}))
    one_line_error(capsys, ["eval", str(run)], "config.json", "train.optimizer")
    (run / "config.json").write_text(json.dumps({"method": "nerf"}))
    one_line_error(capsys, ["eval", str(run)], "unknown method 'nerf'")


def test_implicit_training_refuses_mesh_options(sdf_dir, tmp_path, capsys):
    for option in (["--split", "identity"], ["--fold", "e1"], ["--unit", "cm"], ["--fold", "all"]):
        one_line_error(capsys, ["train", "npm-small", "--data", str(sdf_dir), "--out", str(tmp_path / "r"), *option],
                       option[0])
    assert not (tmp_path / "r").exists()


def test_export_pca_run_as_linear_model(pca_run, coma_run, tmp_path, capsys):
    from morphable import load_linear_model, load_run

    assert main(["export", str(pca_run), "--out", str(tmp_path / "pca.npz")]) == 0
    linear = load_linear_model(tmp_path / "pca.npz")
    model = load_run(pca_run, "cpu")
    codes = model.encode(model.test_meshes()[:3])
    std = model.codec.stddev.astype(np.float64)
    np.testing.assert_allclose(linear.vertices(codes / std), model.decode(codes), atol=1e-5)
    assert linear.unit == "m" and np.array_equal(linear.faces, model.faces)
    one_line_error(capsys, ["export", str(pca_run), "--out", str(tmp_path / "pca.npz")], "--overwrite")
    one_line_error(capsys, ["export", str(coma_run), "--out", str(tmp_path / "coma.npz")], "not a linear model")
    one_line_error(capsys, ["export", str(pca_run), "--out", str(tmp_path / "pca.ply")], ".npz")


def test_eval_on_other_data_keeps_the_training_codes(pca_run, tmp_path):
    from conftest import write_tiny_faces

    codes = (pca_run / "train_codes.safetensors").read_bytes()
    other = write_tiny_faces(tmp_path / "other", n=24)
    assert main(["eval", str(pca_run), "--data", str(other)]) == 0
    assert (pca_run / "train_codes.safetensors").read_bytes() == codes  # sample still draws the run's own codes
    assert main(["eval", str(pca_run)]) == 0


def test_train_refuses_what_it_would_ignore_and_writes_nothing(tiny_faces, tmp_path, capsys):
    out = str(tmp_path / "r")
    one_line_error(capsys, ["train", "pca", "--data", str(tiny_faces), "--out", out, "--epochs", "7"],
                   "closed form", "--epochs")
    one_line_error(capsys, ["train", "coma", "--data", str(tiny_faces), "--out", out, "--device", "foo"],
                   "unknown device 'foo'")
    assert not (tmp_path / "r").exists()
    one_line_error(capsys, ["train", "coma", "--out", out], "--data is required")


def test_overwrite_replaces_a_run_and_resume_takes_the_same_options(tiny_faces, tmp_path, capsys):
    import csv

    out = tmp_path / "run"
    base = ["train", "spiralnet++", "--data", str(tiny_faces), "--out", str(out), "--latent", "4",
            "--batch-size", "8", "--quiet"]
    assert main([*base, "--epochs", "2"]) == 0
    (out / "stale.txt").write_text("from an older run")
    assert main([*base, "--epochs", "1", "--overwrite"]) == 0
    with open(out / "log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]  # the old rows are gone, not appended to
    assert not (out / "stale.txt").exists()
    one_line_error(capsys, ["train", "spiralnet++", "--out", str(out), "--resume", "--epochs", "1"],
                   "differs from its config.json in model.latent (run 4, command line", "train.batch_size")
    one_line_error(capsys, ["train", "coma", "--out", str(out), "--resume"], "'spiralnet++' run, not 'coma'")
    before = read_json(out / "metrics.json")
    assert main(["train", "spiralnet++", "--out", str(out), "--latent", "4", "--batch-size", "8", "--epochs", "1",
                 "--resume", "--quiet", "--device", "cpu"]) == 0
    assert read_json(out / "metrics.json")["mean_mm"] == before["mean_mm"]  # finished: resuming trains nothing
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "keep.txt").write_text("mine")
    one_line_error(capsys, ["train", "pca", "--data", str(tiny_faces), "--out", str(not_a_run), "--overwrite"],
                   "not a run folder")
    assert (not_a_run / "keep.txt").exists()


def test_mesh_runs_refuse_implicit_options(pca_run, tmp_path, capsys):
    one_line_error(capsys, ["eval", str(pca_run), "--res", "64"], "--res apply to implicit runs")
    one_line_error(capsys, ["sample", str(pca_run), "--res", "64", "--out", str(tmp_path / "s")], "--res")
    one_line_error(capsys, ["eval", str(pca_run), "--folds", "--data", str(tmp_path)], "--folds")
