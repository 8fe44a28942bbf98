"""Forward expression deformation field of an implicit head (thesis 4.3, after NPM / NPHM).

An expression is a forward deformation of the neutral (canonical) head of an identity:

    x_posed = x + F_ex(x, z_ex, z_id)

``F_ex`` is a DeepSDF-style MLP (:class:`~morphable.implicit.deepsdf.DeepSDF` with ``out_dim = 3``: softplus
activations, the skip connection of the input into the middle layer) on the concatenated code
``[z_ex, z_id]`` (paper: 8 x 1024, ``d_ex = 200``, ``d_id = 512``; the skip layer needs
``hidden > d_ex + d_id + 3``). Its output layer starts at zero, so an untrained field is the identity map
and every code starts at "no expression". The identity code ``z_id`` comes from a trained identity model and
stays frozen; the expression codes are auto-decoded, one per posed training mesh.

Objectives of one posed mesh (thesis eqs. 4.17-4.21), on correspondence pairs ``(x, x_posed)`` of
:mod:`morphable.data.deformation` (face pairs ``X``, the others ``not X``):

    L_c  = mean_{x in X}     |x + F_ex(x) - x_posed|^2          (weight 1e2)
    L_dp = mean_{x not in X} |F_ex(x)|^2                          (weight 1e-5)
    L_r  = |z_ex|^2                                               (weight 5e-5)

The thesis writes sums; means over the pairs drawn per iteration keep the weights independent of how many
are drawn (it draws a fixed 1000 per head and expression, so the two differ by that constant factor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from morphable.implicit.deepsdf import DeepSDF


class DeformationField(nn.Module):
    """``F_ex(x, z_ex, z_id) -> dx``: a DeepSDF MLP with a 3-vector output that starts at zero.

    Args:
        expression_dim: ``d_ex``, the expression code size.
        identity_dim: ``d_id``, the identity code size of the identity model it deforms.
        hidden, n_layers, beta: the MLP's width, depth and softplus sharpness.
    """

    def __init__(self, expression_dim: int, identity_dim: int, hidden: int = 1024, n_layers: int = 8,
                 beta: float = 100.0) -> None:
        super().__init__()
        self.expression_dim, self.identity_dim = expression_dim, identity_dim
        self.mlp = DeepSDF(expression_dim + identity_dim, hidden, n_layers, beta=beta, out_dim=3,
                           geometric_init=False)
        with torch.no_grad():
            self.mlp.layers[-1].weight.zero_()
            self.mlp.layers[-1].bias.zero_()

    def forward(self, expression: torch.Tensor, identity: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Displacements ``dx (B, N, 3)`` of ``points (B, N, 3)`` for codes ``expression (B, d_ex)`` and
        ``identity (B, d_id)`` (one pair of codes per batch row)."""
        return self.mlp(torch.cat([expression, identity], dim=-1), points)

    def warp(self, expression: torch.Tensor, identity: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``x + F_ex(x)``: the posed positions ``(B, N, 3)`` of canonical ``points (B, N, 3)``."""
        return points + self(expression, identity, points)


@dataclass
class DeformationWeights:
    """Weights of eq. 4.21 (thesis 4.3.3): correspondence, deformation penalty, expression-code L2."""

    correspondence: float = 1e2
    penalty: float = 1e-5
    code: float = 5e-5


def deformation_losses(field: DeformationField, expression: torch.Tensor, identity: torch.Tensor,
                       neutral: torch.Tensor, posed: torch.Tensor, face: torch.Tensor,
                       weights: DeformationWeights = DeformationWeights()) -> dict[str, torch.Tensor]:
    """The objectives of a batch of B posed meshes with P pairs each.

    expression: (B, d_ex), identity: (B, d_id); neutral, posed: (B, P, 3) pair positions (normalised units);
    face: (B, P) bool. Returns ``correspondence`` (mean squared error of the warped face points),
    ``penalty`` (mean squared displacement of the non-face points; 0 when there are none), ``code``
    (mean over the batch of ``|z_ex|^2``) and ``loss``, their weighted sum.
    """
    dx = field(expression, identity, neutral)
    error = (neutral + dx - posed).square().sum(-1)
    magnitude = dx.square().sum(-1)
    face = face.to(torch.bool)
    zero = dx.new_zeros(())
    losses = {"correspondence": error[face].mean() if face.any() else zero,
              "penalty": magnitude[~face].mean() if (~face).any() else zero,
              "code": expression.square().sum(-1).mean()}
    losses["loss"] = (weights.correspondence * losses["correspondence"] + weights.penalty * losses["penalty"]
                      + weights.code * losses["code"])
    return losses
