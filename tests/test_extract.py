"""Mesh extraction: the narrow band gives the same mesh as dense evaluation; orientation; components."""

import numpy as np
import pytest
import torch

from morphable.implicit.deepsdf import DeepSDF
from morphable.implicit.triplane import TriplaneSDF
from morphable.mesh.extract import evaluate_grid, extract_mesh, grid_axes, marching_cubes


def sphere(points: torch.Tensor) -> torch.Tensor:
    return points.norm(dim=-1) - 0.5


def hard_case(points: torch.Tensor) -> torch.Tensor:
    """A sphere, a tiny sphere inside one coarse cell, a thin shell and two spheres 0.01 apart."""
    big = points.norm(dim=-1) - 0.45
    tiny = (points - torch.tensor([0.61, 0.58, -0.55])).norm(dim=-1) - 0.03
    shell = ((points - torch.tensor([-0.6, 0.55, 0.5])).norm(dim=-1) - 0.25).abs() - 0.006
    left = (points - torch.tensor([0.5, -0.6, 0.6])).norm(dim=-1) - 0.2
    right = (points - torch.tensor([0.5, -0.6, 0.19])).norm(dim=-1) - 0.2
    return torch.stack([big, tiny, shell, left, right]).amin(dim=0)


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6)


def assert_same_mesh(a, b, atol=1e-6):
    (va, fa, _), (vb, fb, _) = a, b
    assert fa.shape == fb.shape and len(fa) > 0
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_allclose(va, vb, atol=atol, rtol=0)


@pytest.mark.parametrize("resolution,bounds", [(64, (-1.0, 1.0)), (57, (-1.0, 1.0)),
                                               (48, ((-0.9, -1.0, -0.8), (1.0, 0.95, 1.0)))])
def test_band_equals_dense_on_analytic_sdf(resolution, bounds):
    dense = extract_mesh(hard_case, resolution, bounds, method="dense")
    band = extract_mesh(hard_case, resolution, bounds, method="band")
    assert_same_mesh(dense, band, atol=0)
    assert band[2].evaluated < 0.5 * dense[2].evaluated
    assert dense[2].evaluated == resolution ** 3


@pytest.mark.parametrize("margin", [0.0, 1.0, 2.0])
def test_band_is_exact_for_every_margin(margin):
    """The refinement margin only moves evaluations between strides: the mesh stays the dense one."""
    dense = extract_mesh(hard_case, 64, method="dense")
    band = extract_mesh(hard_case, 64, margin=margin, chunk=999)
    assert_same_mesh(dense, band, atol=0)
    assert band[2].evaluated < 0.5 * dense[2].evaluated


def test_folded_npm_band_equals_dense_of_the_unfolded_network():
    """The extractor's NPM field (code and beta folded) gives the dense mesh of the plain forward pass."""
    torch.manual_seed(2)
    deep = DeepSDF(latent_dim=8, hidden=64, n_layers=4, radius=0.5)
    code = 0.3 * torch.randn(8)
    with torch.no_grad():
        deep.layers[0].weight[:, :8].normal_(0.0, 0.02)
    dense = extract_mesh(lambda p: deep(code[None], p[None])[0], 48, method="dense", chunk=16384)
    assert_same_mesh(dense, extract_mesh(deep.sdf_function(code), 48), atol=1e-5)


def test_band_keeps_a_blob_smaller_than_a_coarse_cell():
    """A sphere of radius 0.03 between the stride-8 lattice points at 64^3: sign-change refinement misses it."""
    def blob(p):
        return (p - torch.tensor([0.06, 0.06, 0.06])).norm(dim=-1) - 0.045

    volume, exact, stats = evaluate_grid(blob, 64, coarse=8)
    axes = grid_axes(64)
    coarse_points = torch.stack(torch.meshgrid(*(a[::8] for a in axes), indexing="ij"), dim=-1).reshape(-1, 3)
    assert (blob(coarse_points) > 0).all()  # every coarse sample is outside
    dense_volume, _, _ = evaluate_grid(blob, 64, method="dense")
    assert (dense_volume < 0).sum() > 0
    np.testing.assert_array_equal(volume < 0, dense_volume < 0)
    np.testing.assert_array_equal(volume[exact], dense_volume[exact])


def test_level_and_orientation():
    dense = extract_mesh(sphere, 40, level=0.1, method="dense")
    band = extract_mesh(sphere, 40, level=0.1)
    assert_same_mesh(dense, band, atol=0)
    v, f, _ = band
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.6, atol=2e-3)
    assert signed_volume(v, f) == pytest.approx(4 / 3 * np.pi * 0.6 ** 3, rel=0.01)  # outward normals


def test_band_equals_dense_on_random_init_network():
    """Default PyTorch init: an arbitrary field, so the Lipschitz bound is estimated from the coarse grid."""
    torch.manual_seed(0)
    model = DeepSDF(latent_dim=8, hidden=64, n_layers=4, geometric_init=False)
    with torch.no_grad():
        model.layers[-1].bias.sub_(model(torch.zeros(1, 8), torch.zeros(1, 1, 3)).squeeze() - 0.01)
    fn = model.sdf_function(torch.zeros(8))
    dense = extract_mesh(fn, 48, method="dense")
    band = extract_mesh(fn, 48, lipschitz=None)
    assert_same_mesh(dense, band)


def test_band_equals_dense_on_perturbed_networks_deepsdf_and_triplane_grid_path():
    torch.manual_seed(1)
    deep = DeepSDF(latent_dim=8, hidden=64, n_layers=4, radius=0.5)
    with torch.no_grad():
        for layer in deep.layers[:-1]:
            layer.weight.add_(0.15 * torch.randn_like(layer.weight) / layer.in_features ** 0.5)
    fn = deep.sdf_function(torch.zeros(8))
    assert_same_mesh(extract_mesh(fn, 48, method="dense"), extract_mesh(fn, 48))

    tri = TriplaneSDF(latent_dim=8, channels=4, resolution=32, hidden=32, base_channels=8, radius=0.5).eval()
    with torch.no_grad():
        tri.decoder.layers[0].weight[:, :4].normal_(0.0, 0.05)
    field = tri.sdf_function(torch.randn(8))
    dense_generic = extract_mesh(lambda p: field(p), 48, method="dense")
    dense_grid = extract_mesh(field, 48, method="dense")
    band_grid = extract_mesh(field, 48)
    assert_same_mesh(dense_generic, dense_grid, atol=1e-5)
    assert_same_mesh(dense_grid, band_grid)
    assert band_grid[2].evaluated < dense_grid[2].evaluated


def test_largest_component_and_empty_field():
    def two(p):
        return torch.minimum((p - torch.tensor([0.4, 0, 0])).norm(dim=-1) - 0.3,
                             (p + torch.tensor([0.5, 0, 0])).norm(dim=-1) - 0.15)

    v, f, _ = extract_mesh(two, 40)
    vl, fl, _ = extract_mesh(two, 40, keep_largest=True)
    vb, fb, _ = extract_mesh(lambda p: (p - torch.tensor([0.4, 0, 0])).norm(dim=-1) - 0.3, 40)
    assert len(fl) < len(f)
    assert len(fl) == len(fb) and len(vl) == len(vb)
    np.testing.assert_allclose(np.sort(vl, axis=0), np.sort(vb, axis=0), atol=1e-12)
    assert fl.max() == len(vl) - 1
    ve, fe = marching_cubes(np.ones((8, 8, 8), dtype=np.float32))
    assert ve.shape == (0, 3) and fe.shape == (0, 3)
    with pytest.raises(ValueError):
        extract_mesh(sphere, 16, method="mise")


def test_domain_radius_removes_sheets_outside_the_ball_and_keeps_band_exact():
    centre = torch.tensor([0.9, 0.9, 0.9])  # |c| = 1.56: a sphere of radius 0.2 entirely outside the unit ball

    def head(p):
        return p.norm(dim=-1) - 0.5

    def head_and_artefact(p):
        return torch.minimum(head(p), (p - centre).norm(dim=-1) - 0.2)

    v_all, f_all, _ = extract_mesh(head_and_artefact, resolution=48)
    v_head, f_head, _ = extract_mesh(head, resolution=48)
    assert len(f_all) > len(f_head)  # without the clip the artefact is extracted
    dense = extract_mesh(head_and_artefact, resolution=48, method="dense", domain_radius=1.0)
    band = extract_mesh(head_and_artefact, resolution=48, domain_radius=1.0)
    for v, f, _ in (dense, band):
        np.testing.assert_array_equal(f, f_head)
        np.testing.assert_allclose(v, v_head, atol=1e-6)
