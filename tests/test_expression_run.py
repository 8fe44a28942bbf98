"""Expression runs end to end: ``train expression-small --identity``, the run's model, fit, transfer, interpolate,
sample, and the errors of bad combinations (tiny sizes: 2 subjects x 2 expressions, a 3 x 48 field)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from morphable.cli import main
from morphable.data import deformation as dd
from morphable.data.synthetic import write_synthetic_dataset
from morphable.errors import MorphableError
from morphable.experiment import load_run
from morphable.io import read_mesh

SMALL = dict(pairs=3000, n_surface=3000, n_near=3000, n_ball=1500, n_eval=4000, progress=False)
TINY_FIELD = ["--latent", "8"]


@pytest.fixture(scope="module", autouse=True)
def small_evaluation():
    """The runs' own surface metrics at test size (48^3 extraction, 20k points a surface)."""
    from morphable.implicit import expression_experiment

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(expression_experiment, "EVAL_RESOLUTION", 48)
        mp.setattr(expression_experiment, "EVAL_SAMPLES", 20_000)
        yield


def _train_identity(data, out, epochs: int = 60) -> None:
    assert main(["train", "npm-small", "--data", str(data), "--out", str(out), "--epochs", str(epochs), "--quiet"]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Deformation data of 2 subjects x 2 expressions x 3 frames, an npm-small identity run on its identity/ folder
    and an expression run (latent 8, 3 x 48 field, 150 epochs) over it."""
    from morphable.config import PRESETS

    root = tmp_path_factory.mktemp("expression")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MORPHABLE_CACHE", str(root / "cache"))
        seq = write_synthetic_dataset(root / "seq", subjects=2, expressions=2, frames=3, seed=0)
        data = dd.write_deformation_dataset(seq, root / "def", seed=3, **SMALL)
    _train_identity(data / "identity", root / "identity")
    config = PRESETS["expression-small"]()
    config.data.path = str(data)
    config.model.identity = str(root / "identity")
    config.model.latent, config.model.hidden, config.model.n_layers, config.model.pairs = 8, 48, 3, 300
    config.train.epochs, config.train.device = 150, "cpu"
    from morphable.experiment import train

    train(config, root / "expression", progress=False)
    return {"root": root, "seq": seq, "data": data, "identity": root / "identity", "expression": root / "expression"}


def test_training_writes_a_run_that_beats_the_identity_map(runs):
    run = runs["expression"]
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("config.json", "deformation.json", "model.safetensors", "log.csv", "report.md",
                 "plots/expressions.png", "plots/losses.png"):
        assert (run / name).is_file(), name
    assert len(list((run / "meshes").glob("*.ply"))) == min(4, metrics["pairs"]["posed_samples"])
    pairs = metrics["pairs"]
    assert pairs["posed_samples"] == sum(not s["neutral"] for s in json.loads((run / "deformation.json").read_text())
                                         ["samples"])
    assert pairs["face_error_ratio"] < 0.7, pairs          # the field explains most of the motion of its own samples
    assert pairs["nonface_motion_mm"] < 0.5, pairs
    assert metrics["surfaces"]                              # (dominated by the 60-epoch identity model's error here)
    for entry in metrics["surfaces"].values():
        assert all(np.isfinite(entry[label][region]["chamfer_l1_mm"]) for label in ("posed", "identity")
                   for region in ("face", "head"))


def test_posed_mesh_is_the_warped_identity_mesh_in_any_chunking(runs, monkeypatch):
    from morphable.implicit import expression_model

    model = load_run(runs["expression"], "cpu")
    k = next(i for i, neutral in enumerate(model.is_neutral) if not neutral)
    vertices, faces = model.extract(k, 40, normalised=True)
    neutral, neutral_faces = model.identity.extract(model.identity_codes[model.subject_of[k]], 40, normalised=True)
    np.testing.assert_array_equal(faces, neutral_faces)
    field = model.field.double()
    z_id, z_ex = (c.double() for c in model.sample_codes(k))
    with torch.no_grad():
        expected = np.stack([(torch.tensor(v)[None, None] + field(z_ex[None], z_id[None], torch.tensor(v)[None, None]))
                             [0, 0].numpy() for v in neutral[:50]])
    model.field.float()
    np.testing.assert_allclose(vertices[:50], expected, atol=2e-5)
    monkeypatch.setattr(expression_model, "WARP_CHUNK", 7)
    again, _ = model.extract(k, 40, normalised=True)
    np.testing.assert_allclose(again, vertices, atol=1e-6)
    data_units, _ = model.extract(model.names[k], 40)
    np.testing.assert_allclose(model.similarity.apply(data_units), vertices, atol=1e-6)
    calls = []
    monkeypatch.setattr(model.identity, "extract", lambda *a, **k: calls.append(a) or neutral_mesh)
    neutral_mesh = (neutral, neutral_faces)
    model.extract(k, 40)                                    # the same identity: no new extraction
    z_other = model.codes[(k + 1) % model.n_codes]
    model.extract((model.identity_codes[model.subject_of[k]], z_other), 40)
    assert calls == []
    model.extract(k, 41)                                    # another resolution extracts again
    assert len(calls) == 1


def test_posed_sdf_vanishes_on_the_posed_mesh(runs):
    model = load_run(runs["expression"], "cpu")
    k = next(i for i, neutral in enumerate(model.is_neutral) if not neutral)
    vertices, _ = model.extract(k, 48)
    values, converged = model.sdf(vertices[::25], k)
    neutral, _ = model.identity.extract(model.identity_codes[model.subject_of[k]], 48)
    floor = np.abs(model.identity.sdf(neutral[::25], model.identity_codes[model.subject_of[k]])).max()
    assert converged.mean() > 0.99
    assert np.nanmax(np.abs(values)) < floor + 1e-3 * (vertices.max() - vertices.min())


def test_fit_transfer_interpolate_and_sample_through_the_command_line(runs, tmp_path, capsys):
    run, seq = str(runs["expression"]), runs["seq"]
    model = load_run(run, "cpu")
    k = next(i for i, neutral in enumerate(model.is_neutral) if not neutral)
    sample = model.names[k]
    subject, expression, frame = sample.split("__")
    scan = seq / subject / expression / f"{frame}.ply"
    assert main(["data", "depth", str(scan), "--out", str(tmp_path / "cloud.ply"), "--n", "400"]) == 0
    assert main(["fit", run, "--points", str(tmp_path / "cloud.ply"), "--gt", str(scan), "--out", str(tmp_path / "fit"),
                 "--steps", "8", "--refine-steps", "4", "--res", "32", "--metric-samples", "2000"]) == 0
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert {"face", "head", "converged_last", "energy_last"} <= set(metrics)
    for name in ("codes.safetensors", "fit.ply", "neutral.ply", "fit.png"):
        assert (tmp_path / "fit" / name).is_file()
    assert main(["report", run, "--fit", str(tmp_path / "fit"), "--out", str(tmp_path / "report.html")]) == 0
    assert "fit fit" in (tmp_path / "report.html").read_text()  # the fitted posed head is shown

    neutral_sample = f"{subject}__neutral"
    assert main(["transfer", run, "--source", sample, "--target", neutral_sample, "--out", str(tmp_path / "tr"),
                 "--res", "32"]) == 0
    transferred, source = read_mesh(tmp_path / "tr" / "transfer.ply"), read_mesh(tmp_path / "tr" / "source.ply")
    np.testing.assert_allclose(transferred.vertices, source.vertices, atol=1e-5)  # same identity: same head
    info = json.loads((tmp_path / "tr" / "transfer.json").read_text())
    assert info["source"]["sample"] == sample and info["target"]["sample"] == neutral_sample

    assert main(["interpolate", run, "--source", str(k), "--target", neutral_sample,
                 "--n", "3", "--out", str(tmp_path / "ip"), "--res", "32"]) == 0
    np.testing.assert_allclose(read_mesh(tmp_path / "ip" / "interp_00.ply").vertices,
                               model.extract(k, 32)[0], atol=1e-5)
    np.testing.assert_allclose(read_mesh(tmp_path / "ip" / "interp_02.ply").vertices,
                               model.extract(neutral_sample, 32)[0], atol=1e-5)
    other = model.subjects[1 - model.subject_of[k]]
    assert main(["sample", run, "--n", "2", "--out", str(tmp_path / "sm"), "--res", "32", "--subject", other]) == 0
    assert json.loads((tmp_path / "sm" / "samples.json").read_text())["subject"] == other


def _one_error_line(capsys, argv, *fragments):
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_combinations_are_one_line_and_write_nothing(runs, tmp_path, capsys):
    data, identity = str(runs["data"]), str(runs["identity"])
    out = tmp_path / "run"
    base = ["train", "expression-small", "--data", data, "--out", str(out), "--epochs", "1", "--quiet"]
    _one_error_line(capsys, base, "--identity RUN")
    _one_error_line(capsys, base + ["--identity", str(runs["expression"])], "npm or triplane run")
    _one_error_line(capsys, base + ["--identity", identity, "--latent", "200"], "model.hidden")
    _one_error_line(capsys, ["train", "npm-small", "--data", data + "/identity", "--out", str(out), "--identity",
                             identity], "--identity applies to expression presets")
    other = runs["root"] / "other"                          # an identity run of other heads (one subject only)
    seq = write_synthetic_dataset(runs["root"] / "seq1", subjects=1, expressions=1, frames=3, seed=5)
    dd.write_deformation_dataset(seq, runs["root"] / "def1", seed=3, **SMALL)
    _train_identity(runs["root"] / "def1" / "identity", other, epochs=1)
    _one_error_line(capsys, base + ["--identity", str(other)], str(other), "no shape for subject")
    _one_error_line(capsys, ["transfer", identity, "--source", "0", "--target", "0", "--out", str(tmp_path / "t")],
                    "expression run")
    _one_error_line(capsys, ["sample", identity, "--n", "1", "--out", str(tmp_path / "s"), "--subject", "x"],
                    "--subject applies to expression runs")
    assert not out.exists() and not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


def test_identity_run_changed_since_training_is_refused(runs, tmp_path):
    import shutil

    from morphable.io import load_weights, save_weights

    run = tmp_path / "expression"
    shutil.copytree(runs["expression"], run)
    identity = tmp_path / "identity"
    shutil.copytree(runs["identity"], identity)
    config = json.loads((run / "config.json").read_text())
    config["model"]["identity"] = str(identity)
    (run / "config.json").write_text(json.dumps(config))
    tensors, metadata = load_weights(identity / "model.safetensors")
    key = next(k for k in tensors if k.endswith("codes"))
    tensors[key] = tensors[key] + 0.01
    save_weights(identity / "model.safetensors", tensors, metadata)
    with pytest.raises(MorphableError, match="retrained"):
        load_run(run, "cpu")


def test_presets_leave_room_for_the_codes_in_the_skip_layer():
    from morphable.config import PRESETS

    paper, small = PRESETS["expression"](), PRESETS["expression-small"]()
    assert (paper.model.hidden, paper.model.n_layers, paper.model.latent) == (1024, 8, 200)
    assert (paper.model.correspondence, paper.model.penalty, paper.model.code) == (1e2, 1e-5, 5e-5)
    assert paper.model.hidden > paper.model.latent + 512 + 3
    npm_small = PRESETS["npm-small"]().model.latent
    assert small.model.hidden > small.model.latent + npm_small + 3


def test_joint_fit_of_a_posed_cloud_beats_neutral_only_fitting(runs, tmp_path):
    """A cloud of the model's own posed head (known codes): the joint identity + expression fit reaches at most
    half the face Chamfer-L1 of fitting the identity alone (face region: the synthetic face labels of the nearest
    template vertex)."""
    from morphable.data.scans import depth_observation
    from morphable.implicit.fit import fit_code
    from morphable.io import UNIT_TO_MM, write_ply
    from morphable.metrics import nearest_neighbours, region_metrics

    model = load_run(runs["expression"], "cpu")
    info = json.loads((runs["expression"] / "deformation.json").read_text())
    sample = max((s for s in info["samples"] if not s["neutral"]), key=lambda s: s["max_displacement_mm"])
    k = model.names.index(sample["name"])
    truth = model.extract(k, 64)
    write_ply(tmp_path / "posed.ply", *truth)
    depth_observation(tmp_path / "posed.ply", tmp_path / "cloud.ply", n_points=500, seed=0)
    cloud = read_mesh(tmp_path / "cloud.ply").vertices
    template = read_mesh(runs["seq"] / sample["subject"] / sample["expression"] / f"{sample['frame']}.ply").vertices
    face = np.load(runs["data"] / "face_mask.npy")[nearest_neighbours(truth[0], template)[1]]

    joint = model.fit(cloud, steps=300, refine_steps=100)
    assert min(joint.converged) > 0.99
    network = model.identity.implicit.network
    points = torch.as_tensor(model.similarity.apply(cloud), dtype=torch.float32)
    neutral_code, _ = fit_code(lambda z, y: network(z, y)[0], model.identity_codes.shape[1], points, 300)
    scores = {}
    for name, mesh in (("joint", model.extract((joint.identity, joint.expression), 64)),
                       ("neutral only", model.identity.extract(neutral_code, 64))):
        scores[name] = region_metrics(mesh, truth, face, UNIT_TO_MM[model.unit], n_samples=500_000)["face"][
            "chamfer_l1_mm"]
    assert scores["joint"] <= 0.5 * scores["neutral only"], scores


def test_volume_rendered_posed_sdf_matches_the_rasterised_posed_mesh(runs):
    """The posed SDF (root finding, implicit-gradient normals) volume-rendered from the front agrees with the warped
    identity mesh rasterised by the same camera; where the expression moves the surface (the posed and neutral
    rasters differ by more than 0.01), it follows the posed mesh and the unwarped identity SDF does not."""
    from morphable.render import Camera, LaplaceDensity, rasterize, render_views

    model = load_run(runs["expression"], "cpu")
    info = json.loads((runs["expression"] / "deformation.json").read_text())
    k = model.names.index(max((s for s in info["samples"] if not s["neutral"]),
                              key=lambda s: s["max_displacement_mm"])["name"])
    z_id = model.sample_codes(k)[0]
    posed = model.extract(k, 96, normalised=True)
    neutral = model.identity.extract(z_id, 96, normalised=True)
    camera = Camera.look_at((0.0, 0.0, 2.6), (0.0, 0.0, 0.0), fov_deg=46.0, width=32, height=32)
    network = model.identity.implicit.network
    fields = {"posed": model.sdf_function(k),
              "neutral": lambda p: network(z_id[None], p.reshape(1, -1, 3))[0][0].reshape(p.shape[:-1])}
    renders = {name: render_views(fn, [camera], LaplaceDensity(beta_init=1e-3), create_graph=False)
               for name, fn in fields.items()}
    raster, raster_neutral = rasterize(*posed, camera), rasterize(*neutral, camera)
    mask = raster.mask
    opacity, depth = renders["posed"].opacity[0, 0].detach(), renders["posed"].depth[0, 0].detach().double()
    normals = renders["posed"].normals[0, 0].detach().double()
    assert float((mask & (opacity > 0.5)).sum() / (mask | (opacity > 0.5)).sum()) > 0.95
    assert float((normals[mask] * raster.normals[mask]).sum(-1).mean()) > 0.99
    assert float((depth[mask] - raster.depth[mask]).abs().mean()) < 0.005
    moved = mask & raster_neutral.mask & ((raster.depth - raster_neutral.depth).abs() > 0.01)
    assert int(moved.sum()) >= 10
    neutral_depth = renders["neutral"].depth[0, 0].detach().double()
    error, neutral_error = ((d[moved] - raster.depth[moved]).abs().mean() for d in (depth, neutral_depth))
    assert error < 0.5 * neutral_error, (float(error), float(neutral_error))


def test_resumed_expression_run_ends_with_the_uninterrupted_weights(runs, tmp_path):
    """4 epochs in one go and 2 + ``--resume`` to 4 (the identity left out on resume keeps the run's) give the
    same field, expression codes and optimiser state, bit for bit."""
    from morphable.io import load_weights

    base = ["train", "expression-small", "--data", str(runs["data"]), "--batch-size", "2", "--quiet",
            "--latent", "8", "--device", "cpu"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for out, epochs in ((whole, "4"), (parts, "2")):
        assert main(base + ["--identity", str(runs["identity"]), "--out", str(out), "--epochs", epochs]) == 0
    assert main(base + ["--out", str(parts), "--epochs", "4", "--resume"]) == 0
    a, _ = load_weights(whole / "last.safetensors")
    b, _ = load_weights(parts / "last.safetensors")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
