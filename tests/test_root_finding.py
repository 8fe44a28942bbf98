"""Broyden root finding for canonical points: exact inverses of known warps, a naive scipy reference, folds
without roots, the restart, batch invariance, the implicit-correction gradient and the per-point Jacobian."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import root as scipy_root

from morphable.implicit.root_finding import RootResult, broyden, implicit_correction, inverse_jacobian, jacobian

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def ball(n: int, seed: int = 0, dtype: torch.dtype = torch.float64, radius: float = 1.0) -> torch.Tensor:
    """(n, 3) points uniform in the ball of the given radius."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=gen, dtype=dtype)
    v = v / v.norm(dim=1, keepdim=True)
    return radius * v * torch.rand(n, 1, generator=gen, dtype=dtype) ** (1 / 3)


def rotation(axis: list[float], degrees: float) -> torch.Tensor:
    """(3, 3) float64 rotation matrix (Rodrigues)."""
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    a = math.radians(degrees)
    return torch.eye(3, dtype=torch.float64) + math.sin(a) * cross + (1 - math.cos(a)) * cross @ cross


def smooth_warp(x: torch.Tensor) -> torch.Tensor:
    """x + 0.15 sin(2 x_y) e_x + 0.05 tanh(x_x + x_z) e_y + 0.1 x_x^2 e_z (invertible on the unit ball)."""
    dx = 0.15 * torch.sin(2 * x[:, 1])
    dy = 0.05 * torch.tanh(x[:, 0] + x[:, 2])
    dz = 0.1 * x[:, 0] ** 2
    return x + torch.stack([dx, dy, dz], dim=1)


FOLD = 0.4


def fold_warp(x: torch.Tensor) -> torch.Tensor:
    """fn_x = FOLD sin(x_x / FOLD): folds (d fn_x / d x_x = cos(x_x / FOLD) < 0 for |x_x| in (0.63, 1.88)) and
    never reaches |p_x| > FOLD, so those targets have no root; plus a smooth term in y."""
    dx = FOLD * torch.sin(x[:, 0] / FOLD) - x[:, 0]
    dy = 0.05 * torch.sin(3 * x[:, 2])
    return x + torch.stack([dx, dy, torch.zeros_like(dx)], dim=1)


def residual_of(fn, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (fn(x) - target).norm(dim=1)


def test_rigid_motion_is_inverted_exactly():
    r = rotation([0.3, -0.5, 0.8], 40.0)
    t = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    x_true = ball(500, seed=1)
    p = x_true @ r.T + t
    res = broyden(lambda x: x @ r.T + t, p)
    assert isinstance(res, RootResult)
    assert res.converged.all() and res.rate == 1.0
    assert (res.x - (p - t) @ r).norm(dim=1).max() < 1e-5
    assert res.residual.max() <= 1e-5
    # the start is up to ~0.9 away and steps are clamped to 0.1: the clamp, not the algebra, sets the count
    assert 5 <= res.iterations <= 15
    assert not res.x.requires_grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_smooth_warp_matches_naive_scipy_root(dtype):
    p = smooth_warp(ball(400, seed=2, dtype=dtype))
    res = broyden(smooth_warp, p)
    assert res.x.dtype == dtype and res.residual.dtype == dtype
    assert res.converged.all() and res.iterations <= 10
    torch.testing.assert_close(res.residual, residual_of(smooth_warp, res.x, p), rtol=0, atol=1e-7)
    assert residual_of(smooth_warp, res.x, p).max() <= 1e-5

    def g(v: np.ndarray, target: np.ndarray) -> np.ndarray:
        return smooth_warp(torch.from_numpy(v)[None].double())[0].numpy() - target

    for i in range(20):
        target = p[i].double().numpy()
        sol = scipy_root(g, target, args=(target,), method="hybr", tol=1e-13)
        assert sol.success
        np.testing.assert_allclose(res.x[i].double().numpy(), sol.x, rtol=0, atol=1e-5)


def test_fold_without_roots_is_reported_not_converged():
    p = ball(500, seed=3)
    tol = 1e-5
    res = broyden(fold_warp, p, tol=tol)
    no_root = p[:, 0].abs() > FOLD
    assert 0 < no_root.sum() < 500
    assert not res.converged[no_root].any()
    assert res.converged[p[:, 0].abs() < FOLD - 0.01].all()
    assert 0.4 < res.rate < 0.9
    assert res.rate == pytest.approx(res.converged.double().mean().item())
    assert torch.isfinite(res.x).all()
    # what is reported is true: re-evaluated residuals match, and converged means residual <= tol
    recomputed = residual_of(fold_warp, res.x, p)
    torch.testing.assert_close(res.residual, recomputed, rtol=0, atol=1e-12)
    assert (recomputed[res.converged] <= tol).all()
    assert (recomputed[~res.converged] > tol).all()
    # the restart ran for the failed points: 50 iterations from each start
    assert res.iterations == 100


def test_batch_and_chunk_invariance():
    def warp(x: torch.Tensor) -> torch.Tensor:
        return fold_warp(smooth_warp(x))

    p = ball(300, seed=4)
    whole = broyden(warp, p, max_iter=30)
    parts = [broyden(warp, q, max_iter=30) for q in p.split(100)]
    chunked = broyden(warp, p, max_iter=30, chunk=64)
    assert 0 < whole.rate < 1
    for other in (chunked, RootResult(torch.cat([r.x for r in parts]), torch.cat([r.residual for r in parts]),
                                      torch.cat([r.converged for r in parts]), max(r.iterations for r in parts))):
        assert (other.x - whole.x).abs().max() <= 1e-12
        assert (other.residual - whole.residual).abs().max() <= 1e-12
        assert torch.equal(other.converged, whole.converged)
        assert other.iterations == whole.iterations


def test_chunk_bounds_the_rows_per_call():
    sizes = []

    def warp(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return smooth_warp(x)

    broyden(warp, smooth_warp(ball(150, seed=5)), chunk=64)
    assert max(sizes) == 64


def test_a_handed_over_inverse_saves_the_jacobian_and_finds_the_same_roots():
    """Warm start as a fit does it: roots of a slightly moved warp, from the old roots and the old inverse."""
    moved = 0.02

    def old(x: torch.Tensor) -> torch.Tensor:
        return smooth_warp(x)

    graphs = []

    def new(x: torch.Tensor) -> torch.Tensor:
        graphs.append(x.requires_grad)
        return smooth_warp(x) + moved * torch.sin(x)

    p = smooth_warp(ball(200, seed=9))
    first = broyden(old, p)
    warm = broyden(new, p, init=first.x, init_inverse=inverse_jacobian(old, first.x))
    assert not any(graphs)  # no Jacobian (autograd) evaluation of the new warp
    cold = broyden(new, p, init=first.x)
    assert warm.rate == 1.0 and cold.rate == 1.0
    assert (warm.x - cold.x).abs().max() <= 1e-5
    assert residual_of(new, warm.x, p).max() <= 1e-5
    with pytest.raises(ValueError, match="init_inverse must have shape"):
        broyden(new, p, init_inverse=torch.eye(3, dtype=p.dtype))


def test_implicit_correction_with_a_given_inverse_is_the_same_step():
    p = smooth_warp(ball(50, seed=10))
    roots = broyden(smooth_warp, p).x
    inverse = inverse_jacobian(smooth_warp, roots)
    torch.testing.assert_close(inverse, torch.linalg.inv(jacobian(smooth_warp, roots)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(implicit_correction(smooth_warp, roots, p, inverse),
                               implicit_correction(smooth_warp, roots, p), rtol=0, atol=0)
    with pytest.raises(ValueError, match="inverse must have shape"):
        implicit_correction(smooth_warp, roots, p, inverse[:10])


def phi(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(x[:, 1] + 0.3), x[:, 0] * x[:, 2], torch.cos(2 * x[:, 0])], dim=1)


def test_implicit_correction_gives_the_implicit_gradient():
    theta = torch.tensor([0.2, -0.15, 0.1], dtype=torch.float64, requires_grad=True)

    def warp(x: torch.Tensor, th: torch.Tensor = theta) -> torch.Tensor:
        return x + th * phi(x)

    p = ball(50, seed=6)
    w = torch.randn(50, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    root = broyden(warp, p, tol=1e-12)
    assert root.converged.all()
    x = implicit_correction(warp, root.x, p)
    assert x.requires_grad
    assert (x - root.x).abs().max() <= 1e-11  # the value is the root, up to the residual
    (grad,) = torch.autograd.grad((w * x).sum(), theta)

    eps = 1e-4
    fd = torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[k] = eps
        th_plus, th_minus = theta.detach() + step, theta.detach() - step
        plus = broyden(lambda v, th=th_plus: warp(v, th), p, tol=1e-12)
        minus = broyden(lambda v, th=th_minus: warp(v, th), p, tol=1e-12)
        assert plus.converged.all() and minus.converged.all()
        fd[k] = (w * (plus.x - minus.x)).sum() / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=0)


def test_implicit_correction_is_a_newton_step():
    theta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def warp(x: torch.Tensor) -> torch.Tensor:
        return x + theta * phi(x)

    p = ball(100, seed=8)
    x_true = broyden(warp, p, tol=1e-13).x
    off = x_true + 1e-3 * torch.randn(100, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x = implicit_correction(warp, off, p)
    before, after = (off - x_true).norm(dim=1), (x.detach() - x_true).norm(dim=1)
    assert (after <= 2 * before ** 2).all()  # quadratic: about 1e-6 from 1e-3 (measured constant 0.57)
    (grad,) = torch.autograd.grad(x.sum(), theta)
    assert torch.isfinite(grad)


def test_jacobian_matches_autograd_functional():
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Softplus(beta=10), torch.nn.Linear(16, 3)).double()

    def mlp_warp(x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * net(x)

    x = ball(6, seed=10)
    for fn in (smooth_warp, fold_warp, mlp_warp):
        with torch.no_grad():  # jacobian enables gradients itself
            jac = jacobian(fn, x)
        assert jac.shape == (6, 3, 3) and not jac.requires_grad
        for n in range(6):
            ref = torch.autograd.functional.jacobian(lambda v, f=fn: f(v[None])[0], x[n])
            torch.testing.assert_close(jac[n], ref, rtol=1e-12, atol=1e-12)


def test_restart_from_fixed_point_step_rescues_a_large_translation():
    shift = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)

    def warp(x: torch.Tensor) -> torch.Tensor:
        return x + shift + 0.02 * torch.sin(3 * x)

    p = warp(ball(200, seed=11))
    # the root is >= 0.44 from p, out of reach of 4 steps of at most 0.1: the first start must fail,
    # while p - F(p) lies within 0.03 of the root
    res = broyden(warp, p, max_iter=4)
    assert res.converged.all()
    assert 4 < res.iterations <= 8  # 4 from the first start plus the restart's
    assert residual_of(warp, res.x, p).max() <= 1e-5
    # a given init does not change the second start
    assert broyden(warp, p, init=p.clone(), max_iter=4).converged.all()


def test_tiny_budgets_report_failures_and_rate():
    def strong(x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * torch.sin(3 * x.roll(1, dims=1)) + 0.3 * x ** 3

    p = ball(200, seed=12)
    res = broyden(strong, p, max_iter=1)
    assert not res.converged.any() and res.rate == 0.0
    assert res.iterations == 2
    res = broyden(strong, p, max_iter=50)
    assert 0.9 < res.rate <= 1.0
    assert res.rate == pytest.approx(res.converged.double().mean().item())
    # max_iter=0: only the starts are evaluated; an exact init converges with no iterations
    exact = broyden(strong, strong(p), init=p, max_iter=0)
    assert exact.converged.all() and exact.iterations == 0


def test_singular_start_jacobian_falls_back_to_identity():
    def cube(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0] ** 3, x[:, 1], x[:, 2]], dim=1)

    p = torch.tensor([[0.125, 0.1, 0.0], [-0.064, 0.0, 0.2]], dtype=torch.float64)
    init = torch.tensor([[0.0, 0.1, 0.0], [0.0, 0.0, 0.2]], dtype=torch.float64)  # d fn_x / d x_x = 0 here
    res = broyden(cube, p, init=init, tol=1e-10)
    assert res.converged.all()
    torch.testing.assert_close(res.x[:, 0], torch.tensor([0.5, -0.4], dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_follow_the_target(device, dtype):
    p = smooth_warp(ball(64, seed=13, dtype=dtype)).to(device)
    res = broyden(smooth_warp, p, chunk=32)
    assert res.x.device == p.device and res.x.dtype == dtype and res.converged.device == p.device
    assert res.converged.all()
    x = implicit_correction(smooth_warp, res.x, p)
    assert x.device == p.device and x.dtype == dtype


def test_bad_input_is_refused():
    p = ball(4)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        broyden(smooth_warp, p[:, :2])
    with pytest.raises(ValueError, match="init"):
        broyden(smooth_warp, p, init=p[:3])
    with pytest.raises(ValueError, match="chunk"):
        broyden(smooth_warp, p, chunk=0)
    with pytest.raises(ValueError, match="fn must map"):
        broyden(lambda x: x[:, :2], p)
    empty = broyden(smooth_warp, p[:0])
    assert empty.x.shape == (0, 3) and empty.iterations == 0 and empty.rate == 1.0
