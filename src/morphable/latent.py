"""A Gaussian of learned latent codes (for unconditional samples) and linear interpolation between codes,
shared by every family (mesh autoencoders encode their training meshes; auto-decoders have a code table).

Gaussian of the codes. The auto-decoder table holds N codes ``z_k`` (rows of ``Z``, (N, D)). With
``mu = mean_k z_k``, centred codes ``x_k = z_k - mu`` (rows of ``X``) and the maximum-likelihood covariance
``S = X^T X / N`` (rank at most N - 1, so singular whenever N <= D, the usual case: tens of heads and 512-d
codes), the fitted covariance is the shrinkage estimate

    Sigma = (1 - a) S + a m I,        m = tr(S) / D,

a convex blend of S and the isotropic covariance with the same total variance: ``tr(Sigma) = tr(S)`` for
every ``a``, so samples have the spread of the codes (the mean squared distance of a sample from ``mu`` is
``tr(S)``, that of the codes). ``a`` is the Ledoit-Wolf (2004) choice, which minimises the expected
Frobenius error of Sigma; with the scaled norm ``|A|^2 = tr(A A^T) / D``:

    d^2 = |S - m I|^2 = (|S|_F^2 - D m^2) / D,
    b^2 = min(d^2, (1 / N^2) sum_k |x_k x_k^T - S|^2) = min(d^2, (sum_k |x_k|^4 - N |S|_F^2) / (D N^2)),
    a   = b^2 / d^2                       (0 when d = 0).

Everything comes from the Gram matrix ``G = X X^T`` (N, N): ``|x_k|^2 = G_kk``, ``|S|_F^2 = |G|_F^2 / N^2``,
so fitting costs O(N^2 D) and no D x D matrix is formed. With many codes (N >> D) ``a -> 0`` and Sigma is
the sample covariance; with few ``a`` grows, and Sigma is positive definite whenever ``a > 0``. (Two codes
give ``x_1 = -x_2``, identical outer products, hence ``a = 0``: the samples then lie on the line through
the two codes.) Sampling never factorises Sigma: with ``e1 ~ N(0, I_N)``, ``e2 ~ N(0, I_D)``,

    z = mu + sqrt((1 - a) / N) X^T e1 + sqrt(a m) e2

has covariance ``(1 - a) X^T X / N + a m I = Sigma`` exactly, for any N and D (one code: ``z = mu``);
for N > D the (D, D) factor ``diag(s) V^T`` of the SVD ``X = U diag(s) V^T`` replaces X (same X^T X).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CodeGaussian:
    """``N(mean, factor^T factor + isotropic_var I)``, fitted by :func:`fit_code_gaussian`.

    mean: (D,); factor: (R, D) with ``factor^T factor = (1 - a) S``: ``sqrt((1 - a) / N) X`` (R = N) for
    N <= D, else ``sqrt((1 - a) / N) diag(s) V^T`` from the SVD ``X = U diag(s) V^T`` (R = D);
    isotropic_var: ``a m``; shrinkage: ``a``. Tensors are float64 on the device of the codes.
    """

    mean: torch.Tensor
    factor: torch.Tensor
    isotropic_var: float
    shrinkage: float

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        """Sigma, (D, D) float64."""
        eye = torch.eye(self.dim, dtype=self.factor.dtype, device=self.factor.device)
        return self.factor.T @ self.factor + self.isotropic_var * eye

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` codes (n, D) float64, ``z = mean + factor^T e1 + sqrt(isotropic_var) e2``.

        The normal draws come from a CPU generator seeded with ``seed`` (so a seed gives the same codes on
        every device) and are moved to the device of ``mean``.
        """
        generator = torch.Generator().manual_seed(seed)
        e1 = torch.randn(n, self.factor.shape[0], generator=generator, dtype=torch.float64)
        e2 = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        e1, e2 = e1.to(self.mean.device), e2.to(self.mean.device)
        return self.mean + e1 @ self.factor + self.isotropic_var ** 0.5 * e2


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> float:
    """The Ledoit-Wolf weight ``a`` in [0, 1] of the identity target for centred rows ``centred`` (N, D)
    (see the module docstring); float64, from the smaller of ``X X^T`` and ``X^T X`` (same Frobenius norm)."""
    x = centred.double()
    n, d = x.shape
    sq = x.square().sum(dim=1)  # |x_k|^2
    small = x @ x.T if n <= d else x.T @ x
    s_fro2 = float(small.square().sum()) / n ** 2
    m = float(sq.sum()) / (n * d)
    d2 = (s_fro2 - d * m * m) / d
    if d2 <= 0.0:
        return 0.0
    b2 = (float(sq.square().sum()) - n * s_fro2) / (d * n * n)
    return min(max(b2, 0.0), d2) / d2


def fit_code_gaussian(codes: torch.Tensor, shrinkage: float | None = None) -> CodeGaussian:
    """Fit ``N(mu, (1 - a) S + a tr(S)/D I)`` to codes (N, D); ``shrinkage`` fixes ``a`` in [0, 1]
    (None: Ledoit-Wolf). See the module docstring for the maths."""
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise ValueError(f"codes must be (N, D) with N >= 1, got {tuple(codes.shape)}")
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    z = codes.detach().double()
    n, d = z.shape
    mean = z.mean(dim=0)
    centred = z - mean
    a = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    m = float(centred.square().sum()) / (n * d)
    if n > d:  # X = U diag(s) V^T: the (D, D) factor diag(s) V^T has the same F^T F = X^T X
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        centred = singular[:, None] * vh
    return CodeGaussian(mean, ((1.0 - a) / n) ** 0.5 * centred, a * m, a)


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes (steps, D) on the segment from ``a`` (D,) to ``b`` (D,): ``(1 - t) a + t b`` with
    ``t = i / (steps - 1)``; the first row is ``a`` and the last ``b`` exactly."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype, device=a.device)[:, None]
    return (1 - t) * a + t * b
