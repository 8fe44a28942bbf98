"""Adversarial loss pieces shared by the GAN-trained methods (implicit 2D normal maps, HRN).

With discriminator logits ``l = D(x)`` and ``sigma`` the logistic function, the non-saturating losses are

    L_G = E_z[ softplus(-D(G(z))) ]                         (= -log sigma(D(G(z))))
    L_D = E_z[ softplus(D(G(z))) ] + E_x[ softplus(-D(x)) ] (= -log(1 - sigma(D(G(z)))) - log sigma(D(x)))

and the R1 penalty on real samples is ``R1 = (gamma / 2) E_x[ |grad_x D(x)|^2 ]``. Lazy R1 (as in
StyleGAN2) applies it only every ``k`` discriminator steps and multiplies it by ``k``, so its expected
contribution per step is unchanged: see :func:`r1_scale`. The method alternates the updates itself; these
functions only compute the terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from morphable.errors import MorphableError


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean softplus(-D(G(z)))``; ``fake_logits``: (B,) or (B, 1) -> scalar."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean softplus(D(G(z))) + mean softplus(-D(x))``; logits (B,) or (B, 1) -> scalar."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(gamma / 2) mean_b |d D(x_b) / d x_b|^2`` with a graph (for the discriminator's backward).

    ``real``: (B, ...) with ``requires_grad`` set before ``real_logits = D(real)`` ((B,) or (B, 1)) was
    computed. The gradient of ``sum_b D(x_b)`` is each sample's own input gradient only when the
    discriminator treats samples independently (no batch statistics).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.square().flatten(1).sum(dim=1).mean()


def r1_scale(step: int, every: int) -> int:
    """Weight of the R1 penalty at ``step`` under lazy regularisation: ``every`` when ``step % every == 0``,
    else 0 (skip the penalty). ``every = 1`` is the plain penalty at every step."""
    if every < 1:
        raise MorphableError(f"the R1 interval must be at least 1 step, not {every}")
    return every if step % every == 0 else 0
