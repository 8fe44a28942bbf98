"""GAN loss pieces in float64: the non-saturating losses against -log sigmoid, their logit gradients in
closed form, R1 of linear and quadratic discriminators by hand, gradcheck of R1's double backward, and the
lazy schedule."""

import math

import pytest
import torch

from morphable.errors import MorphableError
from morphable.train.adversarial import discriminator_loss, generator_loss, r1_penalty, r1_scale

D64 = dict(dtype=torch.float64)


def test_losses_are_minus_log_sigmoid_terms_and_their_gradients():
    fake = torch.tensor([-3.0, -0.5, 0.0, 2.0], **D64, requires_grad=True)
    real = torch.tensor([1.5, -2.0, 40.0], **D64)
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    expected_g = sum(-math.log(sig(t)) for t in fake.tolist()) / 4
    expected_d = (sum(-math.log(1 - sig(t)) for t in fake.tolist()) / 4
                  + sum(-math.log(sig(t)) for t in real.tolist()) / 3)
    assert generator_loss(fake).item() == pytest.approx(expected_g, rel=1e-14)
    assert discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-14)
    assert generator_loss(torch.zeros(5, 1, **D64)).item() == pytest.approx(math.log(2), rel=1e-15)
    # d/dl softplus(-l) = sigmoid(l) - 1 and d/dl softplus(l) = sigmoid(l), each over the batch size
    (g,) = torch.autograd.grad(generator_loss(fake), fake)
    torch.testing.assert_close(g, (torch.sigmoid(fake.detach()) - 1) / 4, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(discriminator_loss(real, fake), fake)
    torch.testing.assert_close(g, torch.sigmoid(fake.detach()) / 4, rtol=1e-14, atol=0)


def test_r1_of_a_linear_discriminator_is_half_gamma_w_squared():
    w, b = torch.tensor([0.5, -2.0, 1.0], **D64), 0.3
    x = torch.randn(6, 3, **D64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logits = x @ w + b
    assert r1_penalty(logits, x, gamma=10.0).item() == pytest.approx(5.0 * float(w @ w), rel=1e-14)


def test_r1_of_a_quadratic_discriminator_by_hand():
    """D(x) = x^T A x / 2 with A symmetric: grad = A x, R1 = gamma/2 mean_b |A x_b|^2 (images (B, 1, 2, 2))."""
    g = torch.Generator().manual_seed(1)
    m = torch.randn(4, 4, **D64, generator=g)
    a = m + m.T
    x = torch.randn(5, 1, 2, 2, **D64, generator=g).requires_grad_(True)
    flat = x.flatten(1)
    logits = 0.5 * ((flat @ a) * flat).sum(1, keepdim=True)  # (B, 1)
    expected = 0.5 * 2.5 * sum(float((a @ flat[i].detach()).square().sum()) for i in range(5)) / 5
    assert r1_penalty(logits, x, gamma=2.5).item() == pytest.approx(expected, rel=1e-13)


def test_r1_gradient_in_the_discriminator_weights_passes_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, **D64, generator=g)
    w1 = torch.randn(3, 5, **D64, generator=g).requires_grad_(True)
    w2 = torch.randn(5, 1, **D64, generator=g).requires_grad_(True)

    def penalty(w1, w2):
        real = x.clone().requires_grad_(True)
        return r1_penalty(torch.tanh(real @ w1) @ w2, real, gamma=0.7)

    assert torch.autograd.gradcheck(penalty, (w1, w2))


def test_lazy_r1_every_k_steps_scaled_by_k():
    assert [r1_scale(s, 3) for s in range(7)] == [3, 0, 0, 3, 0, 0, 3]
    assert [r1_scale(s, 1) for s in range(4)] == [1, 1, 1, 1]
    # over any k consecutive steps the lazy weights sum to k, the plain penalty's total
    assert all(sum(r1_scale(s, 4) for s in range(start, start + 4)) == 4 for start in range(9))
    with pytest.raises(MorphableError, match="at least 1 step"):
        r1_scale(0, 0)
