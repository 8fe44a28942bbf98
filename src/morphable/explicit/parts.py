"""Part manipulation with a locally weighted autoencoder: interpolation, swaps, measurements, figures.

Everything works on a *part codec*: ``encode_parts`` (meshes ``(N, V, 3)`` -> part codes ``(N, K, Z)``),
``decode_parts`` (the reverse), ``encode`` (meshes -> whole-face codes ``(N, Z)``) and ``local_weights``
``(V, K)``, e.g. :class:`morphable.explicit.lwae.LWAEMethod`.

* Part interpolation (paper Fig. 5): part ``k``'s code goes from the source's to the target's,
  ``p_k(t) = (1 - t) p_k^src + t p_k^tgt``, ``t = 0 .. 1``; the other parts keep the source's codes.
* Part swap: a new face whose part ``k`` code is taken from the ``assignment[k]``-th input face.
* Locality: with region ``R_k = {v : argmax_j W[v, j] = k}`` (vertices whose weights are all 0 belong
  to no region), the share of the total per-vertex displacement between the source's decoding and
  the decoding with part ``k`` replaced by the target's (``t = 1``) that falls in ``R_k``:
  ``sum_{v in R_k} d_v / sum_v d_v``, ``d_v = ||x_v(1) - x_v(0)||``, both sums pooled over source/target pairs.
  A decoder that ignores the weights scores about ``|R_k| / V`` (the "chance" value reported with it).
* Seams (:func:`border_roughness`): roughness of part-swapped faces on the vertices where regions meet,
  relative to the unswapped faces.
* Diversity (paper Fig. 6): whole-face encodings of train meshes, test meshes and part-synthesised
  faces (every source x target x part swap, decoded and encoded again) projected to 2D with PCA and
  t-SNE; each group is summarised by its 2-sigma covariance ellipse, area ``4 pi sqrt(det Sigma)``.
"""

from __future__ import annotations

import os
from typing import Callable, Protocol, Sequence

import numpy as np

from morphable.io import write_ply
from morphable.viz import pyplot, save_figure

GROUP_COLORS = {"train": "#d62728", "test": "#e6b800", "synthesised": "#2ca02c"}


class PartCodec(Protocol):
    local_weights: np.ndarray

    def encode(self, vertices: np.ndarray) -> np.ndarray: ...

    def encode_parts(self, vertices: np.ndarray) -> np.ndarray: ...

    def decode_parts(self, codes: np.ndarray) -> np.ndarray: ...


def part_regions(weights: np.ndarray) -> np.ndarray:
    """Region of each vertex, ``argmax_k W[v, k]``, or ``-1`` where every weight is 0: ``(V, K)`` -> ``(V,)``."""
    weights = np.asarray(weights)
    return np.where(weights.max(axis=1) > 0, weights.argmax(axis=1), -1)


def mix_part(source: np.ndarray, target: np.ndarray, part: int, t: np.ndarray) -> np.ndarray:
    """Codes ``(S, K, Z)``: ``source (K, Z)`` with part ``part`` replaced by ``(1 - t) source_k + t target_k``."""
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    codes = np.repeat(np.asarray(source)[None], len(t), axis=0).astype(np.float64)
    codes[:, part] = (1 - t) * source[part] + t * target[part]
    return codes


def interpolate_part(codec: PartCodec, source: np.ndarray, target: np.ndarray, part: int,
                     steps: int = 9) -> np.ndarray:
    """Meshes ``(steps, V, 3)`` interpolating part ``part`` from mesh ``source (V, 3)`` to ``target (V, 3)``."""
    codes = codec.encode_parts(np.stack([source, target]))
    return codec.decode_parts(mix_part(codes[0], codes[1], part, np.linspace(0.0, 1.0, steps)))


def swap_parts(codec: PartCodec, faces: np.ndarray, assignment: Sequence[int]) -> np.ndarray:
    """A new mesh ``(V, 3)`` whose part ``k`` code comes from ``faces[assignment[k]]``; ``faces: (M, V, 3)``."""
    codes = codec.encode_parts(np.asarray(faces))
    k = codes.shape[1]
    if len(assignment) != k:
        raise ValueError(f"need one face index per part ({k}), got {len(assignment)}")
    combined = codes[np.asarray(assignment), np.arange(k)]
    return codec.decode_parts(combined[None])[0]


def swap_decodings(decode_parts: Callable[[np.ndarray], np.ndarray], codes: np.ndarray,
                   pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decodings of every (source, target) pair's part swaps, in one batch.

    Args:
        decode_parts: part codes ``(N, K, Z)`` -> meshes ``(N, V, 3)``.
        codes: ``(M, K, Z)`` part codes of the faces the pairs index.
        pairs: ``(P, 2)`` (source, target) indices into ``codes``.

    Returns ``sources (P, V, 3)``, the sources' decodings, and ``swapped (P, K, V, 3)``, ``swapped[i, k]`` being
    the decoding of source ``i`` with part ``k``'s code replaced by its target's.
    """
    codes = np.asarray(codes, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    k = codes.shape[1]
    batch = np.stack([np.concatenate([codes[a][None]] + [mix_part(codes[a], codes[b], part, [1.0]) for part in range(k)])
                      for a, b in pairs])  # (P, K + 1, K, Z)
    meshes = np.asarray(decode_parts(batch.reshape(-1, *codes.shape[1:])))
    meshes = meshes.reshape(len(pairs), k + 1, *meshes.shape[1:])
    return meshes[:, 0], meshes[:, 1:]


def locality(sources: np.ndarray, swapped: np.ndarray, weights: np.ndarray) -> dict:
    """Share of the displacement caused by swapping part ``k`` that falls in its region ``R_k`` (module docstring).

    ``sources (P, V, 3)`` and ``swapped (P, K, V, 3)`` from :func:`swap_decodings`; ``weights``: local weights
    ``(V, K)`` that define the regions.

    Returns per part (lists of length K): ``share`` (pooled over pairs: displacement in ``R_k`` summed over
    the pairs over the total summed over the pairs, so pairs of equal faces, which move nothing, do not
    count), ``share_min`` (worst pair that moves anything), ``chance`` (``|R_k| / V``), ``displacement``
    (mean total displacement, model units); ``min_share`` (worst part).
    """
    regions = part_regions(weights)
    k = swapped.shape[1]
    d = np.linalg.norm(np.asarray(swapped, dtype=np.float64) - np.asarray(sources, dtype=np.float64)[:, None],
                       axis=-1)  # (P, K, V)
    totals = d.sum(axis=2)
    inside = np.stack([d[:, part, regions == part].sum(axis=1) for part in range(k)], axis=1)
    share = inside.sum(axis=0) / np.maximum(totals.sum(axis=0), 1e-300)
    moved = totals > 1e-9 * max(float(totals.max()), 1e-300)
    per_pair = np.where(moved, inside / np.maximum(totals, 1e-300), np.inf)
    return {"share": share.tolist(), "share_min": [float(x) if np.isfinite(x) else 0.0 for x in per_pair.min(axis=0)],
            "chance": [float((regions == part).mean()) for part in range(k)],
            "displacement": totals.mean(axis=0).tolist(), "min_share": float(share.min()), "pairs": len(sources)}


def border_roughness(sources: np.ndarray, swapped: np.ndarray, weights: np.ndarray, faces: np.ndarray) -> dict:
    """Seam check for part swaps: how rough part-swapped faces are where two regions meet.

    Roughness of a mesh at vertex ``v``: ``r_v = ||x_v - mean_{u ~ v} x_u||`` (umbrella Laplacian). Border vertices
    ``B``: those with a mesh neighbour in another region ``R_j``. ``sources (P, V, 3)`` and ``swapped (P, K, V, 3)``
    from :func:`swap_decodings`, ``weights: (V, K)``, ``faces: (F, 3)``. Returns
    ``ratio = mean_B r(swapped) / mean_B r(source)`` (about 1 when a swap leaves no seam, larger when regions are
    decoded out of step), ``interior_ratio`` (the same off the borders) and ``border_fraction`` (``|B| / V``).
    """
    from morphable.mesh.topology import adjacency

    regions = part_regions(weights)
    n = len(regions)
    adj = adjacency(faces, n).tocoo()
    border = np.zeros(n, dtype=bool)
    border[adj.row[regions[adj.row] != regions[adj.col]]] = True
    adj = adj.tocsr()
    degree = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1.0)

    def roughness(meshes: np.ndarray) -> np.ndarray:  # (N, V, 3) -> (N, V)
        flat = meshes.transpose(1, 0, 2).reshape(n, -1)
        mean = (adj @ flat / degree[:, None]).reshape(n, len(meshes), 3).transpose(1, 0, 2)
        return np.linalg.norm(meshes - mean, axis=-1)

    base = roughness(np.asarray(sources))
    mixed = roughness(np.asarray(swapped).reshape(-1, n, 3))
    return {"ratio": float(mixed[:, border].mean() / max(base[:, border].mean(), 1e-300)),
            "interior_ratio": float(mixed[:, ~border].mean() / max(base[:, ~border].mean(), 1e-300)),
            "border_fraction": float(border.mean())}


def random_pairs(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``(count, 2)`` distinct ordered (source, target) index pairs in ``0..n-1`` (fewer when ``n`` is small)."""
    rng = np.random.default_rng(seed)
    all_pairs = np.array([(a, b) for a in range(n) for b in range(n) if a != b], dtype=np.int64).reshape(-1, 2)
    return all_pairs[rng.permutation(len(all_pairs))[:count]]


def ellipse_area(points: np.ndarray, n_sigma: float = 2.0) -> float:
    """Area of the ``n_sigma`` covariance ellipse of 2D points ``(N, 2)``: ``pi n_sigma^2 sqrt(det Sigma)``."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return 0.0
    return float(np.pi * n_sigma ** 2 * np.sqrt(max(np.linalg.det(np.cov(points.T)), 0.0)))


def synthesise(codec: PartCodec, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Every part swap ``source x target x part`` ``(S * T * K, V, 3)``: a source with one part from a target."""
    src, tgt = codec.encode_parts(sources), codec.encode_parts(targets)
    k = src.shape[1]
    codes = np.stack([mix_part(s, t, part, [1.0])[0] for s in src for t in tgt for part in range(k)])
    return codec.decode_parts(codes)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection of ``x (N, D)`` on its first two principal axes ``(N, 2)``."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """t-SNE embedding ``(N, 2)`` of ``x (N, D)`` (scikit-learn); ``None`` when scikit-learn is missing."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return None
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def diversity(codec: PartCodec, train: np.ndarray, test: np.ndarray, n_sources: int = 5, n_targets: int = 11,
              n_encode: int = 220, seed: int = 0) -> tuple[dict, dict]:
    """Encodings of up to ``n_encode`` train and test meshes and of ``n_sources x n_targets x K`` part swaps
    (sources and targets drawn from the train meshes), projected with PCA and t-SNE (jointly).

    Returns ``(numbers, embeddings)``: numbers = group sizes and 2-sigma ellipse areas per projection
    (``tsne`` is ``None`` without scikit-learn); embeddings = ``{projection: {group: (N, 2)}}``.
    """
    rng = np.random.default_rng(seed)
    pick = lambda x, n: x[np.sort(rng.choice(len(x), min(n, len(x)), replace=False))]  # noqa: E731
    chosen = pick(train, n_sources + n_targets)
    sources, targets = chosen[:n_sources], chosen[n_sources:]
    groups = {"train": pick(train, n_encode), "test": pick(test, n_encode),
              "synthesised": synthesise(codec, sources, targets) if len(targets) else test[:0]}
    codes = {name: codec.encode(x) for name, x in groups.items() if len(x)}
    stacked = np.concatenate(list(codes.values()))
    bounds = np.cumsum([0, *(len(c) for c in codes.values())])
    embeddings = {}
    for name, emb in (("pca", pca_2d(stacked)), ("tsne", tsne_2d(stacked, seed))):
        if emb is not None:
            embeddings[name] = {g: emb[bounds[i]:bounds[i + 1]] for i, g in enumerate(codes)}
    numbers = {"sizes": {g: len(c) for g, c in codes.items()},
               "sources": int(len(sources)), "targets": int(len(targets))}
    for name in ("pca", "tsne"):
        numbers[f"{name}_area"] = ({g: ellipse_area(e) for g, e in embeddings[name].items()}
                                   if name in embeddings else None)
    return numbers, embeddings


# --------------------------------------------------------------------------- figures


def local_weights_figure(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
                         weights: np.ndarray) -> None:
    """Paper Fig. 2: each part's local weights ``W[:, k]`` on the template, plus the argmax regions."""
    from morphable.viz import draw_mesh

    plt = pyplot()
    k = weights.shape[1]
    fig, axes = plt.subplots(1, k + 1, figsize=(2.4 * (k + 1), 2.9))
    for part in range(k):
        draw_mesh(axes[part], vertices, faces, weights[:, part], vmax=1.0, cmap="magma")
        axes[part].set_title(f"part {part}", fontsize=9)
    regions = part_regions(weights)
    draw_mesh(axes[k], vertices, faces, np.where(regions < 0, 9, regions).astype(np.float64), vmax=9.0, cmap="tab10")
    axes[k].set_title("regions (argmax)", fontsize=9)
    fig.suptitle("local weights (smoothed sparse NMF basis as a partition of unity)")
    fig.tight_layout()
    save_figure(fig, path)


def part_interpolation_figure(path: str | os.PathLike, rows: Sequence[np.ndarray], parts: Sequence[int],
                              faces: np.ndarray, weights: np.ndarray, template: np.ndarray, to_mm: float,
                              unit_label: str = "mm") -> None:
    """Paper Fig. 5: one row per part (its local weights first), columns = steps ``(S, V, 3)``, each mesh
    coloured by the per-vertex distance between the row's first and last mesh."""
    from morphable.viz import ERROR_CMAP, draw_mesh

    plt = pyplot()
    steps = len(rows[0])
    dists = [np.linalg.norm(r[-1] - r[0], axis=-1) * to_mm for r in rows]
    vmax = max(max(float(d.max()) for d in dists), 1e-12)
    fig, axes = plt.subplots(len(rows), steps + 1, figsize=(1.9 * (steps + 1), 2.1 * len(rows) + 0.6), squeeze=False)
    for i, (row, part, d) in enumerate(zip(rows, parts, dists)):
        draw_mesh(axes[i, 0], template, faces, weights[:, part], vmax=1.0, cmap="magma")
        axes[i, 0].set_title(f"part {part} weights", fontsize=8)
        for j, mesh in enumerate(row):
            draw_mesh(axes[i, j + 1], mesh, faces, d, vmax=vmax)
            axes[i, j + 1].set_title(f"t = {j / max(steps - 1, 1):.2f}", fontsize=8)
    import matplotlib

    fig.subplots_adjust(left=0.01, right=0.9, top=1 - 0.5 / (2.1 * len(rows) + 0.6), bottom=0.01)
    cax = fig.add_axes([0.92, 0.15, 0.015, 0.7])
    fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, vmax), ERROR_CMAP), cax=cax,
                 label=f"distance first-last ({unit_label})")
    fig.suptitle("part interpolation: source -> target, one part per row", fontsize=10)
    save_figure(fig, path)


def swap_figure(path: str | os.PathLike, inputs: np.ndarray, result: np.ndarray, faces: np.ndarray,
                weights: np.ndarray) -> None:
    """The input faces (face ``k`` gives part ``k``, its region shown in colour) and the combined face."""
    from morphable.viz import draw_mesh

    plt = pyplot()
    regions = part_regions(weights)
    fig, axes = plt.subplots(1, len(inputs) + 1, figsize=(2.3 * (len(inputs) + 1), 2.8))
    for k, mesh in enumerate(inputs):
        draw_mesh(axes[k], mesh, faces, (regions == k).astype(np.float64), vmax=1.5, cmap="Greens")
        axes[k].set_title(f"face {k}: part {k}", fontsize=9)
    draw_mesh(axes[-1], result, faces)
    axes[-1].set_title("combined", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def diversity_figure(path: str | os.PathLike, embeddings: dict[str, dict[str, np.ndarray]]) -> None:
    """Paper Fig. 6: encodings per group as markers with their 2-sigma ellipses, one panel per projection."""
    from matplotlib.patches import Ellipse

    plt = pyplot()
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5 * len(embeddings), 4.4), squeeze=False)
    for ax, (name, groups) in zip(axes[0], embeddings.items()):
        for group, pts in groups.items():
            color = GROUP_COLORS[group]
            ax.scatter(pts[:, 0], pts[:, 1], s=8, color=color, alpha=0.6,
                       label=f"{group} ({len(pts)}), area {ellipse_area(pts):.3g}")
            if len(pts) >= 3:
                vals, vecs = np.linalg.eigh(np.cov(pts.T))
                angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
                ax.add_patch(Ellipse(pts.mean(axis=0), 4 * np.sqrt(max(vals[1], 0)), 4 * np.sqrt(max(vals[0], 0)),
                                     angle=angle, fill=False, color=color, lw=2))
        ax.set_title({"pca": "PCA", "tsne": "t-SNE"}[name])
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("encodings of train, test and part-synthesised faces (2-sigma ellipses)")
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- run report


def lwae_report(run, codec: PartCodec, dataset, split, steps: int = 7, n_pairs: int = 10, seed: int = 0) -> dict:
    """After training: local weights, part interpolation (first -> last test mesh, every part) and diversity
    figures in ``run/plots``; PLY meshes of the interpolation in ``run/meshes``; returns the numbers."""
    from morphable.explicit.nmf import hoyer_sparseness

    weights = np.asarray(codec.local_weights)
    faces = dataset.faces
    train, test = dataset.vertices[split.train], dataset.vertices[split.test]
    template = train.mean(axis=0)
    local_weights_figure(run.file("plots", "local_weights.png"), template, faces, weights)
    source, target = test[0], test[-1]
    rows = [interpolate_part(codec, source, target, k, steps) for k in range(weights.shape[1])]
    part_interpolation_figure(run.file("plots", "part_interpolation.png"), rows, range(len(rows)), faces, weights,
                              template, dataset.to_mm)
    for k, row in enumerate(rows):
        for i, mesh in enumerate(row):
            write_ply(run.file("meshes", f"part{k}_step{i:02d}.ply"), mesh, faces)
    codes = codec.encode_parts(test)
    sources, swapped = swap_decodings(codec.decode_parts, codes, random_pairs(len(test), n_pairs, seed))
    local = locality(sources, swapped, weights)
    local["displacement_mm"] = [d * dataset.to_mm for d in local.pop("displacement")]
    seams = border_roughness(sources, swapped, weights, faces)
    numbers, embeddings = diversity(codec, train, test, seed=seed)
    diversity_figure(run.file("plots", "diversity.png"), embeddings)
    regions = part_regions(weights)
    return {"parts": int(weights.shape[1]),
            "local_weights": {"hoyer_sparseness": hoyer_sparseness(weights).tolist(),
                              "region_fraction": [float((regions == k).mean()) for k in range(weights.shape[1])],
                              "unassigned_fraction": float((regions < 0).mean())},
            "locality": local, "seams": seams, "diversity": numbers}
