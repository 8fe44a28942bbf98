"""Sparse non-negative matrix factorisation by block coordinate descent (Potluru et al. 2013).

Problem, for ``V: (n, T)`` non-negative and ``K`` parts::

    minimise ||V - W H||_F^2   over  W: (n, K) >= 0,  H: (K, T) >= 0,
    with every column w_k of W:  ||w_k||_2 = 1  and  ||w_k||_1 <= alpha.

The L1/L2 ratio is made size-independent with Hoyer's sparseness
``s(w) = (sqrt(n) - ||w||_1 / ||w||_2) / (sqrt(n) - 1)`` in ``[0, 1]``: the constraint is
``s(w_k) >= s``, i.e. ``alpha = sqrt(n) - s (sqrt(n) - 1)`` (:func:`hoyer_alpha`). Potluru et al.
state the constraint as an equality ``||w_k||_1 = alpha``; we use the inequality, which gives the same
update whenever the constraint is active (always, at the sparseness the local weights use) and makes
``s = 0`` plain NMF with unit-norm columns. The paper's "sparsity 7.5" is ``alpha = 7.5`` on 53,215
vertices, i.e. ``s = 0.972``.

One sweep updates, for ``k = 1..K``, the column ``w_k`` and then the row ``h_k``, each exactly, with
``R_k = V - W H + w_k h_k`` the residual without part ``k``:

* ``w_k = argmax { b^T w : w >= 0, ||w||_2 = 1, ||w||_1 <= alpha }``, ``b = R_k h_k^T``
  (:func:`sparse_column`; since ``||w_k||_2 = 1``, ``||R_k - w h_k||^2 = const - 2 b^T w``);
* ``h_k = max(0, w_k^T R_k)``.

``R_k`` is never formed: ``b = V h_k^T - W (H h_k^T) + w_k (h_k h_k^T)`` and
``w_k^T R_k = w_k^T V - (w_k^T W) H + h_k``. Each block update is an exact minimiser, so the
objective never increases. Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphable.errors import MorphableError


def hoyer_alpha(n: int, sparseness: float) -> float:
    """The L1 bound ``alpha = sqrt(n) - s (sqrt(n) - 1)`` of unit-L2 vectors of length ``n`` with Hoyer sparseness ``s``."""
    if not 0.0 <= sparseness < 1.0:
        raise MorphableError(f"sparseness must be in [0, 1), got {sparseness}")
    return float(np.sqrt(n) - sparseness * (np.sqrt(n) - 1.0))


def hoyer_sparseness(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Hoyer's sparseness ``(sqrt(n) - ||x||_1 / ||x||_2) / (sqrt(n) - 1)`` along ``axis`` (0 dense, 1 one-hot)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    l1 = np.abs(x).sum(axis=axis)
    l2 = np.sqrt((x * x).sum(axis=axis))
    return (np.sqrt(n) - l1 / np.maximum(l2, 1e-300)) / (np.sqrt(n) - 1.0)


def sparse_opt(b: np.ndarray, alpha: float) -> np.ndarray:
    """``argmax b^T w`` over ``{w >= 0, ||w||_2 = 1, ||w||_1 = alpha}``, ``1 <= alpha <= sqrt(n)`` (Potluru et al.).

    The maximiser is ``w = (b - lambda)_+ / ||(b - lambda)_+||_2``. With ``b`` sorted decreasingly and a
    support of the ``m`` largest entries (sums ``S1 = sum b_i``, ``S2 = sum b_i^2``), the L1 condition
    ``(S1 - m lambda)^2 = alpha^2 (S2 - 2 lambda S1 + m lambda^2)`` has, for ``m > alpha^2``, the one root with
    ``lambda`` below the support's mean::

        lambda_m = S1 / m - (alpha / m) sqrt((m S2 - S1^2) / (m - alpha^2))

    A support size is consistent when ``b_(m) > lambda_m >= b_(m+1)``; among consistent sizes the one with
    the largest ``b^T w = alpha (S2 - lambda S1) / (S1 - m lambda)`` wins. (``m = alpha^2`` allows only the
    flat vector on the top ``m`` entries.) Vectorised over ``m``: ``O(n log n)``. ``b: (n,)`` -> ``w: (n,)``.
    """
    b = np.asarray(b, dtype=np.float64)
    n = len(b)
    if not 1.0 <= alpha <= np.sqrt(n) + 1e-12:
        raise MorphableError(f"alpha must be in [1, sqrt(n) = {np.sqrt(n):.4g}], got {alpha}")
    w = _sparse_opt_sorted(b, alpha)
    scale = float(b.max() - b.min()) or 1.0
    for eps in (1e-7, 1e-5, 1e-3):
        if w is not None:
            break
        # a block of more than alpha^2 equal entries at the top: every feasible w on it ties; a tiny
        # deterministic ramp breaks the tie (it changes b^T w by at most eps * (max b - min b) * alpha)
        w = _sparse_opt_sorted(b - eps * scale * np.arange(n) / n, alpha)
    return w


def _sparse_opt_sorted(b: np.ndarray, alpha: float) -> np.ndarray | None:
    n = len(b)
    a2 = alpha * alpha
    order = np.argsort(-b, kind="stable")
    bs = b[order] - b[order[0]]  # lambda shifts with b; measured from the top, m S2 - S1^2 keeps its digits
    m = np.arange(1, n + 1, dtype=np.float64)
    s1 = np.cumsum(bs)
    s2 = np.cumsum(bs * bs)
    nxt = np.append(bs[1:], -np.inf)
    gap = m - a2
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.maximum(m * s2 - s1 * s1, 0.0)
        lam = s1 / m - alpha / m * np.sqrt(spread / gap)
        ok = (gap > 1e-9) & (bs > lam) & (lam >= nxt)
        objective = np.where(ok, alpha * (s2 - lam * s1) / (s1 - m * lam), -np.inf)
    flat = np.abs(gap) <= 1e-9  # only the flat vector 1/sqrt(m) on the top m entries has L1/L2 = sqrt(m)
    objective = np.where(flat, s1 / np.sqrt(m), objective)
    if not np.isfinite(objective).any():
        return None
    best = int(np.argmax(objective))
    w = np.zeros(n)
    if flat[best]:
        w[order[:best + 1]] = 1.0 / np.sqrt(best + 1)
        return w
    w[order] = np.maximum(bs - lam[best], 0.0)
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else None


def sparse_column(b: np.ndarray, alpha: float) -> np.ndarray:
    """``argmax b^T w`` over ``{w >= 0, ||w||_2 = 1, ||w||_1 <= alpha}``: ``b_+ / ||b_+||`` when that satisfies the
    L1 bound, else the bound is active and :func:`sparse_opt` solves the equality problem. ``b: (n,)``."""
    b = np.asarray(b, dtype=np.float64)
    pos = np.maximum(b, 0.0)
    norm = np.linalg.norm(pos)
    if norm > 0 and pos.sum() / norm <= alpha:
        return pos / norm
    return sparse_opt(b, alpha)


@dataclass
class SparseNMF:
    """Result of :func:`sparse_nmf`: ``W: (n, K)`` unit-L2 columns, ``H: (K, T)``, objective per sweep."""

    W: np.ndarray
    H: np.ndarray
    objective: np.ndarray
    alpha: float
    iterations: int


def nndsvd(V: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative double SVD initialisation (Boutsidis & Gallopoulos 2008); zeros are filled with seeded
    uniform values in ``[0, mean(V) / 100)`` (their "NNDSVDar", which avoids ties in the first column updates).

    For each of the top ``k`` singular triplets ``(s, u, v)`` keep the sign pattern (``u_+ v_+^T`` or
    ``u_- v_-^T``) with the larger norm product. ``V: (n, T)`` -> ``W: (n, k)``, ``H: (k, T)``.
    """
    u, s, vt = np.linalg.svd(V, full_matrices=False)
    W = np.zeros((V.shape[0], k))
    H = np.zeros((k, V.shape[1]))
    for j in range(min(k, len(s))):
        x, y = u[:, j], vt[j]
        xp, xn, yp, yn = np.maximum(x, 0), np.maximum(-x, 0), np.maximum(y, 0), np.maximum(-y, 0)
        pos = np.linalg.norm(xp) * np.linalg.norm(yp)
        neg = np.linalg.norm(xn) * np.linalg.norm(yn)
        a, c, sigma = (xp, yp, pos) if pos >= neg else (xn, yn, neg)
        if sigma <= 0:
            continue
        scale = np.sqrt(s[j] * sigma)
        W[:, j] = scale * a / np.linalg.norm(a)
        H[j] = scale * c / np.linalg.norm(c)
    rng = np.random.default_rng(seed)
    mean = V.mean()
    W[W == 0] = rng.random(int((W == 0).sum())) * mean / 100
    H[H == 0] = rng.random(int((H == 0).sum())) * mean / 100
    return W, H


def sparse_nmf(V: np.ndarray, k: int, sparseness: float = 0.5, iterations: int = 300, tol: float = 1e-6,
               init: str = "random", seed: int = 0) -> SparseNMF:
    """Factorise ``V: (n, T) >= 0`` as ``W H`` with ``K = k`` sparse unit-norm columns of ``W`` (module docstring).

    ``init``: ``random`` (seeded uniform) or ``nndsvd``; the initial columns are first made feasible by
    :func:`sparse_column`. Stops after ``iterations`` sweeps or when a sweep lowers the objective by less
    than ``tol`` times its value. ``objective[i]`` is ``||V - W H||_F^2`` after sweep ``i`` (``[0]``: start).
    """
    V = np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.size == 0 or not np.isfinite(V).all() or (V < 0).any():
        raise MorphableError(f"sparse NMF needs a finite non-negative 2D matrix, got shape {V.shape}")
    n, _ = V.shape
    if not 1 <= k <= n:
        raise MorphableError(f"number of parts must be in [1, {n}], got {k}")
    alpha = hoyer_alpha(n, sparseness)
    if init == "nndsvd":
        W, H = nndsvd(V, k, seed)
    elif init == "random":
        rng = np.random.default_rng(seed)
        scale = np.sqrt(max(V.mean(), 1e-12) / k)
        W, H = rng.random((n, k)) * scale, rng.random((k, V.shape[1])) * scale
    else:
        raise MorphableError(f"unknown NMF init '{init}' (expected random or nndsvd)")
    norms = np.linalg.norm(W, axis=0)
    H = H * norms[:, None]
    W = np.stack([sparse_column(W[:, j], alpha) for j in range(k)], axis=1)
    vv = float((V * V).sum())

    def objective() -> float:
        return max(vv - 2.0 * float(np.sum((W.T @ V) * H)) + float(np.sum((W.T @ W) * (H @ H.T))), 0.0)

    history = [objective()]
    done = 0
    for done in range(1, iterations + 1):
        for j in range(k):
            h = H[j]
            b = V @ h - W @ (H @ h) + W[:, j] * (h @ h)
            W[:, j] = sparse_column(b, alpha)
            w = W[:, j]
            H[j] = np.maximum(w @ V - (w @ W) @ H + H[j], 0.0)
        history.append(objective())
        if history[-2] - history[-1] <= tol * history[-2]:
            break
    return SparseNMF(W, H, np.asarray(history), alpha, done)
