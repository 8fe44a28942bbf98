"""Sparse NMF (Potluru et al. block coordinate descent): the column solver against a scipy reference, the
factorisation's invariants, sklearn's NMF at no sparsity, sparseness rising with the constraint."""

import numpy as np
import pytest
from scipy.optimize import minimize

from morphable.errors import MorphableError
from morphable.explicit.nmf import (hoyer_alpha, hoyer_sparseness, nndsvd, sparse_column, sparse_nmf,
                                    sparse_opt)


def _reference_max(b: np.ndarray, alpha: float, starts: int, rng) -> float:
    """Best ``b^T w`` found by SLSQP from many starts on ``{w >= 0, ||w||_2 = 1, ||w||_1 = alpha}``."""
    cons = [{"type": "eq", "fun": lambda x: x @ x - 1}, {"type": "eq", "fun": lambda x: x.sum() - alpha}]
    best = -np.inf
    for _ in range(starts):
        r = minimize(lambda x: -b @ x, rng.random(len(b)), jac=lambda x: -b, constraints=cons,
                     bounds=[(0, None)] * len(b), method="SLSQP", options={"ftol": 1e-12})
        if r.success and abs(r.x @ r.x - 1) < 1e-7 and abs(r.x.sum() - alpha) < 1e-7:
            best = max(best, float(b @ r.x))
    return best


def test_sparse_opt_matches_scipy_reference():
    rng = np.random.default_rng(0)
    for _ in range(15):
        n = int(rng.integers(3, 8))
        b = rng.standard_normal(n)
        alpha = float(rng.uniform(1.05, np.sqrt(n) - 0.02))
        w = sparse_opt(b, alpha)
        assert (w >= 0).all()
        assert np.isclose(np.linalg.norm(w), 1.0, atol=1e-10)
        assert np.isclose(w.sum(), alpha, atol=1e-9)
        assert b @ w >= _reference_max(b, alpha, 6, rng) - 1e-6


def test_sparse_opt_limits_and_ties():
    b = np.array([0.3, -1.0, 2.0, 0.5])
    assert np.allclose(sparse_opt(b, 1.0), [0, 0, 1, 0])  # alpha 1: the largest entry only
    assert np.allclose(sparse_opt(b, 2.0), 0.5)  # alpha sqrt(n): the flat vector
    flat = sparse_opt(np.ones(50), 3.3)  # every feasible w ties: still a feasible answer
    assert np.isclose(np.linalg.norm(flat), 1) and np.isclose(flat.sum(), 3.3, atol=1e-6)
    with pytest.raises(MorphableError):
        sparse_opt(b, 2.5)


def test_sparse_column_inactive_constraint_is_normalised_positive_part():
    b = np.array([1.0, 2.0, -3.0, 2.0])
    pos = np.maximum(b, 0) / np.linalg.norm(np.maximum(b, 0))
    assert np.allclose(sparse_column(b, 2.0), pos)  # L1/L2 of pos = 5/3 <= 2: inactive
    w = sparse_column(b, 1.2)  # active: L1 = 1.2 exactly
    assert np.isclose(w.sum(), 1.2) and np.isclose(np.linalg.norm(w), 1)


def test_hoyer_alpha_gives_that_sparseness():
    rng = np.random.default_rng(1)
    b = rng.standard_normal(400)
    for s in (0.1, 0.5, 0.9):
        w = sparse_opt(b, hoyer_alpha(400, s))
        assert np.isclose(hoyer_sparseness(w), s, atol=1e-9)
    assert np.isclose(hoyer_alpha(53215, 0.972), 7.5, atol=0.25)  # the paper's "sparsity 7.5"
    with pytest.raises(MorphableError):
        hoyer_alpha(10, 1.0)


@pytest.fixture(scope="module")
def matrix():
    rng = np.random.default_rng(2)
    W = np.maximum(rng.standard_normal((60, 4)), 0)
    H = rng.random((4, 30))
    return W @ H + 0.05 * rng.random((60, 30))


@pytest.mark.parametrize("init", ["random", "nndsvd"])
def test_nmf_invariants(matrix, init):
    r = sparse_nmf(matrix, 4, sparseness=0.4, iterations=150, init=init, tol=0)
    assert (r.W >= 0).all() and (r.H >= 0).all()
    assert np.allclose(np.linalg.norm(r.W, axis=0), 1.0)
    assert (hoyer_sparseness(r.W) >= 0.4 - 1e-9).all()
    assert np.all(np.diff(r.objective) <= 1e-9 * r.objective[0])  # never increases
    assert r.objective[-1] < 0.5 * r.objective[0]
    assert np.isclose(r.objective[-1], np.sum((matrix - r.W @ r.H) ** 2), rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Maximum number of iterations")
def test_nmf_without_sparsity_matches_sklearn(matrix):
    sklearn = pytest.importorskip("sklearn.decomposition")
    ref = sklearn.NMF(4, init="nndsvda", max_iter=1000, tol=1e-8, random_state=0)
    ref_error = np.linalg.norm(matrix - ref.fit_transform(matrix) @ ref.components_)
    ours = np.sqrt(sparse_nmf(matrix, 4, sparseness=0.0, iterations=1000, tol=1e-12, init="nndsvd").objective[-1])
    assert ours <= 1.03 * ref_error


def test_sparseness_rises_with_the_constraint(matrix):
    results = [sparse_nmf(matrix, 4, sparseness=s, iterations=200) for s in (0.0, 0.5, 0.8)]
    sparseness = [hoyer_sparseness(r.W).mean() for r in results]
    errors = [r.objective[-1] for r in results]
    assert sparseness[0] < sparseness[1] < sparseness[2]
    assert errors[0] < errors[1] < errors[2]


def test_nndsvd_is_nonnegative_and_close(matrix):
    W, H = nndsvd(matrix, 4)
    assert (W > 0).all() and (H > 0).all()
    assert np.linalg.norm(matrix - W @ H) < 0.5 * np.linalg.norm(matrix)


def test_bad_input():
    with pytest.raises(MorphableError):
        sparse_nmf(-np.ones((5, 4)), 2)
    with pytest.raises(MorphableError):
        sparse_nmf(np.ones((5, 4)), 6)
    with pytest.raises(MorphableError):
        sparse_nmf(np.ones((5, 4)), 2, init="svd")
