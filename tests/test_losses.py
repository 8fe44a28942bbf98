"""3D objectives on analytic SDFs: a sphere (eikonal 0, normal 0, surface 0) and exact closed forms."""

import math

import pytest
import torch

from morphable.implicit.losses import (LossWeights, code_regularisation, density_perturbation,
                                       density_regularisation, eikonal_loss, non_surface_loss, sdf_and_gradient,
                                       space_sdf_loss, surface_normal_loss, surface_sdf_loss, total_variation_loss,
                                       triplane_penalty)

RADIUS = 0.6


def sphere(points: torch.Tensor) -> torch.Tensor:
    return points.norm(dim=-1) - RADIUS


def _directions(b: int, n: int, seed: int = 0) -> torch.Tensor:
    d = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def test_sdf_and_gradient_of_sphere():
    points = _directions(2, 50) * 0.3 + 0.1
    values, grad = sdf_and_gradient(sphere, points, create_graph=False)
    torch.testing.assert_close(values, points.norm(dim=-1) - RADIUS)
    torch.testing.assert_close(grad, points / points.norm(dim=-1, keepdim=True))
    assert not grad.requires_grad


def test_sdf_and_gradient_create_graph_allows_second_derivative():
    points = _directions(1, 20) * 0.5
    _, grad = sdf_and_gradient(lambda p: (p ** 3).sum(-1), points, create_graph=True)
    assert grad.requires_grad
    torch.testing.assert_close(grad, 3 * points ** 2)


def test_sphere_losses_vanish_on_its_surface():
    surface = _directions(2, 200) * RADIUS
    values, grad = sdf_and_gradient(sphere, surface, create_graph=False)
    normals = surface / RADIUS
    assert surface_sdf_loss(values).item() == pytest.approx(0.0, abs=1e-12)
    assert surface_normal_loss(grad, normals).item() == pytest.approx(0.0, abs=1e-12)
    assert surface_normal_loss(grad, -normals).item() == pytest.approx(2.0)
    assert surface_normal_loss(5.0 * grad, normals).item() == pytest.approx(0.0, abs=1e-12)  # bounded below
    tilted = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64)
    assert surface_normal_loss(tilted, torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)).item() == \
        pytest.approx(1 - 1 / math.sqrt(2))
    space = _directions(2, 300, seed=1) * torch.rand(2, 300, 1, dtype=torch.float64) * 0.9 + 0.01
    _, grad_space = sdf_and_gradient(sphere, space, create_graph=False)
    assert eikonal_loss(grad_space).item() == pytest.approx(0.0, abs=1e-12)


def test_eikonal_of_scaled_sdf_and_surface_loss_off_surface():
    points = _directions(1, 100) * 0.8
    values, grad = sdf_and_gradient(lambda p: 3.0 * sphere(p), points, create_graph=False)
    assert eikonal_loss(grad).item() == pytest.approx(2.0)
    assert surface_sdf_loss(values).item() == pytest.approx(3.0 * 0.2)


def test_non_surface_penalty_closed_form():
    distances = torch.tensor([0.0, 0.05, -0.1, 0.3], dtype=torch.float64)
    points = _directions(1, 4) * (RADIUS + distances)[None, :, None]
    expected = sum(math.exp(-10 * abs(d)) for d in distances.tolist()) / 4
    assert non_surface_loss(sphere(points)).item() == pytest.approx(expected)
    assert non_surface_loss(sphere(points), alpha=2.0).item() == pytest.approx(
        sum(math.exp(-2 * abs(d)) for d in distances.tolist()) / 4)


def test_density_regularisation_of_a_linear_field_is_the_projected_noise():
    a = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    points = torch.rand(2, 500, 3, dtype=torch.float64)
    perturbed = density_perturbation(points, noise_std=0.01, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(points.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(perturbed, points + 0.01 * noise, rtol=0, atol=0)
    value = density_regularisation(points @ a, perturbed @ a)
    expected = ((0.01 * noise) @ a).square().mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    assert value.item() == pytest.approx(1e-4 * a.square().sum().item(), rel=0.15)  # E = sigma^2 |a|^2
    assert density_regularisation(torch.ones(2, 500), torch.ones(2, 500)).item() == 0.0
    assert density_regularisation(torch.zeros(1, 4), torch.tensor([[1.0, -2.0, 0.0, 3.0]])).item() == 3.5


def test_sdf_and_gradient_passes_extra_outputs_and_restricts_to_the_first_points():
    points = _directions(2, 30) * 0.7
    extra = torch.arange(3.0)
    (values, passed), grad = sdf_and_gradient(lambda p: (sphere(p), extra), points, create_graph=False, n_grad=20)
    assert passed is extra
    torch.testing.assert_close(values, sphere(points))
    torch.testing.assert_close(grad[:, :20], points[:, :20] / points[:, :20].norm(dim=-1, keepdim=True))
    assert torch.equal(grad[:, 20:], torch.zeros(2, 10, 3, dtype=torch.float64))


def test_total_variation_and_triplane_penalty_match_naive_sums():
    planes = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    tv = 0.0
    tp = 0.0
    for b in range(2):
        for p in range(3):
            t = planes[b, p]
            sh = sum((t[c, i + 1, j] - t[c, i, j]) ** 2 for c in range(4) for i in range(4) for j in range(6))
            sw = sum((t[c, i, j + 1] - t[c, i, j]) ** 2 for c in range(4) for i in range(5) for j in range(5))
            tv += math.sqrt(sh) + math.sqrt(sw)
            tp += math.sqrt(sum(v ** 2 for v in t.flatten().tolist()))
    assert total_variation_loss(planes).item() == pytest.approx(tv / 2)
    assert triplane_penalty(planes).item() == pytest.approx(tp / 2)
    constant = torch.ones(1, 3, 2, 4, 4)
    assert total_variation_loss(constant).item() == 0.0
    assert triplane_penalty(constant).item() == pytest.approx(3 * math.sqrt(32))


def test_code_regularisation():
    codes = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert code_regularisation(codes).item() == pytest.approx((25 + 1) / 2)


def test_weights_table_4_1_npm_and_total():
    w = LossWeights()
    assert (w.surface, w.normal, w.eikonal, w.non_surface, w.density, w.total_variation, w.triplane) == \
        (20.0, 3.0, 2.0, 0.1, 1e-5, 1e-4, 1e-4)
    n = LossWeights.npm()
    assert (n.surface, n.normal, n.eikonal, n.non_surface, n.density, n.code) == (2.0, 0.3, 0.1, 0.01, 0.0, 0.002)
    total = w.total({"surface": torch.tensor(1.0), "eikonal": torch.tensor(0.5)})
    assert total.item() == pytest.approx(21.0)
    with pytest.raises(KeyError):
        w.total({"adversarial": torch.tensor(1.0)})


def test_space_sdf_loss_is_zero_for_the_true_sdf_and_clamps_far_values():
    points = torch.randn(2, 500, 3)
    truth = points.norm(dim=-1) - 0.5
    assert space_sdf_loss(truth, truth).item() == 0.0
    shifted = truth + 0.03
    near = truth.abs() < 0.07  # both |truth| and |truth + 0.03| below the clamp 0.1
    expected = torch.where(near, torch.full_like(truth, 0.03),
                           (shifted.clamp(-0.1, 0.1) - truth.clamp(-0.1, 0.1)).abs()).mean()
    torch.testing.assert_close(space_sdf_loss(shifted, truth), expected)
    far = torch.full((1, 4), 3.0)
    assert space_sdf_loss(far, far + 5.0).item() == 0.0  # beyond the clamp on the same side: no penalty
    assert space_sdf_loss(-far, far).item() == pytest.approx(0.2)  # wrong sign far away: 2 x clamp
