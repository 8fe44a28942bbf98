"""Locally weighted autoencoder (Kim & Kim): part codes, sparse-NMF local weights, holistic decoding.

Local weights. The feature matrix ``V: (n_vertices, N_train)`` holds the per-vertex displacement
magnitude of every training mesh from the train mean shape, ``V[v, i] = ||x_i[v] - mean[v]||``,
diffused over the mean shape (width ``smoothing`` x its bounding-box diagonal) so that parts are
contiguous patches rather than speckles; sparse NMF (:mod:`morphable.explicit.nmf`) factorises
``V ~ W H`` with ``K`` sparse non-negative columns, and the local weights are ``W`` diffused at half
that width and made a sharpened partition of unity, ``Wbar[v, k] = W[v, k]^g / sum_j W[v, j]^g``
(``g = sharpness``, columns first scaled to max 1): ``(n_vertices, K)``, part ``k`` being the vertices
that move together across the training set. Every vertex's weights sum to 1, so the decoder's input
has full strength everywhere, and the dominant part of a vertex dominates clearly, so part ``k``'s
code enters little outside its region. Computed once from the train split and stored in the network
as buffers (one per hierarchy level).

Network (on CoMA's encoder/decoder, :class:`~morphable.explicit.autoencoder.MeshAutoencoder`), with
``Z`` the latent size, ``K`` parts, decoder levels ``l = 0`` (coarsest, ``n_0`` vertices, ``d_0``
channels) upwards and ``W_l: (n_l, K)`` the local weights down-sampled by the QEM selections::

    z = E(x)                                                       (B, Z)
    p[b, k, :] = P_k z[b]          p = einsum('kyz,bz->bky', P, z)   (B, K, Z), P: (K, Z, Z), no bias
    h_0[b, j, :] = sum_k W_0[j, k] (A p[b, k])[j, :] + a[j, :]      (B, n_0, d_0)
    h_l = up_l(h_{l-1}) + sum_k W_l[v, k] (B_l p[b, k])            (B, n_l, d_l)   (only if ``inject``)
    h_l = act(conv_l(h_l)),   x^ = conv_out(h_L)                     (B, V, 3)

with ``A: (n_0 d_0, Z)``, ``a`` the weight and bias of CoMA's decoder FC and ``B_l: (d_l, Z)`` bias-free.
Each part code reaches the decoder only through its weights, so it enters where its part is; the
whole face is decoded in one pass (no per-part decoders, no affine composition). With ``part_graph``
the decoder's Chebyshev filters ``conv_l`` and ``conv_out`` run on part-aware graphs
(:func:`part_laplacian`: edge ``(i, j)`` weighted by ``sum_k W_l[i, k] W_l[j, k]``), so they carry
features within a part and only through the soft weight borders across parts. With ``part_upsampling``
every ``up_l`` is :func:`part_upsampling`: a fine vertex takes its features only from coarse vertices of its
own part. Together (and with sharp weights) they make the decoder local by construction: a part code reaches
the decoder only in its region, and no layer carries it out of the region; every region is decoded from its
own part code and coarse vertices, in one pass over the whole face.

Training: L1 reconstruction plus the decompose-compose cycle loss (Dubrovina et al. 2019): mix part
codes across the batch with one random permutation per part, ``p~[b, k] = p[sigma_k(b), k]``, decode,
re-encode and project, un-mix with the inverse permutations and decode again; the cycle loss is the
L1 distance of that last decoding to the input. Swap-locality loss (``locality_weight > 0``, ours):
per step one part ``k`` (``step mod K``) of every face is replaced by that of another face of the batch,
``p~[b, k] = p[sigma(b), k]`` (other parts unchanged), and the decoder is penalised by the share of
what this moves that falls outside part ``k``'s region ``R_k = {v : argmax_j W[v, j] = k}``:
``L_loc = mean_b sum_v (1 - [v in R_k]) d_bv / sum_v d_bv``, ``d_bv = ||D(p~)[b, v] - D(p)[b, v]||``
(:func:`locality_loss`), one minus the locality that :func:`morphable.explicit.parts.locality` measures.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree
from torch import nn

from morphable.config import ExperimentConfig, LWAEConfig
from morphable.data.registered import Normaliser
from morphable.explicit.autoencoder import MeshAutoencoder
from morphable.explicit.layers import Pool
from morphable.explicit.method import AutoencoderMethod
from morphable.explicit.nmf import SparseNMF, sparse_nmf
from morphable.mesh.hierarchy import MeshHierarchy
from morphable.mesh.topology import diffuse


def displacement_features(train_vertices: np.ndarray) -> np.ndarray:
    """``V[v, i] = ||x_i[v] - mean[v]||`` for train meshes ``(N, n, 3)`` -> ``(n, N)`` float64."""
    x = np.asarray(train_vertices, dtype=np.float64)
    return np.linalg.norm(x - x.mean(axis=0), axis=-1).T


def partition_weights(weights: np.ndarray, sharpness: float, positions: np.ndarray) -> np.ndarray:
    """NMF columns ``(n, K)`` -> a sharpened partition of unity ``(n, K)``.

    ``Wbar[v, k] = W[v, k]^g / sum_j W[v, j]^g`` with ``g = sharpness``: every vertex's weights sum to 1 and
    keep their argmax, and the larger ``g`` the more the dominant part dominates. Vertices whose NMF weights
    are all 0 take the row of the nearest vertex (in ``positions (n, 3)``) that has a non-zero one.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / np.maximum(w.max(axis=0, keepdims=True), 1e-300)
    powered = w ** sharpness
    total = powered.sum(axis=1, keepdims=True)
    assigned = total[:, 0] > 0
    if not assigned.any():
        raise ValueError("every local weight is 0")
    out = np.zeros_like(w)
    out[assigned] = powered[assigned] / total[assigned]
    if not assigned.all():
        _, nearest = cKDTree(positions[assigned]).query(positions[~assigned])
        out[~assigned] = out[assigned][nearest]
    return out


def compute_local_weights(train_vertices: np.ndarray, faces: np.ndarray, parts: int, sparseness: float,
                          iterations: int = 500, init: str = "nndsvd", seed: int = 0, sharpness: float = 32.0,
                          smoothing: float = 0.04) -> tuple[np.ndarray, SparseNMF]:
    """Local weights ``(n, K)`` and the NMF result, from train meshes ``(N, n, 3)`` with triangles ``faces (F, 3)``.

    With ``sigma = smoothing x`` the mean shape's bounding-box diagonal: the displacement features are diffused
    over the mean shape with width ``sigma`` (:func:`~morphable.mesh.topology.diffuse`), factorised by sparse NMF,
    the NMF columns diffused again with width ``sigma / 2`` (the sparse column step cuts them off sharply at the
    borders) and turned into a partition of unity by :func:`partition_weights`; parts are ordered top to bottom by
    the height ``y`` of their weighted centroid on the mean shape.
    """
    mean = np.asarray(train_vertices, dtype=np.float64).mean(axis=0)
    sigma = smoothing * float(np.linalg.norm(mean.max(axis=0) - mean.min(axis=0)))
    features = diffuse(displacement_features(train_vertices), mean, faces, sigma)
    result = sparse_nmf(features, parts, sparseness, iterations, init=init, seed=seed)
    W = partition_weights(np.maximum(diffuse(result.W, mean, faces, sigma / 2), 0.0), sharpness, mean)
    height = (W * mean[:, 1:2]).sum(axis=0) / np.maximum(W.sum(axis=0), 1e-300)
    order = np.argsort(-height, kind="stable")
    result.W, result.H = result.W[:, order], result.H[order]
    return W[:, order], result


def level_weights(weights: np.ndarray, hierarchy: MeshHierarchy) -> list[np.ndarray]:
    """``W_l`` for every hierarchy level: ``W_0 = W``, ``W_{l+1} = D_l W_l`` (QEM 0/1 selections)."""
    out = [np.asarray(weights, dtype=np.float64)]
    for down in hierarchy.down:
        out.append(np.asarray(down @ out[-1]))
    return out


def part_laplacian(laplacian: sp.spmatrix, weights: np.ndarray) -> sp.csr_matrix:
    """The Chebyshev-scaled Laplacian of a part-aware graph, in the sparsity pattern of ``laplacian``.

    ``laplacian``: ``-D^-1/2 A D^-1/2 (V, V)`` of a mesh level (:attr:`MeshHierarchy.laplacians`); ``weights``:
    partition weights ``Wbar (V, K)`` of that level. Every edge ``(i, j)`` gets the probability that both ends belong
    to the same part, ``S_ij = sum_k Wbar[i, k] Wbar[j, k]``, and the result is ``-D'^-1/2 S D'^-1/2`` with
    ``D' = diag(S 1)`` over the edges (eigenvalues in ``[-1, 1]``, as Chebyshev filters need). Filters on this graph
    spread features within a part and, through the soft borders of the weights, only weakly across parts.
    """
    lap = sp.csr_matrix(laplacian)
    w = np.asarray(weights, dtype=np.float64)
    rows = np.repeat(np.arange(lap.shape[0]), np.diff(lap.indptr))
    cols = lap.indices
    same = np.where(rows != cols, np.einsum("ek,ek->e", w[rows], w[cols]), 0.0)
    degree = np.bincount(rows, weights=same, minlength=lap.shape[0])
    scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    return sp.csr_matrix((-same * scale[rows] * scale[cols], cols.copy(), lap.indptr.copy()), shape=lap.shape)


def part_upsampling(up: sp.spmatrix, fine_weights: np.ndarray, coarse_weights: np.ndarray,
                    fine_positions: np.ndarray, coarse_positions: np.ndarray, nearest_weight: float = 1e-3
                    ) -> sp.csr_matrix:
    """Part-aware up-sampling ``U' (n_fine, n_coarse)`` from the barycentric up-sampling ``up = U`` of a level.

    ``fine_weights: (n_fine, K)`` and ``coarse_weights: (n_coarse, K)``: partition weights of the two levels;
    positions ``(n, 3)``. With ``s(v, c) = sum_k Wf[v, k] Wc[c, k]`` (the probability that fine vertex ``v`` and
    coarse vertex ``c`` lie in the same part) and ``n(v)`` the nearest coarse vertex whose dominant part is that
    of ``v``::

        U'[v, c] = (U[v, c] s(v, c) + nearest_weight [c = n(v)]) / row sum

    so a fine vertex takes its features from the corners of its coarse triangle that share its part, and from
    its part's nearest coarse vertex when none does. A fine vertex whose part has no coarse vertex at all gets a
    zero row (its features then come from its part's injected code alone). Entries below ``1e-9`` of their row
    are dropped (they would be 0 in float32, so a checkpoint would not keep them). Rows of ``U'`` sum to 1 (or
    are 0); for one-hot weights no fine vertex receives anything from a coarse vertex of another part; with one part,
    ``U' = U`` up to the ``nearest_weight`` term.
    """
    u = sp.coo_matrix(up)
    wf = np.asarray(fine_weights, dtype=np.float64)
    wc = np.asarray(coarse_weights, dtype=np.float64)
    same = np.einsum("ek,ek->e", wf[u.row], wc[u.col])
    fine_part, coarse_part = wf.argmax(axis=1), wc.argmax(axis=1)
    nearest = np.full(len(wf), -1)
    for part in np.unique(fine_part):
        candidates = np.flatnonzero(coarse_part == part)
        if len(candidates):
            members = fine_part == part
            nearest[members] = candidates[cKDTree(coarse_positions[candidates]).query(fine_positions[members])[1]]
    fed = np.flatnonzero(nearest >= 0)
    matrix = sp.csr_matrix((np.concatenate([u.data * same, np.full(len(fed), nearest_weight)]),
                            (np.concatenate([u.row, fed]), np.concatenate([u.col, nearest[fed]]))), shape=u.shape)
    total = np.asarray(matrix.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    matrix.data[matrix.data < 1e-9 * total[rows]] = 0.0  # negligible (and 0 in float32 checkpoints)
    matrix.eliminate_zeros()
    total = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.where(nearest >= 0, 1.0 / np.maximum(total, 1e-300), 0.0)
    matrix = sp.csr_matrix(sp.diags(scale) @ matrix)
    matrix.eliminate_zeros()
    return matrix


def mix_codes(p: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """``out[b, k] = p[mix[k, b], k]`` for part codes ``p: (B, K, Z)`` and permutations ``mix: (K, B)``."""
    return p[mix.t(), torch.arange(p.shape[1], device=p.device)]


def unmix_codes(p: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mix_codes`: ``out[mix[k, b], k] = p[b, k]``."""
    return mix_codes(p, torch.argsort(mix, dim=1))


def outside_region(weights: torch.Tensor, part: int) -> torch.Tensor:
    """``1 - [v in R_part]`` with ``R_part = {v : argmax_j W[v, j] = part}`` (all-zero rows: in no region);
    ``weights: (V, K)`` -> ``(V,)``."""
    inside = (weights.argmax(dim=1) == part) & (weights.max(dim=1).values > 0)
    return (~inside).to(weights.dtype)


def locality_loss(swapped: torch.Tensor, base: torch.Tensor, weights: torch.Tensor, part: int,
                  eps: float = 1e-6) -> torch.Tensor:
    """Swap-locality loss, the share of a part swap's displacement that falls outside the part's region.

    ``swapped``: decodings ``(B, V, 3)`` of codes that differ from those of ``base (B, V, 3)`` in part ``part``
    only; ``weights: (V, K)``. With ``d_bv = sqrt(||swapped[b, v] - base[b, v]||^2 + eps^2) - eps`` (the distance,
    smoothed at 0) and ``out_v = 1 - [v in R_part]``: ``mean_b sum_v out_v d_bv / (sum_v d_bv + eps)``, i.e. one
    minus the measured locality of every swap (:func:`morphable.explicit.parts.locality`). In ``[0, 1)``, nearly
    independent of the size of the displacement (shrinking every swap does not lower it), 0 when nothing moves
    outside ``R_part`` (and for a face that keeps its own part).
    """
    d = torch.sqrt(((swapped - base) ** 2).sum(-1) + eps ** 2) - eps
    return ((d * outside_region(weights, part)).sum(1) / (d.sum(1) + eps)).mean()


class LocallyWeightedAutoencoder(MeshAutoencoder):
    """CoMA autoencoder with a projection into ``K`` part codes and locally weighted decoding (module docstring).

    ``local_weights: (n_vertices, K)`` (``None``: zeros, to be filled by ``load_state_dict``).
    """

    def __init__(self, config: LWAEConfig, hierarchy: MeshHierarchy, local_weights: np.ndarray | None = None):
        super().__init__(config, hierarchy)
        k, z = config.parts, config.latent
        if local_weights is None:
            local_weights = np.zeros((self.n_vertices, k))
        if local_weights.shape != (self.n_vertices, k):
            raise ValueError(f"local weights must be ({self.n_vertices}, {k}), got {local_weights.shape}")
        self.parts = k
        self.projection = nn.Parameter(torch.empty(k, z, z).uniform_(-z ** -0.5, z ** -0.5))
        levels = level_weights(local_weights, hierarchy)
        self.n_levels = len(levels)
        for l, w in enumerate(levels):
            self.register_buffer(f"weights_{l}", torch.as_tensor(w, dtype=torch.get_default_dtype()))
        dec = list(config.decoder_channels)
        self.inject = config.inject
        self.injections = nn.ModuleList(nn.Linear(z, dec[i], bias=False) for i in range(len(self.ups))) \
            if config.inject else nn.ModuleList()
        if config.part_graph:
            if config.conv != "cheb":
                raise ValueError(f"part_graph needs Chebyshev convolutions (conv 'cheb'), got '{config.conv}'")
            convs = [*self.decoder_convs, self.output_conv]
            for conv, level in zip(convs, [self.n_levels - 2 - i for i in range(len(self.decoder_convs))] + [0]):
                graph = part_laplacian(hierarchy.laplacians[level], levels[level])
                with torch.no_grad():
                    conv.laplacian.values.copy_(torch.as_tensor(graph.data))
        self.part_upsampling = config.part_upsampling
        if config.part_upsampling:
            if config.pooling != "qem":
                raise ValueError(f"part_upsampling needs QEM pooling (pooling 'qem'), got '{config.pooling}'")
            if np.any(local_weights):  # else a checkpoint brings the matrices (_load_from_state_dict)
                for i in range(len(self.ups)):
                    fine, coarse = self.n_levels - 2 - i, self.n_levels - 1 - i
                    self.ups[i] = Pool(part_upsampling(hierarchy.up[fine], levels[fine], levels[coarse],
                                                       hierarchy.vertices[fine], hierarchy.vertices[coarse]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Part-aware up-samplings depend on the local weights, so their sparsity pattern comes from the checkpoint."""
        if self.part_upsampling:
            for i, up in enumerate(self.ups):
                key = f"{prefix}ups.{i}.matrix."
                if key + "crow" in state_dict:
                    parts = tuple(state_dict[key + n].detach().cpu().numpy() for n in ("values", "col", "crow"))
                    try:
                        matrix = sp.csr_matrix(parts, shape=up.matrix.shape)
                        matrix.check_format(full_check=True)
                    except ValueError as exc:  # reported like any other mismatch (RuntimeError, one line)
                        raise RuntimeError(f"Error(s) in loading state_dict:\n\t{key[:-1]}: not a sparse "
                                           f"{up.matrix.shape} matrix ({exc})") from None
                    self.ups[i] = Pool(matrix, dtype=state_dict[key + "values"].dtype).to(up.matrix.crow.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def level_weights(self, level: int) -> torch.Tensor:
        """``W_level: (n_level, K)``; level 0 is the template."""
        return getattr(self, f"weights_{level}")

    @property
    def local_weights(self) -> torch.Tensor:
        """``(n_vertices, K)``."""
        return self.weights_0

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (B, Z)`` -> part codes ``p = einsum('kyz,bz->bky', P, z): (B, K, Z)``."""
        return torch.einsum("kyz,bz->bky", self.projection, z)

    def encode_parts(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, V, 3)`` normalised -> ``(B, K, Z)``."""
        return self.project(self.encode(x))

    def decode_parts(self, p: torch.Tensor) -> torch.Tensor:
        """Part codes ``p: (B, K, Z)`` -> normalised meshes ``(B, V, 3)`` (contraction in the module docstring)."""
        b = len(p)
        coarse = self.n_levels - 1
        y = torch.matmul(p, self.decoder_fc.weight.t()).reshape(b, self.parts, self.n_coarse, self.decoder_channels0)
        x = torch.einsum("bkjd,jk->bjd", y, self.level_weights(coarse))
        x = x + self.decoder_fc.bias.reshape(self.n_coarse, self.decoder_channels0)
        for i, (up, conv) in enumerate(zip(self.ups, self.decoder_convs)):
            x = up(x)
            if self.inject:
                x = x + torch.einsum("vk,bkd->bvd", self.level_weights(coarse - 1 - i), self.injections[i](p))
            x = self.act(conv(x))
        return self.output_conv(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Whole-face code ``z: (B, Z)`` -> ``(B, V, 3)`` (through the projection)."""
        return self.decode_parts(self.project(z))

    def cycle(self, p: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """Decompose-compose cycle. ``p: (B, K, Z)``, ``mix: (K, B)`` one permutation per part.

        ``p~[b, k] = p[mix[k, b], k]``; ``p^ = P(E(D(p~)))``; ``p'[c, k] = p^[mix_k^-1(c), k]``; returns ``D(p')``.
        """
        again = self.encode_parts(self.decode_parts(mix_codes(p, mix)))
        return self.decode_parts(unmix_codes(again, mix))

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None, part: int | None = None,
                swap: torch.Tensor | None = None):
        """``x: (B, V, 3)`` -> reconstruction ``D(P E(x))``; with ``mix: (K, B)`` and/or ``part`` and ``swap: (B,)``
        -> ``(reconstruction, cycle reconstruction or None, swapped decoding or None)``, the swapped decoding
        being ``D(p~)`` with ``p~ = p`` except ``p~[b, part] = p[swap[b], part]``."""
        p = self.encode_parts(x)
        recon = self.decode_parts(p)
        if mix is None and swap is None:
            return recon
        cycled = None if mix is None else self.cycle(p, mix)
        swapped = None
        if swap is not None:
            q = p.clone()
            q[:, part] = p[swap, part]
            swapped = self.decode_parts(q)
        return recon, cycled, swapped


class LWAEMethod(AutoencoderMethod):
    """Training of :class:`LocallyWeightedAutoencoder`: L1 reconstruction + ``cycle_weight`` x L1 cycle loss
    + ``locality_weight`` x swap-locality loss (:func:`locality_loss`, part ``step mod K``).

    ``local_weights``: ``(n_vertices, K)`` from :func:`compute_local_weights` on the train split (``None``
    when a checkpoint will provide them). The permutations of step ``s`` come from a generator seeded
    with ``(seed, s)``, so a resumed run draws what an uninterrupted one draws.
    """

    def __init__(self, config: ExperimentConfig, hierarchy: MeshHierarchy, normaliser: Normaliser,
                 device: torch.device, local_weights: np.ndarray | None = None):
        self._initial_weights = local_weights
        super().__init__(config, hierarchy, normaliser, device)
        self.cycle_weight = float(config.model.cycle_weight)
        self.locality_weight = float(config.model.locality_weight)
        self.seed = config.seed

    @classmethod
    def create(cls, config: ExperimentConfig, hierarchy: MeshHierarchy, normaliser: Normaliser,
               device: torch.device, train_vertices: np.ndarray | None = None) -> "LWAEMethod":
        """An LWAE method; with ``train_vertices (N, V, 3)`` its local weights are computed from them (without,
        a checkpoint provides them)."""
        weights = None
        if train_vertices is not None:
            m = config.model
            weights, _ = compute_local_weights(train_vertices, hierarchy.faces[0], m.parts, m.sparseness,
                                               m.nmf_iterations, m.nmf_init, config.seed, m.sharpness, m.smoothing)
        return cls(config, hierarchy, normaliser, device, weights)

    def evaluation_report(self, run, dataset, split) -> dict:
        """The run's part figures, locality, seams and diversity (:func:`morphable.explicit.parts.lwae_report`)."""
        from morphable.explicit.parts import lwae_report

        return lwae_report(run, self, dataset, split)

    def build_network(self, config: ExperimentConfig, hierarchy: MeshHierarchy) -> nn.Module:
        return LocallyWeightedAutoencoder(config.model, hierarchy, self._initial_weights)

    def permutations(self, batch: int, step: int) -> torch.Tensor:
        """``(K + 1, batch)``: one random permutation of the batch per part (the cycle's), then the swap's."""
        gen = torch.Generator().manual_seed(self.seed * 1000003 + step)
        return torch.stack([torch.randperm(batch, generator=gen) for _ in range(self.network.parts + 1)])

    def training_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        x = batch.to(self.device, non_blocking=True)
        perms = self.permutations(len(x), step).to(self.device)
        part = step % self.network.parts
        use_cycle, use_swap = self.cycle_weight > 0, self.locality_weight > 0
        zero = torch.zeros((), device=self.device)
        if use_cycle or use_swap:
            recon, cycled, swapped = self.forward_networks["autoencoder"](x, perms[:-1] if use_cycle else None, part,
                                                                          perms[-1] if use_swap else None)
        else:
            recon, cycled, swapped = self.forward_networks["autoencoder"](x), None, None
        rec_loss = (recon - x).abs().mean()
        cycle_loss = zero if cycled is None else (cycled - x).abs().mean()
        loc_loss = zero if swapped is None else locality_loss(swapped, recon, self.network.local_weights, part)
        loss = rec_loss + self.cycle_weight * cycle_loss + self.locality_weight * loc_loss
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return {"loss": loss.item(), "recon": rec_loss.item(), "cycle": cycle_loss.item(), "locality": loc_loss.item()}

    @property
    def local_weights(self) -> np.ndarray:
        """``(n_vertices, K)``."""
        return self.network.local_weights.detach().cpu().numpy().astype(np.float64)

    def encode_parts(self, vertices: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw meshes ``(N, V, 3)`` -> part codes ``(N, K, Z)``."""
        return self.batched(lambda x: self.network.encode_parts((x - self.mean) / self.std), vertices, batch_size)

    def decode_parts(self, codes: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Part codes ``(N, K, Z)`` -> raw meshes ``(N, V, 3)``."""
        return self.batched(lambda p: self.network.decode_parts(p) * self.std + self.mean, codes, batch_size)
