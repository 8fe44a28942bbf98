"""PCA baseline: orthonormal components, error falls with latent size, exact at full rank."""

import numpy as np

from morphable.explicit.pca import PCAModel, _randomised_svd


def _data(rng, n=60, v=40, rank=12):
    basis = rng.normal(size=(rank, v * 3))
    return (rng.normal(size=(n, rank)) * np.linspace(3, 0.3, rank)) @ basis + 0.001 * rng.normal(size=(n, v * 3))


def test_error_falls_with_latent_size_and_vanishes_at_full_rank():
    rng = np.random.default_rng(0)
    x = _data(rng).reshape(60, 40, 3)
    errors = []
    for k in (1, 2, 4, 8, 12, 59):
        model = PCAModel.fit(x, k)
        errors.append(np.abs(model.reconstruct(x) - x).mean())
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-5
    model = PCAModel.fit(x, 8)
    p = model.components.reshape(8, -1).astype(np.float64)
    np.testing.assert_allclose(p @ p.T, np.eye(8), atol=1e-5)
    codes = model.encode(x)
    np.testing.assert_allclose(codes.std(axis=0, ddof=1), model.stddev, rtol=1e-4)


def test_reconstruction_is_the_orthogonal_projection():
    rng = np.random.default_rng(1)
    x = _data(rng).reshape(60, 40, 3)
    model = PCAModel.fit(x, 5)
    centred = x.reshape(60, -1) - x.reshape(60, -1).mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:5].T @ vt[:5] + x.reshape(60, -1).mean(0)
    np.testing.assert_allclose(model.reconstruct(x).reshape(60, -1), projected, atol=1e-4)


def test_randomised_svd_matches_exact_on_a_low_rank_matrix():
    rng = np.random.default_rng(2)
    x = _data(rng, n=300, v=200)
    s, vt = _randomised_svd(x - x.mean(0), 8, rng)
    _, s_exact, vt_exact = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(s[:8], s_exact[:8], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(vt[:8] * vt_exact[:8], axis=1)), 1.0, atol=1e-6)


def test_state_round_trip():
    rng = np.random.default_rng(3)
    x = _data(rng).reshape(60, 40, 3)
    model = PCAModel.fit(x, 4)
    again = PCAModel.from_state(model.state())
    np.testing.assert_array_equal(again.reconstruct(x), model.reconstruct(x))
