"""Ground-truth detail maps of synthetic photos (HRN supplement sec. 3.1, on data whose coarse fit is exact).

HRN makes its supervision by fitting: a coarse fit of the photo, a 7-landmark Procrustes alignment and rigid
ICP of the ground-truth mesh to it, then the two maps optimised with the coefficients frozen, eyes and nostrils
masked. On ``morphable data photos --detail`` sets the first two steps are exact and need no fitting: the
stored coefficients *are* the coarse fit (the photo was rendered from them) and the ground-truth mesh shares
the model's topology and frame, so it is aligned by construction. What remains is the third step:

* **mid** (per identity, model frame): the deformation map ``M (3, h, h)`` minimising

      sum_v || w_v M(uv_v) - d_v ||^2 + lambda_tv h^2 TV(M)

  over the tile's vertices (``d_v``: the identity's mid-band displacement, ``w_v`` the tile's fade, a seam
  vertex the mean over its UVs: :meth:`FaceTile.deform`), solved by L-BFGS (the problem is linear
  least squares; the TV term, :func:`~morphable.image.hrn_losses.total_variation` scaled to be
  resolution-free, fills texels no vertex constrains). A photo's map is ``R M`` with ``R`` its rotation in the
  crop camera (the maps are camera-frame offsets; a rotation commutes with the bilinear sampling).
* **high** (per identity): the generator's displacement map is defined on the same chart, so its face tile
  (``u < 1/2`` of the albedo chart) box-filtered to ``H x H`` is the target exactly.

Masks: both maps count only texels a tile face covers (:meth:`~morphable.image.hrn.HRNGeometry.texel_mask`);
eyes, mouth socket and nostril insides have no tile faces (they are not skin), so they are masked as the
paper masks them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from morphable.errors import MorphableError, input_error
from morphable.image.detail_maps import FaceTile

MID_TV_WEIGHT = 1e-4


def bilinear_operator(tile: FaceTile, size: int):
    """The sparse ``(V, size^2)`` matrix ``A`` of the linear map ``M -> w M(uv)`` of :meth:`FaceTile.deform` on
    one channel (texels row-major): per ``(vertex, uv)`` pair the four bilinear weights of
    :func:`~morphable.render.shading.sample_texture` (``align_corners=False``, border clamping), times ``w_v``
    over the vertex's number of UVs."""
    from scipy import sparse

    from morphable.render.shading import vertex_uv_pairs

    pairs = vertex_uv_pairs(tile.faces, tile.face_uvs).numpy()
    uv = tile.uvs[pairs[:, 1]]
    x = np.clip(uv[:, 0] * size - 0.5, 0, size - 1)
    y = np.clip((1 - uv[:, 1]) * size - 0.5, 0, size - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), size - 2), np.minimum(np.floor(y).astype(int), size - 2)
    fx, fy = x - x0, y - y0
    count = np.bincount(pairs[:, 0], minlength=tile.n_vertices)
    scale = tile.weights[pairs[:, 0]] / count[pairs[:, 0]]
    rows, cols, vals = [], [], []
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        rows.append(pairs[:, 0])
        cols.append((y0 + dy) * size + x0 + dx)
        vals.append(w * scale)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(tile.n_vertices, size * size))


def _difference_operators(size: int):
    """Forward differences along columns and rows of a row-major ``size x size`` grid: ``(D_x, D_y)``."""
    from scipy import sparse

    d = sparse.diags([-np.ones(size - 1), np.ones(size - 1)], [0, 1], shape=(size - 1, size))
    eye = sparse.identity(size)
    return sparse.kron(eye, d), sparse.kron(d, eye)


class MidMapSolver:
    """The module docstring's least-squares mid map, solved exactly: with ``A`` the
    :func:`bilinear_operator` restricted to the ``n`` vertices of weight ``w > 0`` and the TV term
    ``mean (D_x m)^2 + mean (D_y m)^2`` (:func:`~morphable.image.hrn_losses.total_variation` on one channel;
    over 3 channels its means divide by 3 more, and the data term's sum over xyz matches),
    the normal equations

        (A^T A / n + lambda s^2 (D_x^T D_x / |D_x| + D_y^T D_y / |D_y|) / 3) m_c = A^T d_c / n

    share one matrix for the three channels and every identity: it is factorised once (sparse LU)."""

    def __init__(self, tile: FaceTile, size: int, tv_weight: float = MID_TV_WEIGHT) -> None:
        from scipy.sparse.linalg import splu

        self.tile, self.size = tile, size
        self.keep = tile.weights > 0
        A = bilinear_operator(tile, size)[self.keep]
        Dx, Dy = _difference_operators(size)
        n = int(self.keep.sum())
        normal = (A.T @ A) / n + (tv_weight * size ** 2 / 3) * ((Dx.T @ Dx) / Dx.shape[0] + (Dy.T @ Dy) / Dy.shape[0])
        self.A, self.n, self.lu = A, n, splu(normal.tocsc())

    def solve(self, displacement: np.ndarray) -> tuple[np.ndarray, float]:
        """``displacement (V, 3)`` -> ``((3, s, s) float32 map, RMS residual over the kept vertices)``, model units."""
        d = np.asarray(displacement, dtype=np.float64)
        if d.shape != (self.tile.n_vertices, 3):
            raise MorphableError(f"a mid-band displacement must be ({self.tile.n_vertices}, 3), got {d.shape}")
        rhs = self.A.T @ d[self.keep] / self.n
        m = self.lu.solve(rhs)  # (s^2, 3)
        residual = self.A @ m - d[self.keep]
        rms = float(np.sqrt((residual ** 2).sum(1).mean()))
        return m.T.reshape(3, self.size, self.size).astype(np.float32), rms


def high_target(high: np.ndarray, size: int) -> np.ndarray:
    """The face tile of a generator displacement map ``(H_t, W_t)`` (``W_t = 2 H_t``: two UDIM tiles, the face
    on the left) box-filtered to ``(1, size, size)`` float32."""
    H, W = high.shape
    if W != 2 * H or H % size:
        raise MorphableError(f"a {H} x {W} displacement map has no face tile that filters to {size} x {size}")
    f = H // size
    return high[:, :H].reshape(size, f, size, f).mean(axis=(1, 3))[None].astype(np.float32)


class DetailTargets:
    """Per-identity model-frame target maps of a photo dataset with detail (computed once, cached).

    ``mid(j) (3, h, h)``, ``high(j) (1, H, H)``; ``residual_mm`` the mid fits' RMS residuals so far."""

    def __init__(self, root: str | Path, tile: FaceTile, mid_size: int, high_size: int, cm: float) -> None:
        self.root, self.tile, self.mid_size, self.high_size, self.cm = Path(root), tile, mid_size, high_size, cm
        self._solver: MidMapSolver | None = None
        self._mid: dict[int, np.ndarray] = {}
        self._high: dict[int, np.ndarray] = {}
        self.residual_mm: dict[int, float] = {}

    def _read(self, identity: int, band: str) -> np.ndarray:
        path = self.root / "detail" / f"{identity:04d}_{band}.npy"
        if not path.is_file():
            raise input_error(path, "missing: HRN's supervised iterations need a dataset made with "
                                    "`morphable data photos --detail MID HIGH`")
        array = np.load(path, allow_pickle=False)
        if not np.isfinite(array).all():
            raise input_error(path, "holds NaN or infinite values")
        return array

    def mid(self, identity: int) -> np.ndarray:
        if identity not in self._mid:
            if self._solver is None:
                self._solver = MidMapSolver(self.tile, self.mid_size)
            self._mid[identity], rms = self._solver.solve(self._read(identity, "mid"))
            self.residual_mm[identity] = rms * 10.0 / self.cm
        return self._mid[identity]

    def high(self, identity: int) -> np.ndarray:
        if identity not in self._high:
            self._high[identity] = high_target(self._read(identity, "high"), self.high_size)
        return self._high[identity]
