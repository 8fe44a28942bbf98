"""HRN's loss terms (image/hrn_losses.py) against hand-computed values on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from morphable.errors import MorphableError
from morphable.image import hrn_losses as L


def test_photometric_loss_is_the_masked_mean_of_per_pixel_rgb_distances():
    photo = torch.zeros(1, 1, 3, 3)
    render = torch.zeros(1, 1, 3, 3)
    render[0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # distance 5
    render[0, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # distance 1
    render[0, 0, 2] = torch.tensor([9.0, 9.0, 9.0])  # outside the face mask
    face = torch.tensor([[[1.0, 1.0, 0.0]]])
    coverage = torch.tensor([[[1.0, 0.5, 1.0]]])
    assert L.photometric_loss(photo, render, face, coverage).item() == pytest.approx((5 * 1 + 1 * 0.5) / 1.5)
    with pytest.raises(MorphableError, match="do not match"):
        L.photometric_loss(photo, render[..., :2], face, coverage)


def test_landmark_loss_weights_the_nose_ridge_and_inner_lips_by_20_and_is_zero_at_the_target():
    target = torch.rand(2, 68, 2, dtype=torch.float64) * 64  # float64: (x + 2) - x is exactly 2 only then
    assert L.landmark_loss(target, target).item() == 0
    moved = target.clone()
    moved[:, 5, 0] += 2.0  # a jaw point, weight 1: 4 px^2
    moved[:, 62, 1] += 1.0  # an inner-lip point, weight 20: 20 px^2
    assert L.landmark_loss(moved, target).item() == pytest.approx((4 + 20) / 68)
    assert L.landmark_weights().sum().item() == 56 + 12 * 20


def test_total_variation_of_a_ramp_and_the_regularisers():
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 3, 4)  # steps of 1 along x, none along y
    assert L.total_variation(ramp).item() == pytest.approx(1.0)
    assert L.total_variation(ramp.transpose(-1, -2) * 2).item() == pytest.approx(4.0)
    assert L.displacement_regulariser(torch.tensor([[-1.0, 3.0]])).item() == pytest.approx(2.0)
    coverage, mask = torch.tensor([[[1.0, 0.25, 0.0, 1.0]]]), torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    assert L.contour_loss(coverage, mask).item() == pytest.approx((0 + 0.75 + 0 + 1) / 4)


def test_supervised_map_loss_counts_only_the_masked_texels_and_everything_has_a_gradient():
    predicted = torch.tensor([[[[1.0, 2.0], [3.0, 10.0]]]], requires_grad=True)
    target = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    loss = L.supervised_map_loss(predicted, target, mask)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert predicted.grad[0, 0, 1, 1] == 0 and predicted.grad[0, 0, 0, 0] == pytest.approx(1 / 3)
    assert L.supervised_map_loss(predicted.detach(), target).item() == pytest.approx(4.0)
    photo = torch.rand(1, 4, 4, 3)
    render = torch.rand(1, 4, 4, 3, requires_grad=True)
    L.photometric_loss(photo, render, torch.ones(1, 4, 4), torch.ones(1, 4, 4)).backward()
    assert torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0
    assert math.isclose(L.HRN_WEIGHTS["tv"], 5e3) and L.HRN_WEIGHTS["landmark"] == 1.6e-4
