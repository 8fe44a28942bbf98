"""Deep3DMM learned feature aggregation against a naive construction of its mapping matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh
from scipy.spatial import cKDTree

from morphable.explicit.layers import Pool
from morphable.explicit.pooling import LearnedAggregation


pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.fixture(scope="module")
def levels():
    """Fine icosphere(1) (42 vertices), coarse = its first 12 (the icosahedron), D and U between them."""
    fine = trimesh.creation.icosphere(1).vertices
    coarse = fine[:12]
    down = sp.csr_matrix((np.ones(12), (np.arange(12), np.arange(12))), shape=(12, 42))
    dist, idx = cKDTree(coarse).query(fine, k=3)
    w = 1.0 / np.maximum(dist, 1e-9)
    w /= w.sum(1, keepdims=True)
    up = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(42), 3), idx.ravel())), shape=(42, 12))
    return fine, coarse, down, up


def naive_matrix(agg: LearnedAggregation, qem: np.ndarray | None) -> np.ndarray:
    """Row by row: cosines, clamp at 1e-25, keep the top k, divide by their sum, fuse with QEM."""
    q = agg.queries.detach().numpy()
    k = agg.keys.detach().numpy()
    att = np.zeros((len(q), len(k)))
    for i in range(len(q)):
        cos = np.array([q[i] @ k[j] / (np.linalg.norm(q[i]) * np.linalg.norm(k[j])) for j in range(len(k))])
        cos = np.maximum(cos, 1e-25)
        keep = np.argsort(-cos)[:agg.top_k] if agg.top_k else np.arange(len(k))
        att[i, keep] = cos[keep] / cos[keep].sum()
    if agg.mode == "attention":
        return att
    w = agg.fusion.detach().numpy()
    return (w[0] * qem + w[1] * att) / w.sum()


def directions(levels):
    fine, coarse, down, up = levels
    return [("down", coarse, fine, down, 8), ("up", fine, coarse, up, 5)]


@pytest.mark.parametrize("mode", ["attention", "fused"])
@pytest.mark.parametrize("use_topk", [True, False])
def test_forward_matches_naive_matrix(levels, mode, use_topk):
    for _, queries, keys, qem, k in directions(levels):
        agg = LearnedAggregation(queries, keys, qem, mode=mode, top_k=k if use_topk else 0, dim=7)
        expected_m = naive_matrix(agg, qem.toarray())
        np.testing.assert_allclose(agg.dense_matrix().detach().numpy(), expected_m, rtol=1e-12, atol=1e-14)
        x = torch.randn(3, len(keys), 4)
        out = agg(x)
        expected = np.zeros((3, len(queries), 4))
        for b in range(3):
            for i in range(len(queries)):
                for j in range(len(keys)):
                    expected[b, i] += expected_m[i, j] * x[b, j].numpy()
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
        for b in range(3):
            torch.testing.assert_close(agg(x[b:b + 1])[0], out[b], rtol=1e-12, atol=1e-12)


def test_topk_rows_have_k_nonzeros_summing_to_one(levels):
    for _, queries, keys, _, k in directions(levels):
        agg = LearnedAggregation(queries, keys, mode="attention", top_k=k)
        index, weights = agg.attention_topk()
        assert index.shape == weights.shape == (len(queries), k)
        assert all(len(set(row.tolist())) == k for row in index)
        m = agg.dense_matrix().detach()
        assert ((m != 0).sum(1) == k).all()
        torch.testing.assert_close(m.sum(1), torch.ones(len(queries)), rtol=1e-12, atol=1e-12)
        # the kept entries are the k largest cosine scores of each row
        qn = torch.nn.functional.normalize(agg.queries, dim=1)
        kn = torch.nn.functional.normalize(agg.keys, dim=1)
        scores = (qn @ kn.t()).detach()
        kth = scores.topk(k, dim=1).values[:, -1:]
        assert ((scores >= kth) == (m != 0)).all()


def test_initialisation(levels):
    fine, coarse, down, _ = levels
    agg = LearnedAggregation(coarse, fine, down, mode="fused", top_k=8)
    assert agg.keys.shape == (42, 21) and agg.queries.shape == (12, 21)
    torch.testing.assert_close(agg.fusion.detach(), torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(agg.fusion_coefficients().detach(), torch.tensor([0.8, 0.2]))
    # positions normalised by the fine level's mean/std, scaled by 0.1, plus noise in [0, 0.1)
    base = 0.1 * (fine - fine.mean(0)) / fine.std(0)
    noise = agg.keys.detach().numpy()[:, :3] - base
    assert noise.min() >= 0 and noise.max() < 0.1
    padded = agg.keys.detach().numpy()[:, 3:]
    assert padded.min() >= 0 and padded.max() < 0.1 and padded.std() > 0.01
    # template initialisation: each coarse vertex keeps its own fine copy among its top k
    index, _ = agg.attention_topk()
    assert (index == torch.arange(12)[:, None]).any(1).all()


def test_gradcheck(levels):
    fine, coarse, down, up = levels
    cases = [LearnedAggregation(coarse, fine, down, mode="fused", top_k=6, dim=4),
             LearnedAggregation(fine, coarse, up, mode="attention", top_k=4, dim=4),
             LearnedAggregation(fine, coarse, up, mode="fused", top_k=0, dim=4)]
    for agg in cases:
        x = torch.randn(1, agg.n_keys, 2, requires_grad=True)
        params = list(agg.parameters())
        assert torch.autograd.gradcheck(lambda x, *p: agg(x), (x, *params))
        # gradients equal those through the dense matrix (autograd of naive formulas)
        g = torch.randn(1, agg.n_queries, 2)
        got = torch.autograd.grad(agg(x), (x, *params), g)
        want = torch.autograd.grad(torch.einsum("qk,bkc->bqc", agg.dense_matrix(), x), (x, *params), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,top_k", [("fused", 8), ("attention", 8), ("fused", 0), ("qem", 8)])
def test_freeze_reproduces_trained_matrix(levels, mode, top_k):
    fine, coarse, down, _ = levels
    agg = LearnedAggregation(coarse, fine, down, mode=mode, top_k=top_k)
    initial = agg.dense_matrix().detach().clone()
    x = torch.randn(6, 42, 3)
    target = torch.randn(6, 12, 3)
    params = list(agg.parameters())
    if params:
        opt = torch.optim.SGD(params, lr=0.5)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.l1_loss(agg(x), target).backward()
            opt.step()
        assert (agg.dense_matrix().detach() - initial).abs().max() > 1e-4  # training moved M
    frozen = agg.freeze()
    assert isinstance(frozen, Pool) and frozen.matrix.values.dtype == torch.float64
    torch.testing.assert_close(torch.from_numpy(frozen.matrix.to_scipy().toarray()), agg.dense_matrix().detach(),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(frozen(x), agg(x).detach(), rtol=1e-12, atol=1e-12)
    if top_k and mode != "qem":  # the frozen matrix stays sparse: at most k (+ QEM) entries per row
        assert frozen.matrix.col.numel() <= 12 * (top_k + 1)


def test_validation(levels):
    fine, coarse, down, _ = levels
    with pytest.raises(ValueError, match="mode"):
        LearnedAggregation(coarse, fine, down, mode="softmax")
    with pytest.raises(ValueError, match="QEM"):
        LearnedAggregation(coarse, fine, None, mode="fused")
    with pytest.raises(ValueError, match="shape"):
        LearnedAggregation(fine, coarse, down, mode="fused")
    agg = LearnedAggregation(coarse, fine, down, mode="attention", top_k=100)
    assert agg.top_k == 0  # k >= number of keys: no selection
    with pytest.raises(ValueError, match="expects"):
        agg(torch.randn(2, 12, 3))


def test_moves_with_module_and_state_dict(levels):
    fine, coarse, down, _ = levels
    torch.set_default_dtype(torch.float32)
    agg = LearnedAggregation(coarse, fine, down, mode="fused", top_k=8)
    assert agg.qem.values.dtype == torch.float32
    agg.double()
    assert agg.keys.dtype == agg.qem.values.dtype == torch.float64
    assert all(t.layout == torch.strided for t in agg.state_dict().values())
    assert "pattern_perm" not in agg.state_dict()  # derived buffers are rebuilt, not saved
    clone = LearnedAggregation(coarse, fine, down, mode="fused", top_k=8).double()
    clone.load_state_dict(agg.state_dict())
    x = torch.randn(2, 42, 3, dtype=torch.float64)
    torch.testing.assert_close(clone(x), agg(x), rtol=0, atol=0)
