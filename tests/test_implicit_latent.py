"""Latent space of implicit runs: the Gaussian of the codes, samples, interpolation, `morphable sample` and
`morphable interpolate` on the tiny npm-small run of test_implicit_training."""

import numpy as np
import pytest
import torch
from torch import nn

from morphable.cli import main
from morphable.data.sdf import Similarity
from morphable.implicit.latent import blend_similarities, renormalise_codes
from morphable.latent import fit_code_gaussian, interpolate_codes, ledoit_wolf_shrinkage
from morphable.io import load_weights, read_json, read_mesh


def _known_gaussian(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    chol = torch.tril(torch.randn(d, d, generator=g, dtype=torch.float64)) + 2 * torch.eye(d, dtype=torch.float64)
    codes = mean + torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
    return codes, mean, chol @ chol.T


def test_fit_reproduces_a_known_gaussian_with_many_codes():
    codes, mean, cov = _known_gaussian(40_000, 4)
    gaussian = fit_code_gaussian(codes)
    assert gaussian.shrinkage < 1e-3  # N >> D: practically the sample covariance
    scale = cov.diagonal().max()
    # sampling error of 40k draws: std of the mean ~ sqrt(diag / N) ~ 0.02, of the covariance ~ 0.2 for diag ~ 9
    assert (gaussian.mean - mean).abs().max() < 0.1
    assert (gaussian.covariance - cov).abs().max() < 0.05 * scale
    # exactly the ML covariance blended with its trace
    centred = codes - codes.mean(0)
    s = centred.T @ centred / len(codes)
    a = gaussian.shrinkage
    torch.testing.assert_close(gaussian.covariance, (1 - a) * s + a * s.trace() / 4 * torch.eye(4, dtype=s.dtype))
    # and its samples follow it
    x = gaussian.sample(100_000, seed=3)
    assert (x.mean(0) - gaussian.mean).abs().max() < 0.1
    assert (torch.cov(x.T, correction=0) - gaussian.covariance).abs().max() < 0.05 * scale


def test_shrinkage_is_ledoit_wolf_and_keeps_the_spread_with_few_codes():
    from sklearn.covariance import ledoit_wolf

    codes, _, _ = _known_gaussian(6, 16, seed=1)
    gaussian = fit_code_gaussian(codes)
    reference_cov, reference_a = ledoit_wolf(codes.numpy())
    assert gaussian.shrinkage == pytest.approx(reference_a, rel=1e-9)
    np.testing.assert_allclose(gaussian.covariance.numpy(), reference_cov, rtol=1e-9, atol=1e-12)
    centred = codes - codes.mean(0)
    s = centred.T @ centred / len(codes)
    assert torch.linalg.matrix_rank(s) == 5  # singular: N - 1 < D
    assert torch.linalg.eigvalsh(gaussian.covariance).min() > 0  # the shrunk one is not
    assert float(gaussian.covariance.trace()) == pytest.approx(float(s.trace()), rel=1e-12)
    # the samples' mean squared distance from the mean is the codes' (tr S), up to sampling error
    x = gaussian.sample(50_000, seed=0)
    spread = (x - gaussian.mean).square().sum(1).mean()
    assert float(spread) == pytest.approx(float(s.trace()), rel=0.02)
    assert ledoit_wolf_shrinkage(torch.zeros(3, 5)) == 0.0  # identical codes: no spread, no shrinkage


def test_samples_are_deterministic_for_a_seed():
    codes, _, _ = _known_gaussian(5, 8, seed=2)
    gaussian = fit_code_gaussian(codes.float())
    assert torch.equal(gaussian.sample(4, seed=7), fit_code_gaussian(codes.float()).sample(4, seed=7))
    assert not torch.allclose(gaussian.sample(4, seed=7), gaussian.sample(4, seed=8))
    one = fit_code_gaussian(codes[:1])  # a single code: every sample is that code
    torch.testing.assert_close(one.sample(3), codes[:1].expand(3, -1), rtol=0, atol=0)
    fixed = fit_code_gaussian(codes, shrinkage=1.0)  # isotropic with the codes' total variance
    centred = codes - codes.mean(0)
    torch.testing.assert_close(fixed.covariance, centred.square().sum() / 40 * torch.eye(8, dtype=codes.dtype))
    with pytest.raises(ValueError):
        fit_code_gaussian(codes, shrinkage=1.5)


def test_interpolation_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    path = interpolate_codes(a, b, 7)
    assert path.shape == (7, 16)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path[3], (a + b) / 2)
    steps = path[1:] - path[:-1]  # equal steps along the segment
    torch.testing.assert_close(steps, (b - a).expand(6, -1) / 6)
    with pytest.raises(ValueError):
        interpolate_codes(a, b, 1)


def test_renormalisation_equals_the_code_table_lookup():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(6, 5, generator=g) * torch.tensor([0.1, 0.5, 0.9, 1.2, 2.0, 5.0])[:, None]
    out, clipped = renormalise_codes(codes, 1.0)
    table = nn.Embedding(6, 5, max_norm=1.0)
    with torch.no_grad():
        table.weight.copy_(codes)
    looked_up = table(torch.arange(6))
    assert torch.equal(out, looked_up.detach())
    assert clipped == int((codes.norm(dim=1) > 1).sum()) and clipped > 0
    assert torch.equal(renormalise_codes(codes, None)[0], codes)


def test_blend_similarities():
    s = Similarity(2.0, (1.0, 0.0, -1.0))
    assert blend_similarities([s, Similarity(2.0, (1.0, 0.0, -1.0))], [0.3, 0.7]) is s
    t = blend_similarities([s, Similarity(4.0, (3.0, 2.0, 1.0))], [0.75, 0.25])
    assert t.scale == pytest.approx(2.5)
    np.testing.assert_allclose(t.translation, (1.5, 0.5, -0.5))


def test_sample_cli_writes_meshes_codes_picture_and_json(npm_run, tmp_path, capsys):
    from morphable.implicit.experiment import load_implicit

    out = tmp_path / "samples"
    assert main(["sample", str(npm_run), "--n", "3", "--res", "32", "--seed", "4", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("sample ") >= 3  # one progress line per mesh
    info = read_json(out / "samples.json")
    assert info["n"] == 3 and info["seed"] == 4 and info["resolution"] == 32 and info["n_training_codes"] == 2
    codes = load_weights(out / "codes.safetensors")[0]["codes"]
    # the written codes are the seeded draw of the Gaussian of the run's table, renormalised like a look-up
    method, _, _ = load_implicit(npm_run)
    gaussian = fit_code_gaussian(method.codes.weight.detach())
    expected, _ = renormalise_codes(gaussian.sample(3, seed=4).float(), method.config.model.max_norm)
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)
    assert info["shrinkage"] == pytest.approx(gaussian.shrinkage)
    for i, record in enumerate(info["samples"]):
        assert record["file"] == f"sample_{i:02d}.ply" and record["faces"] > 0
        mesh = read_mesh(out / record["file"])
        assert len(mesh.vertices) == record["vertices"] and len(mesh.faces) == record["faces"]
        # two training spheres (0.8 m and 0.5 m, codes on a line): samples are spheres of similar size
        radius = np.linalg.norm(mesh.vertices, axis=1)
        assert 0.3 < radius.mean() < 1.0 and radius.std() < 0.1 * radius.mean()
    assert (out / "samples.png").stat().st_size > 1000


def test_interpolate_cli_ends_are_the_extracted_training_shapes(npm_run, tmp_path):
    out = tmp_path / "strip"
    assert main(["interpolate", str(npm_run), "--source", "0", "--target", "1", "--n", "3", "--res", "32",
                 "--out", str(out)]) == 0
    info = read_json(out / "interpolation.json")
    assert info["t"] == [0.0, 0.5, 1.0] and info["names"] == ["large", "small"]
    radii = []
    for code in (0, 1):
        assert main(["extract", str(npm_run), "--code", str(code), "--res", "32",
                     "--out", str(tmp_path / f"e{code}.ply")]) == 0
        end = read_mesh(out / f"interp_{2 * code:02d}.ply")
        reference = read_mesh(tmp_path / f"e{code}.ply")
        np.testing.assert_allclose(end.vertices, reference.vertices, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(end.faces, reference.faces)
    for i in range(3):
        radii.append(np.linalg.norm(read_mesh(out / f"interp_{i:02d}.ply").vertices, axis=1).mean())
    assert radii[0] > radii[1] > radii[2]  # the strip shrinks from the large sphere to the small one
    codes = load_weights(out / "codes.safetensors")[0]["codes"]
    assert codes.shape == (3, 16)
    assert (out / "interpolation.png").stat().st_size > 1000


def test_bad_inputs_exit_2_with_one_line(npm_run, tmp_path, capsys):
    assert main(["interpolate", str(npm_run), "--source", "0", "--target", "2", "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(npm_run) in err[0] and "--target 2 out of range" in err[0]
    assert not (tmp_path / "i").exists()
    assert main(["sample", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "not a run folder" in err[0]
    assert main(["sample", str(npm_run), "--n", "0", "--out", str(tmp_path / "s")]) == 2
    assert main(["sample", str(npm_run), "--shrinkage", "2", "--out", str(tmp_path / "s")]) == 2
    assert main(["interpolate", str(npm_run), "--source", "0", "--target", "1", "--n", "1",
                 "--out", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()
