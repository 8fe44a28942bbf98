"""Mesh layers (ChebConv, SpiralConv, Pool) against naive loops on a small mesh, gradcheck, buffers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh

from morphable.explicit.layers import ChebConv, Pool, SparseMatrix, SpiralConv, sparse_matmul, vertex_major
from morphable.io import load_weights, save_weights


pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.fixture(scope="module")
def mesh():
    return trimesh.creation.icosphere(1)  # 42 vertices


def dense_scaled_laplacian(faces: np.ndarray, n: int) -> np.ndarray:
    """``-D^-1/2 A D^-1/2`` computed densely from the faces."""
    a = np.zeros((n, n))
    for f in faces:
        for i, j in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            a[i, j] = a[j, i] = 1.0
    d = a.sum(1)
    return -a / np.sqrt(np.outer(d, d))


def naive_cheb(x: np.ndarray, lap: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Loop over batch and vertices: ``y[b, v] = sum_k sum_u T_k[v, u] x[b, u] W_k + bias``."""
    n = lap.shape[0]
    polys = [np.eye(n), lap]
    while len(polys) < w.shape[0]:
        polys.append(2 * lap @ polys[-1] - polys[-2])
    out = np.zeros((x.shape[0], n, w.shape[2]))
    for b in range(x.shape[0]):
        for v in range(n):
            for k in range(w.shape[0]):
                out[b, v] += (polys[k][v] @ x[b]) @ w[k]
            if bias is not None:
                out[b, v] += bias
    return out


@pytest.mark.parametrize("c_in,c_out,k", [(3, 5, 4), (5, 3, 4), (4, 4, 6), (2, 3, 1), (3, 2, 2)])
def test_chebconv_matches_naive_loop(mesh, c_in, c_out, k):
    n = len(mesh.vertices)
    lap = dense_scaled_laplacian(mesh.faces, n)
    conv = ChebConv(c_in, c_out, k, sp.csr_matrix(lap))
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, n, c_in)
    expected = naive_cheb(x.numpy(), lap, conv.weight.detach().numpy(), conv.bias.detach().numpy())
    out = conv(x)
    assert out.shape == (3, n, c_out)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_chebconv_batch_equals_per_sample_and_layouts(mesh):
    n = len(mesh.vertices)
    conv = ChebConv(4, 6, 5, dense_scaled_laplacian(mesh.faces, n))
    x = torch.randn(5, n, 4)
    batched = conv(x)
    for b in range(5):
        torch.testing.assert_close(batched[b], conv(x[b:b + 1])[0], rtol=1e-12, atol=1e-12)
    vertex_major_input = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, (V, B, C) storage
    torch.testing.assert_close(conv(vertex_major_input), batched, rtol=1e-12, atol=1e-12)
    # the output is a view of vertex-major storage: the next layer takes it without a copy
    assert batched.transpose(0, 1).is_contiguous()
    assert vertex_major(batched).data_ptr() == batched.data_ptr()


@pytest.mark.parametrize("c_in,c_out,bias", [(2, 3, True), (3, 2, True), (3, 3, False)])
def test_chebconv_gradcheck(mesh, c_in, c_out, bias):
    n = len(mesh.vertices)
    conv = ChebConv(c_in, c_out, 4, dense_scaled_laplacian(mesh.faces, n), bias=bias)
    x = torch.randn(2, n, c_in, requires_grad=True)
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    assert torch.autograd.gradcheck(lambda x, *p: conv(x), (x, *params))
    # gradients match autograd through the dense naive formula
    lap = torch.from_numpy(dense_scaled_laplacian(mesh.faces, n))
    terms = [x, torch.einsum("uv,bvc->buc", lap, x)]
    while len(terms) < 4:
        terms.append(2 * torch.einsum("uv,bvc->buc", lap, terms[-1]) - terms[-2])
    ref = sum(t @ w for t, w in zip(terms, conv.weight)) + (conv.bias if bias else 0)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(conv(x), (x, *params), g)
    want = torch.autograd.grad(ref, (x, *params), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c_in,c_out", [(3, 9), (9, 3), (9, 10), (10, 9), (2, 2)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_chebconv_every_form_matches_dense_formula(mesh, c_in, c_out, input_grad):
    """Basis and Clenshaw forms, each with wide and narrow (C < 8) sides: output and gradients equal
    those of the dense formula ``sum_k T_k(L) x W_k + b`` in float64."""
    n = len(mesh.vertices)
    conv = ChebConv(c_in, c_out, 5, dense_scaled_laplacian(mesh.faces, n))
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, n, c_in, requires_grad=input_grad)
    lap = torch.from_numpy(dense_scaled_laplacian(mesh.faces, n))
    terms = [x, torch.einsum("uv,bvc->buc", lap, x)]
    while len(terms) < 5:
        terms.append(2 * torch.einsum("uv,bvc->buc", lap, terms[-1]) - terms[-2])
    ref = sum(t @ w for t, w in zip(terms, conv.weight)) + conv.bias
    out = conv(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    params = (x, conv.weight, conv.bias) if input_grad else (conv.weight, conv.bias)
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_chebconv_only_weight_gradients(mesh):
    """First layer: the input needs no gradient; weights still get the right one."""
    n = len(mesh.vertices)
    conv = ChebConv(3, 4, 3, dense_scaled_laplacian(mesh.faces, n))
    x = torch.randn(2, n, 3)
    conv(x).square().sum().backward()
    lap = torch.from_numpy(dense_scaled_laplacian(mesh.faces, n))
    w = conv.weight.detach().clone().requires_grad_()
    terms = [x, lap @ x]
    terms.append(2 * (lap @ terms[-1]) - terms[0])
    ref = sum(t @ wk for t, wk in zip(terms, w)) + conv.bias.detach()
    ref.square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad, rtol=1e-10, atol=1e-10)


def test_chebconv_init_and_validation(mesh):
    n = len(mesh.vertices)
    lap = dense_scaled_laplacian(mesh.faces, n)
    conv = ChebConv(16, 32, 6, lap)
    bound = np.sqrt(6.0 / (6 * 16 + 32))  # Glorot over the fan-in K * C_in, as the original CoMA
    assert conv.weight.shape == (6, 16, 32)
    w_max = float(conv.weight.detach().abs().max())
    assert 0.9 * bound < w_max <= bound  # uniform over the whole range
    assert float(conv.bias.detach().abs().max()) == 0.0
    asym = lap.copy()
    asym[0, 1] += 0.5
    with pytest.raises(ValueError, match="symmetric"):
        ChebConv(3, 3, 2, asym)
    with pytest.raises(ValueError, match="expects"):
        conv(torch.randn(2, n + 1, 16))


def test_sparse_buffers_move_convert_and_save(mesh, tmp_path):
    n = len(mesh.vertices)
    lap = dense_scaled_laplacian(mesh.faces, n)
    torch.set_default_dtype(torch.float32)
    conv = ChebConv(3, 4, 3, lap)
    pool_matrix = sp.random(10, n, density=0.2, random_state=0, format="csr")
    pool = Pool(pool_matrix)
    assert conv.laplacian.values.dtype == torch.float32 and conv.laplacian.col.dtype == torch.int32
    x = torch.randn(2, n, 3)
    out32 = conv(x)
    conv.to(torch.device("cpu")).to(torch.float64)
    pool.double()
    assert conv.laplacian.values.dtype == torch.float64
    assert conv.laplacian.crow.dtype == torch.int32  # indices are not converted
    assert pool.matrix.values_t.dtype == torch.float64
    torch.testing.assert_close(conv(x.double()).float(), out32, rtol=1e-5, atol=1e-5)
    assert torch.autograd.gradcheck(lambda x: pool(x), (torch.randn(2, n, 2, dtype=torch.float64,
                                                                    requires_grad=True),))
    # state dicts hold dense tensors only: safetensors can save them, a fresh module loads them
    state = {**{f"conv.{k}": v for k, v in conv.state_dict().items()},
             **{f"pool.{k}": v for k, v in pool.state_dict().items()}}
    assert all(t.layout == torch.strided for t in state.values())
    save_weights(tmp_path / "w.safetensors", state, {})
    loaded, _ = load_weights(tmp_path / "w.safetensors")
    conv2 = ChebConv(3, 4, 3, 0.5 * lap).double()  # same sparsity, other values: all are replaced
    pool2 = Pool(2.0 * pool_matrix).double()
    conv2.load_state_dict({k[5:]: v for k, v in loaded.items() if k.startswith("conv.")})
    pool2.load_state_dict({k[5:]: v for k, v in loaded.items() if k.startswith("pool.")})
    xd = torch.randn(2, n, 3, dtype=torch.float64)
    torch.testing.assert_close(conv2(xd), conv(xd), rtol=0, atol=0)
    xp = torch.randn(2, n, 2, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(pool(xp).sum(), xp)[0]
    g2 = torch.autograd.grad(pool2(xp).sum(), xp)[0]  # uses the reloaded transpose
    torch.testing.assert_close(g2, g1, rtol=0, atol=0)


def naive_spiral(x: np.ndarray, idx: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Loop over batch and vertices; the dummy index ``V`` contributes zero features."""
    b_, n, c = x.shape
    out = np.zeros((b_, n, weight.shape[0]))
    for b in range(b_):
        for v in range(n):
            feats = [x[b, j] if j < n else np.zeros(c) for j in idx[v]]
            out[b, v] = weight @ np.concatenate(feats) + bias
    return out


def spirals_with_dummy(mesh, length: int) -> np.ndarray:
    n = len(mesh.vertices)
    order = np.argsort(((mesh.vertices[:, None] - mesh.vertices[None]) ** 2).sum(-1), axis=1)
    idx = order[:, :length].copy()
    idx[::3, -2:] = n  # padding with the dummy vertex
    return idx


@pytest.mark.parametrize("dummy", [True, False])
def test_spiralconv_matches_naive_loop_both_layouts(mesh, dummy):
    n = len(mesh.vertices)
    idx = spirals_with_dummy(mesh, 5) if dummy else spirals_with_dummy(mesh, 5).clip(max=n - 1)
    conv = SpiralConv(3, 4, idx)
    assert conv.has_dummy == dummy
    with torch.no_grad():
        conv.linear.bias.normal_()
    x = torch.randn(3, n, 3)
    expected = naive_spiral(x.numpy(), idx, conv.linear.weight.detach().numpy(), conv.linear.bias.detach().numpy())
    batch_major = conv(x)
    vertex_major_out = conv(x.transpose(0, 1).contiguous().transpose(0, 1))
    np.testing.assert_allclose(batch_major.detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(vertex_major_out.detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    assert vertex_major_out.transpose(0, 1).is_contiguous()  # layout follows the input
    for b in range(3):
        torch.testing.assert_close(conv(x[b:b + 1])[0], batch_major[b], rtol=1e-12, atol=1e-12)


def test_spiralconv_dummy_slots_contribute_nothing(mesh):
    n = len(mesh.vertices)
    idx = spirals_with_dummy(mesh, 6)
    conv = SpiralConv(2, 3, idx)
    x = torch.randn(2, n, 2, requires_grad=True)
    before = conv(x).detach()
    with torch.no_grad():  # the last two slots hold the dummy on rows 0, 3, 6, ...
        conv.linear.weight[:, -4:] += 10.0
    after = conv(x).detach()
    padded = torch.zeros(n, dtype=torch.bool)
    padded[::3] = True
    torch.testing.assert_close(after[:, padded], before[:, padded], rtol=0, atol=1e-12)
    assert (after[:, ~padded] - before[:, ~padded]).abs().min() > 0
    # gradients through the gather equal those of the naive formulation
    xp = torch.cat([x, torch.zeros(2, 1, 2)], 1)
    ref = conv.linear(xp[:, torch.from_numpy(idx)].reshape(2, n, -1))
    g = torch.randn_like(ref)
    for layout in (x, x.transpose(0, 1).contiguous().transpose(0, 1)):
        torch.testing.assert_close(torch.autograd.grad(conv(layout), x, g)[0],
                                   torch.autograd.grad(ref, x, g, retain_graph=True)[0], rtol=1e-12, atol=1e-12)


def test_spiralconv_gradcheck_float64(mesh, float64_default):
    n = len(mesh.vertices)
    conv = SpiralConv(2, 3, spirals_with_dummy(mesh, 4))
    with torch.no_grad():
        conv.linear.bias.normal_()
    x = torch.randn(2, n, 2, requires_grad=True)
    weight, bias = conv.linear.weight, conv.linear.bias
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(
        conv, {"linear.weight": w, "linear.bias": b}, (x,)), (x, weight, bias))


@pytest.mark.parametrize("c_in,c_out", [(3, 9), (2, 3), (9, 3), (3, 2), (9, 10), (10, 8)])
def test_spiralconv_narrow_and_wide_match_naive_gather(mesh, c_in, c_out):
    """Narrow (C < 8) and wide layers: outputs and all gradients equal those of the naive layer (one
    gather of every neighbour, one Linear), in float64, with dummy slots."""
    n = len(mesh.vertices)
    idx = spirals_with_dummy(mesh, 5)
    conv = SpiralConv(c_in, c_out, idx)
    with torch.no_grad():
        conv.linear.bias.normal_()
    x = torch.randn(3, n, c_in, requires_grad=True)
    xp = torch.cat([x, torch.zeros(3, 1, c_in)], 1)
    ref = conv.linear(xp[:, torch.from_numpy(idx)].reshape(3, n, -1))
    out = conv(x)
    np.testing.assert_allclose(out.detach().numpy(), naive_spiral(
        x.detach().numpy(), idx, conv.linear.weight.detach().numpy(), conv.linear.bias.detach().numpy()),
        rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    params = (x, conv.linear.weight, conv.linear.bias)
    wanted = torch.autograd.grad(ref, params, g)
    for got, want in zip(torch.autograd.grad(out, params, g), wanted):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # weights only (a first layer): the same weight gradient
    grad_w = torch.autograd.grad(conv(x.detach()), conv.linear.weight, g)[0]
    torch.testing.assert_close(grad_w, wanted[1], rtol=1e-10, atol=1e-10)


def test_spiralconv_validation(mesh):
    n = len(mesh.vertices)
    with pytest.raises(ValueError, match="indices"):
        SpiralConv(3, 3, np.full((n, 4), n + 1))
    with pytest.raises(ValueError, match="integer"):
        SpiralConv(3, 3, np.zeros((n, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="own vertex"):
        SpiralConv(3, 3, np.roll(spirals_with_dummy(mesh, 4), 1, axis=1))


def test_pool_matches_naive_loop_and_gradcheck(mesh):
    n = len(mesh.vertices)
    rng = np.random.default_rng(0)
    m = sp.random(17, n, density=0.15, random_state=1, format="csr")
    dense = m.toarray()
    for matrix in (m, torch.from_numpy(dense).to_sparse(), dense):
        pool = Pool(matrix)
        x = torch.from_numpy(rng.normal(size=(3, n, 4)))
        out = pool(x).numpy()
        expected = np.zeros((3, 17, 4))
        for b in range(3):
            for i in range(17):
                for j in range(n):
                    expected[b, i] += dense[i, j] * x[b, j].numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    xg = torch.randn(2, n, 3, requires_grad=True)
    assert torch.autograd.gradcheck(pool, (xg,))
    assert pool(xg).transpose(0, 1).is_contiguous()


def test_sparse_matmul_symmetric_default(mesh):
    n = len(mesh.vertices)
    lap = SparseMatrix(dense_scaled_laplacian(mesh.faces, n))
    x = torch.randn(n, 5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sparse_matmul(lap.tensor(), x), (x,))
    m = SparseMatrix(sp.random(7, n, density=0.3, random_state=2), transpose=True)
    assert torch.autograd.gradcheck(lambda x: sparse_matmul(m.tensor(), x, m.transposed()), (x,))
    np.testing.assert_allclose(m.to_scipy().toarray(), sp.random(7, n, density=0.3, random_state=2).toarray())
