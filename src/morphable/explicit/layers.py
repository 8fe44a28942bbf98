"""Mesh layers on ``(B, V, C)`` tensors: Chebyshev convolution, spiral convolution, sparse pooling.

The topology (scaled Laplacian, spiral indices, pooling matrices) is stored in the modules as plain
dense buffers, so it moves with ``.to()``, converts with ``.double()`` and is saved by safetensors
(which cannot hold sparse tensors). Sparse matrices are kept as CSR arrays in a :class:`SparseMatrix`
sub-module and wrapped into a ``torch.sparse_csr`` tensor at each call (no copy).

Layout. The sparse products act on the vertex axis, so the layers work on the *vertex-major*
matrix ``X[v, b*C + c] = x[b, v, c]`` of shape ``(V, B*C)``: one CSR product covers the whole batch.
Outputs are returned as ``(B, V, C)`` *views* of vertex-major storage, so a chain of these layers
(with element-wise activations in between) never transposes; only a batch-major input (the mesh
batch itself) is copied once into vertex-major order. Call ``.contiguous()`` on an output when a
batch-major tensor is needed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

#: Channel counts below this are "narrow": MKL runs GEMMs with so few inner or output channels several
#: times below its rate (``(N, 3) x (3, 32)``: a fifth of ``(N, 27) x (27, 32)``), so a layer with a narrow
#: side stacks its ``K`` Chebyshev terms or ``L`` spiral positions into one GEMM.
NARROW = 8


def _csr_parts(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """``matrix`` (scipy sparse, torch sparse COO/CSR/CSC or dense, numpy) -> canonical CSR arrays.

    Duplicates are summed, explicit zeros dropped (e.g. the zero diagonal of ``L - I``) and column
    indices sorted within rows.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu()
        if matrix.layout != torch.strided:
            matrix = matrix.to_sparse_coo().coalesce()
            rows, cols = matrix.indices().numpy()
            matrix = sp.coo_matrix((matrix.values().numpy(), (rows, cols)), shape=tuple(matrix.shape))
        else:
            matrix = matrix.numpy()
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {matrix.shape}")
        matrix = sp.csr_matrix(matrix)
    csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    if not np.all(np.isfinite(csr.data)):
        raise ValueError("sparse matrix has non-finite values")
    return csr.indptr, csr.indices, csr.data, csr.shape


def _index_dtype(nnz: int) -> torch.dtype:
    """int32 indices (what MKL / cuSPARSE use without a conversion copy) unless they would overflow."""
    return torch.int32 if nnz < 2**31 - 1 else torch.int64


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Wrap CSR arrays into a ``torch.sparse_csr`` tensor without copying or validating them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def transpose_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n_cols: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR arrays of ``A^T`` from those of ``A`` (``(n_rows, n_cols)``), on ``A``'s device.

    A stable sort of the column indices: row indices stay sorted within each row of ``A^T``.
    """
    n_rows = crow.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n_rows, device=col.device, dtype=col.dtype),
                                   (crow[1:] - crow[:-1]).long())
    order = torch.argsort(col, stable=True)
    counts = torch.bincount(col.long(), minlength=n_cols)
    crow_t = torch.zeros(n_cols + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(counts, 0, out=crow_t[1:])
    return crow_t, rows[order], values[order]


def sparse_mm(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ x`` for a sparse CSR ``(M, N)`` matrix and a dense ``(N, P)`` matrix.

    Writes straight into a fresh output through ``addmm(..., beta=0, out=)``: ``matrix @ x`` would
    zero-fill a temporary and copy it (measured 2.2x slower on CPU).
    """
    out = torch.empty((matrix.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    return torch.addmm(out, matrix, x, beta=0, out=out)


class SparseMatrix(nn.Module):
    """A fixed sparse ``(M, N)`` matrix held as three CSR buffers (``crow``, ``col``, ``values``).

    ``values`` follow the module's float dtype (``.double()``, ``.to(torch.float64)``), the integer
    index buffers only its device. With ``transpose=True`` the CSR arrays of ``A^T`` are kept too
    (as non-persistent buffers: they are derived, not saved), for the backward pass of ``A @ x``.
    ``dtype``: initial dtype of ``values`` (default: ``torch.get_default_dtype()``, like parameters).
    """

    def __init__(self, matrix, transpose: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        indptr, indices, data, shape = _csr_parts(matrix)
        itype = _index_dtype(len(data))
        self.shape = (int(shape[0]), int(shape[1]))
        self.register_buffer("crow", torch.from_numpy(indptr.astype(np.int64)).to(itype))
        self.register_buffer("col", torch.from_numpy(indices.astype(np.int64)).to(itype))
        self.register_buffer("values", torch.from_numpy(data).to(dtype or torch.get_default_dtype()))
        self.has_transpose = transpose
        if transpose:
            crow_t, col_t, values_t = transpose_csr(self.crow, self.col, self.values, self.shape[1])
            self.register_buffer("crow_t", crow_t, persistent=False)
            self.register_buffer("col_t", col_t, persistent=False)
            self.register_buffer("values_t", values_t, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.has_transpose:  # keep A^T in step with freshly loaded values
            crow_t, col_t, values_t = transpose_csr(self.crow, self.col, self.values, self.shape[1])
            self.crow_t, self.col_t, self.values_t = crow_t, col_t, values_t

    def tensor(self) -> torch.Tensor:
        """The matrix as a ``torch.sparse_csr`` tensor (a view of the buffers)."""
        return csr_tensor(self.crow, self.col, self.values, self.shape)

    def transposed(self) -> torch.Tensor:
        """``A^T`` as a ``torch.sparse_csr`` tensor (requires ``transpose=True``)."""
        return csr_tensor(self.crow_t, self.col_t, self.values_t, (self.shape[1], self.shape[0]))

    def to_scipy(self) -> sp.csr_matrix:
        """A float64 scipy CSR copy of the matrix."""
        return sp.csr_matrix((self.values.detach().double().cpu().numpy(), self.col.cpu().numpy(),
                              self.crow.cpu().numpy()), shape=self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, nnz={self.col.numel()}"


def vertex_major(x: torch.Tensor) -> torch.Tensor:
    """``x: (B, V, C)`` -> ``X: (V, B*C)`` with ``X[v, b*C + c] = x[b, v, c]``.

    Free (a view) when ``x`` is a view of vertex-major storage, e.g. the output of a layer of
    this module; one copy otherwise.
    """
    b, v, c = x.shape
    return x.transpose(0, 1).reshape(v, b * c).contiguous()


def batch_view(y: torch.Tensor, batch: int) -> torch.Tensor:
    """``Y: (V, B*C)`` -> ``y: (B, V, C)`` as a view (inverse of :func:`vertex_major`)."""
    return y.view(y.shape[0], batch, -1).transpose(0, 1)


class _SparseMatmul(torch.autograd.Function):
    """``Y = A X`` for a fixed sparse ``A``: backward ``dX = A^T dY`` (``A^T`` given, = ``A`` if symmetric)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return sparse_mm(matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return sparse_mm(ctx.matrix_t, grad.contiguous()), None, None


def sparse_matmul(matrix: torch.Tensor, x: torch.Tensor, matrix_t: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable ``matrix @ x`` (``x: (N, P)``) for a constant sparse CSR ``matrix`` ``(M, N)``.

    ``matrix_t`` is ``matrix^T`` in CSR; leave it out when ``matrix`` is symmetric (the backward of
    ``L x`` is then ``L dY``).
    """
    return _SparseMatmul.apply(x.contiguous(), matrix, matrix if matrix_t is None else matrix_t)


def _chebyshev_basis(laplacian: torch.Tensor, x: torch.Tensor, k: int, reuse: bool) -> Iterator[torch.Tensor]:
    """Yield ``T_0(L) X, ..., T_{k-1}(L) X``: ``T_0 = X``, ``T_1 = L X``, ``T_j = 2 L T_{j-1} - T_{j-2}``.

    ``x: (V, N)`` contiguous; each step is one fused CSR ``addmm`` (``beta=-1, alpha=2``). With
    ``reuse`` the step ``j >= 3`` overwrites the storage of ``T_{j-2}`` in place (only three buffers
    are ever allocated): the consumer must be done with a yielded tensor two steps later.
    """
    yield x
    if k < 2:
        return
    prev2, prev1 = x, sparse_mm(laplacian, x)
    yield prev1
    for j in range(2, k):
        if reuse and j >= 3:
            cur = prev2.addmm_(laplacian, prev1, beta=-1, alpha=2)
        else:
            cur = torch.addmm(prev2, laplacian, prev1, beta=-1, alpha=2)
        yield cur
        prev2, prev1 = prev1, cur


def _clenshaw(laplacian: torch.Tensor, left: torch.Tensor, rights: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """``sum_j T_j(L) (left @ rights[j])`` by Clenshaw's recurrence, with ``left: (V*B, c)``.

    ``b_j = H_j + 2 L b_{j+1} - b_{j+2}`` (``H_j = left @ rights[j]``, ``b_K = b_{K+1} = 0``), result
    ``H_0 + L b_1 - b_2``. Each step is one in-place GEMM (``b_{j+2} <- H_j - b_{j+2}``) and one
    in-place CSR ``addmm``, so only two ``(V, B*c')`` buffers are allocated. With a narrow output
    (``c' < NARROW``) all ``H_j`` come from one GEMM ``left @ [rights[0] ... rights[K-1]]`` first.
    Returns ``(V*B, c')``.
    """
    k, _, width = rights.shape
    stacked = None
    if width < NARROW:
        stacked = (left @ rights.permute(1, 0, 2).reshape(-1, k * width)).view(-1, k, width)
    b1 = b2 = None
    for j in range(k - 1, -1, -1):
        if stacked is not None:
            acc = stacked[:, j].contiguous() if b2 is None else b2.neg_().add_(stacked[:, j])
        else:
            acc = left @ rights[j] if b2 is None else b2.addmm_(left, rights[j], beta=-1)
        if b1 is not None:
            acc.view(n_vertices, -1).addmm_(laplacian, b1.view(n_vertices, -1), alpha=2 if j else 1)
        b1, b2 = acc, b1
    return b1


def _mix(basis: Iterable[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
         channels: int) -> torch.Tensor:
    """``bias + sum_j basis[j].view(-1, channels) @ weight[j]`` as accumulating GEMMs: ``(V*B, C')``.

    Accumulating K GEMMs in place was measured as fast as one GEMM over the concatenated basis,
    and avoids the copy that concatenation costs (3x the GEMM itself at V=5023, B=32, C=16, K=6).
    (Narrow bases are stacked instead: :func:`_stack`.)
    """
    out = None
    for t, w in zip(basis, weight):
        t = t.view(-1, channels)
        if out is None:
            out = torch.addmm(bias, t, w) if bias is not None else t @ w
        else:
            out.addmm_(t, w)
    return out


def _stack(terms: Iterable[torch.Tensor], k: int, channels: int) -> torch.Tensor:
    """``[t_0 | ... | t_{k-1}]`` as one ``(V*B, k*channels)`` matrix from ``k`` tensors of ``V*B*channels``
    values (each copied as it comes, so streamed terms may be overwritten afterwards)."""
    out = None
    for j, t in enumerate(terms):
        t = t.reshape(-1, channels)
        if out is None:
            out = t.new_empty(t.shape[0], k, channels)
        out[:, j] = t
    return out.view(-1, k * channels)


class _ChebyshevConv(torch.autograd.Function):
    """``Y = sum_k T_k(L) X W_k + b`` on vertex-major ``X: (V, B*C_in)`` -> ``Y: (V*B, C_out)``.

    ``L`` symmetric, so every ``T_k(L)`` is symmetric. Two equivalent forms; the sparse products run
    in the narrower width and few fresh buffers are allocated (fresh large buffers cost page faults
    that were measured to dominate the layer):

    * ``C_in < C_out`` (basis form): forward builds ``T_k(L) X`` (saved, ``C_in`` wide) and mixes it
      with ``K`` accumulating GEMMs; backward ``dW_k = (T_k X)^T dY`` and ``dX = sum_k T_k (dY W_k^T)``
      by Clenshaw.
    * ``C_in >= C_out`` (Clenshaw form): forward ``sum_k T_k (X W_k)`` by Clenshaw (only ``X`` saved);
      backward streams ``S_k = T_k dY`` with ``dW_k = X^T S_k`` and ``dX = sum_k S_k W_k^T``.

    When the narrower side has fewer than :data:`NARROW` channels, its ``K`` terms (``T_k X``, ``S_k``,
    or ``X W_k``) are stacked into one ``(V*B, K*c)`` matrix (small: ``c`` is narrow) and the ``K``
    GEMMs become one, which MKL runs several times faster.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                laplacian: torch.Tensor) -> torch.Tensor:
        k, c_in, c_out = weight.shape
        ctx.laplacian = laplacian
        ctx.basis_form = c_in < c_out
        if ctx.basis_form and c_in < NARROW:
            stacked = _stack(_chebyshev_basis(laplacian, x, k, reuse=True), k, c_in)
            ctx.save_for_backward(x, weight, stacked)
            w = weight.reshape(k * c_in, c_out)
            return torch.addmm(bias, stacked, w) if bias is not None else stacked @ w
        if ctx.basis_form:
            basis = list(_chebyshev_basis(laplacian, x, k, reuse=False))
            ctx.save_for_backward(x, weight, *basis[1:])
            return _mix(basis, weight, bias, c_in)
        ctx.save_for_backward(x, weight)
        out = _clenshaw(laplacian, x.view(-1, c_in), weight, x.shape[0])
        if bias is not None:
            out.add_(bias)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, *higher = ctx.saved_tensors
        k, c_in, c_out = weight.shape
        n_vertices = x.shape[0]
        lap = ctx.laplacian
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if ctx.basis_form:
            if need_w and c_in < NARROW:
                grad_w = (higher[0].t() @ grad).view(k, c_in, c_out)
            elif need_w:
                grad_w = torch.stack([t.view(-1, c_in).t() @ grad for t in (x, *higher)])
            if need_x:
                grad_x = _clenshaw(lap, grad, weight.transpose(1, 2), n_vertices).view(n_vertices, -1)
        elif (need_x or need_w) and c_out < NARROW:
            x_rows = x.view(-1, c_in)
            stacked = _stack(_chebyshev_basis(lap, grad.view(n_vertices, -1), k, reuse=True), k, c_out)
            if need_w:
                grad_w = (x_rows.t() @ stacked).view(c_in, k, c_out).permute(1, 0, 2)
            if need_x:
                grad_x = (stacked @ weight.permute(0, 2, 1).reshape(k * c_out, c_in)).view(n_vertices, -1)
        elif need_x or need_w:
            x_rows = x.view(-1, c_in).t()
            grad_w_terms = []
            weight_t = weight.transpose(1, 2)
            for j, s in enumerate(_chebyshev_basis(lap, grad.view(n_vertices, -1), k, reuse=True)):
                s = s.view(-1, c_out)
                if need_w:
                    grad_w_terms.append(x_rows @ s)
                if need_x:
                    grad_x = s @ weight_t[j] if grad_x is None else grad_x.addmm_(s, weight_t[j])
            grad_w = torch.stack(grad_w_terms) if need_w else None
            grad_x = grad_x.view(n_vertices, -1) if need_x else None
        if need_b:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def chebyshev_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   laplacian: torch.Tensor) -> torch.Tensor:
    """Functional Chebyshev convolution ``y = sum_k T_k(L) x W_k + b``.

    ``x: (B, V, C_in)``, ``weight: (K, C_in, C_out)``, ``bias: (C_out,)`` or None, ``laplacian``: a
    symmetric sparse CSR ``(V, V)`` tensor (the scaled Laplacian). Returns ``(B, V, C_out)`` (a view of
    vertex-major storage).
    """
    batch = x.shape[0]
    y = _ChebyshevConv.apply(vertex_major(x), weight, bias, laplacian)
    return y.view(x.shape[1], batch, -1).transpose(0, 1)


def _check_symmetric(parts: tuple, name: str) -> None:
    indptr, indices, data, shape = parts
    if shape[0] != shape[1]:
        raise ValueError(f"{name} must be square, got shape {shape}")
    a = sp.csr_matrix((data, indices, indptr), shape=shape)
    scale = max(float(np.abs(data).max(initial=0.0)), 1e-30)
    if abs(a - a.T).max() > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric (the backward pass uses L^T = L)")


class ChebConv(nn.Module):
    """Chebyshev spectral convolution (CoMA), ``x: (B, V, C_in)`` -> ``(B, V, C_out)``.

    ``y = sum_{k<K} T_k(L~) x W_k + b`` with ``T_0 = I``, ``T_1 = L~``, ``T_k = 2 L~ T_{k-1} - T_{k-2}`` and
    ``L~ = 2 L / lambda_max - I``; with the normalised Laplacian ``L = I - D^-1/2 A D^-1/2`` and
    ``lambda_max = 2`` this is ``L~ = -D^-1/2 A D^-1/2``. ``laplacian``: that symmetric ``(V, V)``
    matrix (scipy sparse or torch sparse/dense). ``K`` is the number of Chebyshev terms (CoMA: 6).
    Weights ``(K, C_in, C_out)`` Glorot-uniform over the fan-in ``K C_in``, bias zero, as in the reference.

    The whole layer is one autograd function: sparse products of the recursion on the vertex-major
    ``(V, B*C)`` matrix (one CSR product for the batch), ``K`` accumulating GEMMs, and an adjoint
    backward that uses ``L^T = L`` (see :class:`_ChebyshevConv`).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, laplacian, bias: bool = True):
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        parts = _csr_parts(laplacian)
        _check_symmetric(parts, "laplacian")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.laplacian = SparseMatrix(laplacian)
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot over the whole fan-in K*C_in (as the original CoMA): per-term Glorot made the output
        # variance grow about K-fold per layer and SGD at the paper's 8e-3 diverged in the first epoch.
        bound = math.sqrt(6.0 / (self.K * self.in_channels + self.out_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V, C_in)`` -> ``(B, V, C_out)``."""
        n = self.laplacian.shape[0]
        if x.dim() != 3 or x.shape[1] != n or x.shape[2] != self.in_channels:
            raise ValueError(f"ChebConv expects (B, {n}, {self.in_channels}), got {tuple(x.shape)}")
        return chebyshev_conv(x, self.weight, self.bias, self.laplacian.tensor())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, K={self.K}, vertices={self.laplacian.shape[0]}"


class _SpiralMix(torch.autograd.Function):
    """``Y = sum_l P_l X W_l + b`` on vertex-major matrices, one spiral position ``l`` at a time.

    ``X: (V', B*C_in)`` (row ``V`` is the zero dummy vertex when ``V' = V + 1``), ``W: (L, C_in, C_out)``,
    ``b: (C_out,)`` or ``None``, ``P_l`` the gather of spiral position ``l`` (``(P_l X)[v] = X[s_vl]``) -> ``Y: (V*B, C_out)``, rows
    ``(v, b)``. Each gather copies whole ``B*C_in`` rows, and each GEMM is ``(V*B, C_in) x (C_in, C_out)``.
    The ``(V*B, L*C_in)`` matrix of all gathered neighbours is never materialised.

    Backward: ``dX = sum_l P_l^T (dY W_l^T)``, an ``index_add`` of whole ``B*C_in`` rows per position.
    This is several times faster on CPU than the scatter of ``L*V*B`` rows of ``C_in`` floats that the
    backward of one big gather needs. ``dW_l = (P_l X)^T dY`` re-gathers ``P_l X`` instead of storing it.
    Position 0 is the vertex itself (``s_v0 = v``), so ``P_0 X`` is the view ``X[:V]``: no gather, no scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                indices: torch.Tensor) -> torch.Tensor:
        c_in = weight.shape[1]
        columns = indices.t().contiguous()  # (L, V): one gather index per position
        centre = x[:len(indices)].view(-1, c_in)
        y = centre @ weight[0] if bias is None else torch.addmm(bias, centre, weight[0])
        for l in range(1, len(columns)):
            y.addmm_(x.index_select(0, columns[l]).view(-1, c_in), weight[l])
        ctx.save_for_backward(x, weight, columns)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, columns = ctx.saved_tensors
        c_in = weight.shape[1]
        grad = grad.contiguous()
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        n = columns.shape[1]
        for l in range(len(columns)):
            if grad_w is not None:
                gathered = x[:n] if l == 0 else x.index_select(0, columns[l])
                torch.mm(gathered.view(-1, c_in).t(), grad, out=grad_w[l])
            if grad_x is not None:
                grad_rows = (grad @ weight[l].t()).view(n, -1)
                if l == 0:
                    grad_x[:n] += grad_rows
                else:
                    grad_x.index_add_(0, columns[l], grad_rows)
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class _SpiralGather(torch.autograd.Function):
    """``Y = G W + b`` with all neighbours gathered first, for a narrow input (``C_in < NARROW``).

    ``G: (V*B, L*C_in)``, ``G[(v, b), (l, c)] = X[s_vl, b*C_in + c]``, is built once (``L*C_in`` floats per
    vertex and sample, as small as the output when ``C_in`` is small) so that the layer is one GEMM with
    ``L*C_in`` inner channels instead of ``L`` GEMMs with ``C_in`` (MKL runs ``(N, 3) x (3, 32)`` at a fifth
    of the rate of ``(N, 27) x (27, 32)``). Same arguments and result as :class:`_SpiralMix`.
    Backward: ``dW = G^T dY`` (``G`` saved), ``dX = sum_l P_l^T dG_l`` with ``dG = dY W^T``, one
    ``index_add`` of ``V*L`` rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                indices: torch.Tensor) -> torch.Tensor:
        length, c_in, c_out = weight.shape
        n = len(indices)
        gathered = x.view(x.shape[0], -1, c_in)[indices].transpose(1, 2).reshape(-1, length * c_in)
        weight_cat = weight.reshape(length * c_in, c_out)
        ctx.save_for_backward(gathered, weight_cat, indices)
        ctx.n_rows = x.shape[0]
        ctx.shapes = n, length, c_in, c_out
        return gathered @ weight_cat if bias is None else torch.addmm(bias, gathered, weight_cat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gathered, weight_cat, indices = ctx.saved_tensors
        n, length, c_in, c_out = ctx.shapes
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            rows = (grad @ weight_cat.t()).view(n, -1, length, c_in).transpose(1, 2).reshape(n * length, -1)
            grad_x = rows.new_zeros(ctx.n_rows, rows.shape[1]).index_add_(0, indices.reshape(-1), rows)
        if ctx.needs_input_grad[1]:
            grad_w = (gathered.t() @ grad).view(length, c_in, c_out)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


class _SpiralTransform(torch.autograd.Function):
    """``Y[v] = sum_l Z_l[s_vl] + b`` with ``Z = X [W_0 ... W_{L-1}]`` transformed first, for a narrow
    output (``C_out < NARROW``).

    ``(P_l X) W_l = P_l (X W_l)``: one GEMM ``(V'*B, C_in) x (C_in, L*C_out)`` replaces ``L`` GEMMs with
    ``C_out`` output columns (MKL runs ``(N, 32) x (32, 3)`` at a fifth of the rate of ``(N, 32) x (32, 27)``),
    then one gather of the ``V*L`` rows ``Z_l[s_vl]`` (``B*C_out`` floats each) and a sum over ``l``. The
    dummy row of ``X`` is zero, so is its row of ``Z``. Same arguments and result as :class:`_SpiralMix`.
    Backward: ``dZ_l = P_l^T dY`` (one ``index_add``), ``dW = X^T dZ``, ``dX = dZ W^T``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                indices: torch.Tensor) -> torch.Tensor:
        length, c_in, c_out = weight.shape
        n, rows = len(indices), x.shape[0]
        weight_t = weight.permute(1, 0, 2).reshape(c_in, length * c_out)
        x_rows = x.view(-1, c_in)
        z = (x_rows @ weight_t).view(rows, -1, length, c_out).transpose(1, 2).reshape(rows * length, -1)
        flat = (indices * length + torch.arange(length, device=indices.device)).reshape(-1)
        y = z.index_select(0, flat).view(n, length, -1).sum(1).view(-1, c_out)
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(x_rows, weight_t, flat)
        ctx.shapes = n, rows, length, c_in, c_out
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x_rows, weight_t, flat = ctx.saved_tensors
        n, rows, length, c_in, c_out = ctx.shapes
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            spread = grad.view(n, 1, -1).expand(n, length, -1).reshape(n * length, -1)
            grad_z = spread.new_zeros(rows * length, spread.shape[1]).index_add_(0, flat, spread)
            grad_z = grad_z.view(rows, length, -1, c_out).transpose(1, 2).reshape(-1, length * c_out)
            if ctx.needs_input_grad[0]:
                grad_x = (grad_z @ weight_t.t()).view(rows, -1)
            if ctx.needs_input_grad[1]:
                grad_w = (x_rows.t() @ grad_z).view(c_in, length, c_out).permute(1, 0, 2)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def _spiral_kind(c_in: int, c_out: int) -> type[torch.autograd.Function]:
    """The spiral layer's algorithm for these widths: gather first (narrow input), transform first
    (narrow output), else one gather and GEMM per spiral position."""
    if c_in < NARROW and c_in <= c_out:
        return _SpiralGather
    if c_out < NARROW:
        return _SpiralTransform
    return _SpiralMix


class SpiralConv(nn.Module):
    """Spiral convolution (Neural3DMM / SpiralNet++), ``x: (B, V, C_in)`` -> ``(B, V, C_out)``.

    ``y[b, v] = W [x[b, s_v0], ..., x[b, s_v(L-1)]] + b`` with ``indices: (V, L)`` the spiral of each
    vertex (``s_v0 = v``). Index ``V`` is the dummy vertex, whose features are zero (padding of
    short spirals). ``W: (C_out, L*C_in)`` is stored as ``linear.weight`` (Glorot-uniform, bias zero)
    and applied as ``sum_l x[:, s_{.l}] W_l`` on the vertex-major ``(V, B*C_in)`` matrix
    (:class:`_SpiralMix`). The output is a batch-major view of vertex-major storage, so the next
    vertex-major layer (spiral, pooling) reads it without a copy.
    """

    def __init__(self, in_channels: int, out_channels: int, indices, bias: bool = True):
        super().__init__()
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(f"spiral indices must be an integer (V, L) array, got {tuple(idx.shape)} {idx.dtype}")
        idx = idx.to(torch.int64)
        n = idx.shape[0]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) > n):
            raise ValueError(f"spiral indices must lie in [0, {n}] ({n} = dummy vertex)")
        if idx.numel() and not torch.equal(idx[:, 0], torch.arange(n)):
            raise ValueError("every spiral must start at its own vertex (indices[v, 0] == v)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.n_vertices, self.length = n, idx.shape[1]
        self.has_dummy = bool((idx == n).any())
        self.register_buffer("indices", idx)
        self.linear = nn.Linear(in_channels * self.length, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V, C_in)`` -> ``(B, V, C_out)``."""
        if x.dim() != 3 or x.shape[1] != self.n_vertices or x.shape[2] != self.in_channels:
            raise ValueError(f"SpiralConv expects (B, {self.n_vertices}, {self.in_channels}), "
                             f"got {tuple(x.shape)}")
        batch = x.shape[0]
        src = vertex_major(x)
        if self.has_dummy:
            src = torch.cat([src, src.new_zeros(1, src.shape[1])])
        weight = self.linear.weight.view(self.out_channels, self.length, self.in_channels).permute(1, 2, 0)
        y = _spiral_kind(self.in_channels, self.out_channels).apply(src, weight, self.linear.bias, self.indices)
        return batch_view(y.view(self.n_vertices, -1), batch)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, vertices={self.n_vertices}, length={self.length}, "
                f"dummy={self.has_dummy}")


class Pool(nn.Module):
    """Fixed sparse pooling ``y[b] = M x[b]``: ``x: (B, V_in, C)`` -> ``(B, V_out, C)``.

    ``matrix``: ``M (V_out, V_in)`` (scipy sparse, torch sparse or dense): the QEM down-sampling
    selection ``D``, the barycentric up-sampling ``U``, or a frozen learned aggregation. One CSR
    product on the vertex-major ``(V_in, B*C)`` matrix; the backward uses the stored ``M^T``.
    ``dtype``: initial dtype of the stored values (default: the default dtype; ``.to()`` converts).
    """

    def __init__(self, matrix, dtype: torch.dtype | None = None):
        super().__init__()
        self.matrix = SparseMatrix(matrix, transpose=True, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V_in, C)`` -> ``(B, V_out, C)``."""
        v_out, v_in = self.matrix.shape
        if x.dim() != 3 or x.shape[1] != v_in:
            raise ValueError(f"Pool expects (B, {v_in}, C), got {tuple(x.shape)}")
        y = _SparseMatmul.apply(vertex_major(x), self.matrix.tensor(), self.matrix.transposed())
        return batch_view(y, x.shape[0])

    def extra_repr(self) -> str:
        return f"{self.matrix.shape[1]} -> {self.matrix.shape[0]}"
