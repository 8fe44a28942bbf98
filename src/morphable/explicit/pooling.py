"""Deep3DMM learned feature aggregation: attention down/up-sampling between hierarchy levels.

One :class:`LearnedAggregation` per hierarchy transition maps features of ``V_k`` key vertices to
``V_q`` query vertices: down-sampling (encoder) has keys = fine level, queries = coarse level;
up-sampling (decoder) the reverse. Keys ``K: (V_k, c)`` and queries ``Q: (V_q, c)`` are learned
vectors (``c = 21``) initialised from the template's vertex positions at each level. The mapping
matrix (Chen & Kim, "Learning Feature Aggregation for Deep 3D Morphable Models", and its released
code, which this follows where the paper is silent):

    S[q, j]  = max(cos(Q_q, K_j), 1e-25)              cosine score, negatives clamped to ~0
    A[q, :]  = top-k entries of S[q, :], zero elsewhere  (k = 8 encoder, 32 decoder; 0 = all)
    A[q, :] /= sum_j A[q, j]                            kept values L1-normalised to sum 1
    M        = (w0 M_qem + w1 A) / (w0 + w1)            mode "fused", (w0, w1) learned, init (0.8, 0.2)

Mode ``attention`` uses ``M = A`` (no fusing), mode ``qem`` ``M = M_qem``. The normalisation is the
released code's (an L1 normalisation of the clamped top-k scores, no softmax): the supplement only
says the kept values are normalised. ``M`` does not depend on the input: each forward computes it
once, sparsely (top-k found without autograd on the dense score matrix in row blocks, the kept
scores recomputed with gradients from ``k`` gathered keys per query), and applies it with one CSR
product whose backward gives gradients to its values (sampled dense-dense product) and to the
input (``M^T`` product). :meth:`LearnedAggregation.freeze` returns the trained ``M`` as a fixed
:class:`~morphable.explicit.layers.Pool`, so inference costs what QEM pooling costs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from morphable.explicit.layers import (Pool, SparseMatrix, batch_view, csr_tensor, sparse_matmul, sparse_mm,
                                       transpose_csr, vertex_major)

MODES = ("qem", "attention", "fused")
SCORE_MIN = 1e-25
_BLOCK_ELEMENTS = 1 << 22  # dense score rows evaluated at a time during top-k selection


class _SparseValuesMatmul(torch.autograd.Function):
    """``Y = A X`` for a CSR ``A`` (``crow``, ``col`` fixed for the call) with differentiable ``values``.

    ``dX = A^T dY`` (``A^T`` by a stable sort of ``col``), ``dvalues[e] = dY[row_e] . X[col_e]``
    (``torch.sparse.sampled_addmm``, only at the nonzeros).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
                n_cols: int) -> torch.Tensor:
        ctx.save_for_backward(x, values, crow, col)
        ctx.n_cols = n_cols
        return sparse_mm(csr_tensor(crow, col, values, (crow.numel() - 1, n_cols)), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, values, crow, col = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            crow_t, col_t, values_t = transpose_csr(crow, col, values, ctx.n_cols)
            grad_x = sparse_mm(csr_tensor(crow_t, col_t, values_t, (ctx.n_cols, crow.numel() - 1)), grad)
        if ctx.needs_input_grad[1]:
            pattern = csr_tensor(crow, col, torch.zeros_like(values), (crow.numel() - 1, ctx.n_cols))
            grad_values = torch.sparse.sampled_addmm(pattern, grad, x.t(), beta=0).values()
        return grad_x, grad_values, None, None, None


def _normalised_positions(positions: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, dim: int,
                          noise: float) -> torch.Tensor:
    """``0.1 (p - center) / scale`` zero-padded (or cut) to ``dim`` columns, plus ``noise * U[0, 1)``."""
    p = 0.1 * (positions - center) / scale
    if p.shape[1] >= dim:
        p = p[:, :dim]
    else:
        p = torch.cat([p, p.new_zeros(p.shape[0], dim - p.shape[1])], dim=1)
    return p + noise * torch.rand_like(p)


def _positions(a, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float64) if not isinstance(a, torch.Tensor) else a).double().cpu()
    if t.dim() != 2 or t.shape[0] == 0 or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a finite non-empty (N, D) array, got shape {tuple(t.shape)}")
    return t


class LearnedAggregation(nn.Module):
    """Deep3DMM attention aggregation ``x: (B, V_k, C)`` -> ``(B, V_q, C)`` (see the module docstring).

    Args:
        query_positions: ``(V_q, 3)`` template vertices of the output level.
        key_positions: ``(V_k, 3)`` template vertices of the input level.
        qem_matrix: the QEM matrix ``(V_q, V_k)`` of this transition (``D`` or ``U``); required for
            modes ``qem`` and ``fused``.
        mode: ``qem``, ``attention`` or ``fused``.
        dim: channels ``c`` of keys and queries (21 in the reference).
        top_k: nonzeros kept per query row; ``0`` (or ``>= V_k``) switches top-k selection off.
        fusion_init: initial ``(w0, w1)`` (weights of QEM and attention).
        reference_positions: vertices whose per-axis mean and std normalise the positions (the
            reference uses the full-resolution template for every level); default: the finer of the
            two levels.
        noise: amplitude of the uniform noise added at initialisation (reference: 0.1).
    """

    def __init__(self, query_positions, key_positions, qem_matrix=None, mode: str = "fused", dim: int = 21,
                 top_k: int = 8, fusion_init: tuple[float, float] = (0.8, 0.2), reference_positions=None,
                 noise: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {MODES}")
        if dim < 1 or top_k < 0:
            raise ValueError(f"dim must be >= 1 and top_k >= 0, got dim={dim}, top_k={top_k}")
        queries = _positions(query_positions, "query_positions")
        keys = _positions(key_positions, "key_positions")
        self.mode = mode
        self.n_queries, self.n_keys = queries.shape[0], keys.shape[0]
        self.dim = dim
        self.top_k = top_k if 0 < top_k < self.n_keys else 0
        if mode != "attention":
            if qem_matrix is None:
                raise ValueError(f"mode {mode!r} needs the QEM matrix")
            self.qem = SparseMatrix(qem_matrix, transpose=True)
            if self.qem.shape != (self.n_queries, self.n_keys):
                raise ValueError(f"QEM matrix has shape {self.qem.shape}, expected "
                                 f"({self.n_queries}, {self.n_keys}) (queries, keys)")
        if mode == "qem":
            return
        ref = keys if self.n_keys >= self.n_queries else queries
        if reference_positions is not None:
            ref = _positions(reference_positions, "reference_positions")
        center, scale = ref.mean(0), ref.std(0, correction=0).clamp_min(1e-12)
        if not (queries.shape[1] == keys.shape[1] == ref.shape[1]):
            raise ValueError("query, key and reference positions must have the same number of columns")
        dtype = torch.get_default_dtype()
        self.queries = nn.Parameter(_normalised_positions(queries, center, scale, dim, noise).to(dtype))
        self.keys = nn.Parameter(_normalised_positions(keys, center, scale, dim, noise).to(dtype))
        if mode == "fused":
            self.fusion = nn.Parameter(torch.tensor([float(fusion_init[0]), float(fusion_init[1])]))
        if self.top_k:
            self._init_pattern()

    def _init_pattern(self) -> None:
        """Row structure of the CSR matrix that ``forward`` fills: fixed, only columns change.

        Attention rows hold ``k`` entries each; in mode ``fused`` the QEM entries of each row come
        first (``perm`` orders the concatenation ``[qem entries, attention entries]`` by row).
        """
        n_att = self.n_queries * self.top_k
        att_rows = torch.arange(self.n_queries).repeat_interleave(self.top_k)
        counts = torch.full((self.n_queries,), self.top_k, dtype=torch.int64)
        if self.mode == "fused":
            qem_counts = (self.qem.crow[1:] - self.qem.crow[:-1]).long()
            qem_rows = torch.arange(self.n_queries).repeat_interleave(qem_counts)
            perm = torch.argsort(torch.cat([qem_rows, att_rows]), stable=True)
            counts = counts + qem_counts
        else:
            perm = torch.arange(n_att)
        crow = torch.zeros(self.n_queries + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=crow[1:])
        itype = self.qem.col.dtype if self.mode == "fused" else torch.int32
        self.register_buffer("pattern_crow", crow.to(itype), persistent=False)
        self.register_buffer("pattern_perm", perm, persistent=False)

    def fusion_coefficients(self) -> torch.Tensor:
        """``(w0, w1) / (w0 + w1)`` (denominator guarded against 0 like the reference)."""
        total = self.fusion.sum()
        total = torch.where(total.abs() > 1e-12, total, torch.full_like(total, 1e-12))
        return self.fusion / total

    def _unit_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.queries, dim=1), F.normalize(self.keys, dim=1)

    def attention_topk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k attention: ``(index (V_q, k) int64, weights (V_q, k))``, rows of weights sum to 1.

        The indices are chosen without autograd on the dense cosine scores, ``_BLOCK_ELEMENTS`` at
        a time; the weights are recomputed with gradients from the ``k`` selected keys per query.
        """
        q, k = self._unit_vectors()
        with torch.no_grad():
            kd = k.detach()
            step = max(1, _BLOCK_ELEMENTS // self.n_keys)
            index = torch.cat([torch.topk(q[s:s + step].detach() @ kd.t(), self.top_k, dim=1, sorted=False)[1]
                               for s in range(0, self.n_queries, step)])
        scores = torch.einsum("qc,qkc->qk", q, k[index]).clamp_min(SCORE_MIN)
        return index, scores / scores.sum(dim=1, keepdim=True)

    def attention_dense(self) -> torch.Tensor:
        """Attention matrix ``(V_q, V_k)`` without top-k selection: clamped cosines, rows sum to 1."""
        q, k = self._unit_vectors()
        scores = (q @ k.t()).clamp_min(SCORE_MIN)
        return scores / scores.sum(dim=1, keepdim=True)

    def _sparse_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns and values (with gradients) of ``M`` on the CSR pattern of :meth:`_init_pattern`."""
        index, weights = self.attention_topk()
        col, values = index.reshape(-1), weights.reshape(-1)
        if self.mode == "fused":
            c = self.fusion_coefficients()
            col = torch.cat([self.qem.col.long(), col])[self.pattern_perm]
            values = torch.cat([c[0] * self.qem.values, c[1] * values])[self.pattern_perm]
        return col.to(self.pattern_crow.dtype), values

    def dense_matrix(self) -> torch.Tensor:
        """The current mapping matrix ``M: (V_q, V_k)`` as a dense tensor (with gradients)."""
        if self.mode == "qem":
            return self.qem.tensor().to_dense()
        if self.top_k:
            col, values = self._sparse_parts()
            rows = torch.repeat_interleave(torch.arange(self.n_queries, device=values.device),
                                           (self.pattern_crow[1:] - self.pattern_crow[:-1]).long())
            dense = values.new_zeros(self.n_queries, self.n_keys)
            return dense.index_put((rows, col.long()), values, accumulate=True)
        att = self.attention_dense()
        if self.mode == "attention":
            return att
        c = self.fusion_coefficients()
        return c[0] * self.qem.tensor().to_dense() + c[1] * att

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V_k, C)`` -> ``(B, V_q, C)`` (a view of vertex-major storage)."""
        if x.dim() != 3 or x.shape[1] != self.n_keys:
            raise ValueError(f"LearnedAggregation expects (B, {self.n_keys}, C), got {tuple(x.shape)}")
        batch = x.shape[0]
        xv = vertex_major(x)
        if self.mode == "qem":
            return batch_view(sparse_matmul(self.qem.tensor(), xv, self.qem.transposed()), batch)
        if self.top_k:
            col, values = self._sparse_parts()
            y = _SparseValuesMatmul.apply(xv, values, self.pattern_crow, col, self.n_keys)
            return batch_view(y, batch)
        y = self.attention_dense() @ xv
        if self.mode == "fused":
            c = self.fusion_coefficients()
            y = c[0] * sparse_matmul(self.qem.tensor(), xv, self.qem.transposed()) + c[1] * y
        return batch_view(y, batch)

    @torch.no_grad()
    def frozen_matrix(self) -> sp.csr_matrix:
        """The current ``M`` as a float64 scipy CSR matrix (duplicates summed)."""
        if self.mode == "qem":
            return self.qem.to_scipy()
        if self.top_k:
            col, values = self._sparse_parts()
            return sp.csr_matrix((values.double().cpu().numpy(), col.cpu().numpy(), self.pattern_crow.cpu().numpy()),
                                 shape=(self.n_queries, self.n_keys))
        return sp.csr_matrix(self.dense_matrix().double().cpu().numpy())

    def freeze(self) -> Pool:
        """A fixed :class:`Pool` with the trained ``M`` (on this module's device and dtype)."""
        ref = next(iter(self.parameters()), None)
        if ref is None:
            ref = self.qem.values
        return Pool(self.frozen_matrix(), dtype=ref.dtype).to(ref.device)

    def extra_repr(self) -> str:
        return f"{self.n_keys} -> {self.n_queries}, mode={self.mode}, dim={self.dim}, top_k={self.top_k}"


def freeze_learned_aggregations(network: nn.Module) -> int:
    """Replace every :class:`LearnedAggregation` inside ``network`` by the fixed sparse :class:`Pool` of its
    trained matrix (inference then costs what QEM pooling costs); returns how many were replaced."""
    frozen = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LearnedAggregation):
                setattr(parent, name, child.freeze())
                frozen += 1
    return frozen
