"""NPM/DeepSDF and tri-plane networks: naive references, plane order, batch invariance, initialisation."""

import math

import pytest
import torch

from morphable.implicit.deepsdf import DeepSDF, LatentTable, softplus_beta
from morphable.implicit.losses import eikonal_loss, sdf_and_gradient
from morphable.implicit.triplane import (TriplaneDecoder, TriplaneGenerator, TriplaneSDF, interpolation_matrix,
                                         sample_planes)


def naive_bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """grid_sample(align_corners=True, border) at (u, v) in [-1, 1]: u indexes width, v height."""
    _, r, _ = plane.shape
    fu = min(max((u + 1) / 2 * (r - 1), 0.0), r - 1)
    fv = min(max((v + 1) / 2 * (r - 1), 0.0), r - 1)
    w0, h0 = min(int(math.floor(fu)), r - 2), min(int(math.floor(fv)), r - 2)
    a, b = fu - w0, fv - h0
    return ((1 - a) * (1 - b) * plane[:, h0, w0] + a * (1 - b) * plane[:, h0, w0 + 1]
            + (1 - a) * b * plane[:, h0 + 1, w0] + a * b * plane[:, h0 + 1, w0 + 1])


def test_sample_planes_matches_naive_bilinear_loop():
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 4, 6, 6, generator=gen, dtype=torch.float64)
    points = torch.rand(2, 25, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2  # some outside the cube
    feats = sample_planes(planes, points)
    for b in range(2):
        for n in range(25):
            x, y, z = points[b, n].tolist()
            ref = (naive_bilinear(planes[b, 0], x, y) + naive_bilinear(planes[b, 1], x, z)
                   + naive_bilinear(planes[b, 2], y, z))
            torch.testing.assert_close(feats[b, n], ref, rtol=1e-12, atol=1e-12)


def test_plane_order_xy_xz_yz():
    """Each plane gets a feature ramp along one of its axes; the sampled feature must follow x, z and y."""
    r = 9
    ramp = torch.linspace(-1, 1, r, dtype=torch.float64)
    planes = torch.zeros(1, 3, 3, r, r, dtype=torch.float64)
    planes[0, 0, 0] = ramp[None, :]  # xy plane, varies along width = x
    planes[0, 1, 1] = ramp[:, None]  # xz plane, varies along height = z
    planes[0, 2, 2] = ramp[None, :]  # yz plane, varies along width = y
    points = torch.rand(1, 40, 3, dtype=torch.float64) * 2 - 1
    feats = sample_planes(planes, points)[0]
    torch.testing.assert_close(feats[:, 0], points[0, :, 0])
    torch.testing.assert_close(feats[:, 1], points[0, :, 2])
    torch.testing.assert_close(feats[:, 2], points[0, :, 1])


def test_interpolation_matrix_matches_naive():
    coords = torch.tensor([-1.3, -1.0, -0.37, 0.0, 0.5, 0.999, 1.0, 1.2], dtype=torch.float64)
    a = interpolation_matrix(coords, 7)
    values = torch.randn(7, dtype=torch.float64)
    for p, c in enumerate(coords.tolist()):
        ref = naive_bilinear(values[None, None, :].expand(1, 7, 7), c, 0.3)[0]
        assert a[p].sum().item() == pytest.approx(1.0)
        assert (a[p] @ values).item() == pytest.approx(ref.item(), abs=1e-12)


def _tiny_triplane(seed: int = 0) -> TriplaneSDF:
    torch.manual_seed(seed)
    model = TriplaneSDF(latent_dim=16, channels=4, resolution=32, hidden=32, n_layers=5, base_channels=8).eval()
    with torch.no_grad():  # non-zero feature weights so that the planes matter
        model.decoder.layers[0].weight[:, :4].normal_(0.0, 0.3)
    return model


def test_triplane_shapes_and_batch_invariance():
    model = _tiny_triplane()
    codes = torch.randn(3, 16)
    points = torch.rand(3, 50, 3) * 2 - 1
    planes = model.generate_planes(codes)
    assert planes.shape == (3, 3, 4, 32, 32)
    batched = model(codes, points)
    assert batched.shape == (3, 50)
    for b in range(3):
        torch.testing.assert_close(model(codes[b:b + 1], points[b:b + 1])[0], batched[b], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.decode(planes, points), batched)
    sdf, returned = model.sdf_and_planes(codes, points)
    assert torch.equal(returned, planes) and torch.equal(sdf, batched)


def test_deepsdf_sdf_and_planes_is_the_field_without_planes():
    model = DeepSDF(latent_dim=6, hidden=32, n_layers=4)
    codes, points = torch.randn(2, 6), torch.rand(2, 40, 3) - 0.5
    sdf, planes = model.sdf_and_planes(codes, points)
    assert planes is None and torch.equal(sdf, model(codes, points))


def test_generator_rejects_bad_resolution():
    with pytest.raises(ValueError):
        TriplaneGenerator(resolution=48)
    assert TriplaneGenerator(latent_dim=8, channels=2, resolution=64, base_channels=4)(torch.randn(2, 8)).shape \
        == (2, 3, 2, 64, 64)


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (-0.7, 0.9)])
def test_triplane_grid_path_equals_generic_decode(bounds):
    model = _tiny_triplane(1)
    field = model.sdf_function(torch.randn(16))
    axes = tuple(torch.linspace(bounds[0], bounds[1], n) for n in (11, 13, 17))
    evaluate = field.grid_evaluator(axes)
    ijk = torch.stack([torch.randint(0, n, (300,)) for n in (11, 13, 17)], dim=1)
    points = torch.stack([axes[a][ijk[:, a]] for a in range(3)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(evaluate(ijk), field(points), rtol=1e-5, atol=1e-5)


def _naive_deepsdf(model: DeepSDF, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    inp = torch.cat([codes[:, None, :].expand(-1, points.shape[1], -1), points], dim=-1)
    h = inp
    for i, layer in enumerate(model.layers):
        if i == model.skip_layer:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
        h = layer(h)
        if i < len(model.layers) - 1:
            h = torch.nn.functional.softplus(h, beta=100)
    return h[..., 0]


def test_deepsdf_equals_concatenating_reference_and_skip_shapes():
    torch.manual_seed(0)
    model = DeepSDF(latent_dim=12, hidden=48, n_layers=8, geometric_init=False).double()
    assert model.skip_layer == 4
    assert model.layers[3].out_features == 48 - 15 and model.layers[4].in_features == 48
    assert len(model.layers) == 9 and model.layers[-1].out_features == 1
    codes = torch.randn(2, 12, dtype=torch.float64)
    points = torch.rand(2, 30, 3, dtype=torch.float64) * 2 - 1
    out = model(codes, points)
    torch.testing.assert_close(out, _naive_deepsdf(model, codes, points), rtol=1e-12, atol=1e-12)
    per_point = model(codes[:, None, :].expand(-1, 30, -1), points)
    torch.testing.assert_close(per_point, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(codes[1:], points[1:])[0], out[1], rtol=1e-12, atol=1e-12)
    fn = model.sdf_function(codes[1])
    torch.testing.assert_close(fn(points[1]), out[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("skip_layer,out_dim", [(None, 1), (1, 1), (3, 3)])
def test_deepsdf_folded_equals_forward(skip_layer, out_dim):
    """Code and beta folded into the weights: the same field (float64), for every skip position and a
    vector output; a negative control with the code ignored differs."""
    torch.manual_seed(3)
    model = DeepSDF(latent_dim=7, hidden=40, n_layers=5, skip_layer=skip_layer, out_dim=out_dim,
                    geometric_init=False).double()
    code, points = torch.randn(7, dtype=torch.float64), torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    want = model(code[None], points[None])[0]
    torch.testing.assert_close(model.folded(code)(points), want, rtol=1e-12, atol=1e-12)
    assert (model.folded(torch.zeros_like(code))(points) - want).abs().max() > 1e-3


def test_deepsdf_deformation_output():
    model = DeepSDF(latent_dim=6, hidden=32, n_layers=4, out_dim=3, geometric_init=False)
    assert model(torch.randn(2, 6), torch.randn(2, 5, 3)).shape == (2, 5, 3)


@pytest.mark.parametrize("make", [lambda: DeepSDF(latent_dim=32, hidden=256, n_layers=8, radius=0.4),
                                  lambda: TriplaneSDF(latent_dim=16, channels=4, resolution=32, radius=0.4).eval()])
def test_geometric_init_is_approximately_a_sphere_sdf(make):
    torch.manual_seed(0)
    model = make()
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(1, 2000, 3, generator=gen)
    points = points / points.norm(dim=-1, keepdim=True) * torch.rand(1, 2000, 1, generator=gen) ** (1 / 3)
    code = torch.randn(1, model.latent_dim) * 0.05
    values, grad = sdf_and_gradient(lambda p: model(code, p), points, create_graph=False)
    radius = points.norm(dim=-1)
    err = (values - (radius - 0.4)).abs()
    assert err.mean() < 0.08
    agree = (torch.sign(values) == torch.sign(radius - 0.4))[(radius - 0.4).abs() > 0.15]
    assert agree.double().mean() > 0.99
    assert model(code, torch.zeros(1, 1, 3)).item() < -0.1
    assert grad.norm(dim=-1).mean().item() == pytest.approx(1.0, abs=0.15)


def test_eikonal_gradients_reach_planes_and_decoder():
    model = _tiny_triplane(2).train()
    codes = torch.randn(2, 16, requires_grad=True)
    planes = model.generate_planes(codes)
    points = torch.rand(2, 64, 3) * 2 - 1
    _, grad = sdf_and_gradient(lambda p: model.decode(planes, p), points, create_graph=True)
    eikonal_loss(grad).backward()
    assert codes.grad.abs().sum() > 0
    assert model.decoder.layers[0].weight.grad.abs().sum() > 0
    assert model.generator.net[0].weight.grad.abs().sum() > 0


def test_latent_table_init_max_norm_and_sparse_gradient():
    torch.manual_seed(0)
    table = LatentTable(1000, 64)
    assert table.weight.std().item() == pytest.approx(0.1 / 8, rel=0.05)
    with torch.no_grad():
        table.weight[3] *= 1000.0
    codes = table(torch.tensor([3, 5]))
    assert codes[0].norm().item() == pytest.approx(1.0, rel=1e-5)  # renormalised to max_norm
    codes.square().sum().backward()
    assert table.weight.grad.is_sparse
    assert set(table.weight.grad.coalesce().indices()[0].tolist()) == {3, 5}


def test_softplus_beta_equals_torch_softplus_with_its_gradients(float64_default):
    x = (torch.randn(4000) * 0.3).requires_grad_()  # beta x spans both sides of the threshold 20
    ours, ref = softplus_beta(x, 100.0), torch.nn.functional.softplus(x, beta=100.0)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)
    g_ours, = torch.autograd.grad(ours.sum(), x, create_graph=True)
    g_ref, = torch.autograd.grad(ref.sum(), x, create_graph=True)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(torch.autograd.grad(g_ours.sum(), x)[0], torch.autograd.grad(g_ref.sum(), x)[0],
                               rtol=1e-9, atol=1e-9)


def test_folded_triplane_decoder_is_the_same_function(float64_default):
    decoder = TriplaneDecoder(channels=4, hidden=32, n_layers=5, beta=100.0)
    with torch.no_grad():
        for layer in decoder.layers:
            layer.weight.normal_(0, 0.4)
            layer.bias.normal_(0, 0.2)
    inputs = torch.randn(500, 7)
    expected = decoder(inputs[:, :4], inputs[:, 4:])
    assert (expected.abs() > 1e-3).float().mean() > 0.5
    torch.testing.assert_close(decoder.folded()(inputs), expected, rtol=1e-10, atol=1e-12)
