"""Spiral index sequences for spiral convolutions (SpiralNet++ and Neural3DMM styles).

A spiral of vertex ``s`` lists ``s``, then its one-ring, then its two-ring, ... Within a ring
the order is rotational and consistent across the mesh:

* ring 1 is the one-ring of ``s`` in counter-clockwise order (seen from outside, i.e. following
  the face orientation: in face ``(a, b, c)`` the ring of ``a`` goes from ``b`` to ``c``), starting
  at a chosen neighbour;
* ring ``k + 1`` is built by visiting the vertices ``u`` of ring ``k`` in order and listing each
  ``u``'s own counter-clockwise one-ring, starting right after the vertex through which ``u`` was
  reached, keeping only vertices not seen before.

On an open boundary a one-ring is a path rather than a cycle; it is listed from the end that has
no predecessor and treated as cyclic afterwards. All rings of all vertices are built at once
with array operations (no per-vertex Python loop).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from morphable.errors import MorphableError
from morphable.mesh.topology import adjacency, connected_components, edges

SPIRAL_STYLES = ("spiralnet", "neural3dmm")


def ordered_rings(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Counter-clockwise one-rings: ``rings (V, max_degree)`` int64 padded with -1, ``degree (V,)``.

    A closed ring starts at its smallest neighbour index; an open (boundary) ring starts at the
    neighbour that has no predecessor. Neighbours a non-manifold vertex cannot reach by walking
    its faces are appended in index order.
    """
    f = np.asarray(faces, dtype=np.int64)
    n = int(n_vertices)
    center = f.T.ravel()
    frm = f[:, [1, 2, 0]].T.ravel()
    to = f[:, [2, 0, 1]].T.ravel()
    key = center * n + frm
    order = np.argsort(key, kind="stable")
    key_sorted, to_sorted = key[order], to[order]
    adj = adjacency(f, n)
    degree = np.diff(adj.indptr)
    max_degree = int(degree.max()) if n and len(f) else 0
    # Open rings start where a 'from' vertex is never a 'to' vertex around the same center.
    opens = ~np.isin(key, center * n + to)
    start = np.full(n, n, dtype=np.int64)
    np.minimum.at(start, center[opens], frm[opens])
    closed = (start == n) & (degree > 0)
    start[closed] = adj.indices[adj.indptr[:-1][closed]]
    start[start == n] = -1
    rings = np.full((n, max(max_degree, 1)), -1, dtype=np.int64)
    rings[:, 0] = start
    cur = start.copy()
    active = start >= 0
    for step in range(1, max_degree):
        query = np.where(active, np.arange(n) * n + cur, -1)
        pos = np.minimum(np.searchsorted(key_sorted, query), len(key_sorted) - 1)
        found = active & (key_sorted[pos] == query)
        nxt = np.where(found, to_sorted[pos], -1)
        active = found & (nxt != start)
        rings[active, step] = nxt[active]
        cur = nxt
    filled = (rings >= 0).sum(axis=1)
    for v in np.nonzero(filled < degree)[0]:
        have = set(rings[v, : filled[v]].tolist())
        extra = [w for w in adj.indices[adj.indptr[v]: adj.indptr[v + 1]] if w not in have]
        rings[v, filled[v]: filled[v] + len(extra)] = extra
    return rings, degree


def _ring_sequences(rings: np.ndarray, degree: np.ndarray, start: np.ndarray, max_rings: int,
                    enough: int) -> tuple[np.ndarray, np.ndarray]:
    """Spirals of all vertices: ``(V, W)`` int64 padded with -1 and their lengths ``(V,)``.

    Args:
        rings, degree: from :func:`ordered_rings`.
        start: ``(V,)`` neighbour at which ring 1 of every vertex starts.
        max_rings: number of rings to walk at most.
        enough: stop growing a spiral once it holds at least this many entries (vertex included).
    """
    n, width = rings.shape
    sources = np.arange(n)
    j0 = np.argmax(rings == start[:, None], axis=1)
    # Ring 1: rotated one-ring of every source.
    t = np.arange(width)
    cols = (j0[:, None] + t[None, :]) % np.maximum(degree, 1)[:, None]
    valid = t[None, :] < degree[:, None]
    src = np.repeat(sources, width)[valid.ravel()]
    ver = np.take_along_axis(rings, cols, axis=1)[valid]
    rank = np.tile(t, n)[valid.ravel()]
    parent = src.copy()
    all_src, all_ver = [sources, src], [sources, ver]
    visited = np.sort(np.concatenate([sources * n + sources, src * n + ver]))
    count = 1 + degree.copy()
    for _ in range(1, max_rings):
        grow = count[src] < enough
        src, ver, rank, parent = src[grow], ver[grow], rank[grow], parent[grow]
        if not len(src):
            break
        row = rings[ver]
        jp = np.argmax(row == parent[:, None], axis=1)
        dv = degree[ver]
        t = np.arange(1, width)
        cols = (jp[:, None] + t[None, :]) % dv[:, None]
        ok = t[None, :] < dv[:, None]
        cand = np.take_along_axis(row, cols, axis=1)[ok]
        c_src = np.repeat(src, width - 1)[ok.ravel()]
        c_key = (np.repeat(rank, width - 1) * width + np.tile(t, len(src)))[ok.ravel()]
        c_par = np.repeat(ver, width - 1)[ok.ravel()]
        pair = c_src * n + cand
        pos = np.minimum(np.searchsorted(visited, pair), len(visited) - 1)
        new = visited[pos] != pair
        pair, c_src, cand, c_key, c_par = pair[new], c_src[new], cand[new], c_key[new], c_par[new]
        order = np.lexsort((c_key, pair))
        first = order[np.r_[True, pair[order][1:] != pair[order][:-1]]] if len(order) else order
        order = first[np.lexsort((c_key[first], c_src[first]))]
        src, ver, parent = c_src[order], cand[order], c_par[order]
        if not len(src):
            break
        group_start = np.searchsorted(src, src, side="left")
        rank = np.arange(len(src)) - group_start
        all_src.append(src)
        all_ver.append(ver)
        visited = np.sort(np.concatenate([visited, src * n + ver]))
        count += np.bincount(src, minlength=n)
    s_all = np.concatenate(all_src)
    v_all = np.concatenate(all_ver)
    order = np.argsort(s_all, kind="stable")
    s_all, v_all = s_all[order], v_all[order]
    col = np.arange(len(s_all)) - np.searchsorted(s_all, s_all, side="left")
    lengths = np.bincount(s_all, minlength=n)
    out = np.full((n, int(lengths.max())), -1, dtype=np.int64)
    out[s_all, col] = v_all
    return out, lengths


def spiralnet_spirals(faces: np.ndarray, n_vertices: int, length: int = 9, dilation: int = 1) -> np.ndarray:
    """SpiralNet++ spirals ``(V, length)`` int64: entry 0 is the vertex, then rings in CCW order.

    The spiral is grown to ``length * dilation`` entries and every ``dilation``-th entry is kept
    (``seq[:length * dilation][::dilation]``). Ring 1 starts at the first neighbour of
    :func:`ordered_rings`. When a component runs out of rings, the rest is filled with the
    vertices nearest in index that are not in the spiral yet; a mesh with fewer than
    ``length * dilation`` vertices repeats its spiral.
    """
    if length < 1 or dilation < 1:
        raise ValueError("spiral length and dilation must be at least 1")
    n = int(n_vertices)
    need = length * dilation
    rings, degree = ordered_rings(faces, n)
    seq, lens = _ring_sequences(rings, degree, rings[:, 0], max_rings=n, enough=need)
    if seq.shape[1] < need:
        seq = np.concatenate([seq, np.full((n, need - seq.shape[1]), -1, dtype=np.int64)], axis=1)
    seq = seq[:, :need]
    short = np.nonzero(lens < need)[0]
    if len(short):
        points = np.arange(n, dtype=np.float64)[:, None]
        k = min(n, need)
        _, near = cKDTree(points).query(points[short], k=k)
        near = near.reshape(len(short), k)
        for i, v in enumerate(short):
            have = seq[v, : lens[v]].tolist()
            extra = [w for w in near[i].tolist() if w not in set(have)]
            filled = (have + extra)[:need]
            seq[v] = np.resize(np.asarray(filled, dtype=np.int64), need)
    return np.ascontiguousarray(seq[:, ::dilation])


def default_reference_vertices(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One reference vertex per connected component: the vertex with the largest ``z``.

    For a face looking along ``+z`` this is the nose tip, the reference Neural3DMM uses.
    """
    v = np.asarray(vertices, dtype=np.float64)
    n_comp, labels = connected_components(faces, len(v))
    order = np.lexsort((-v[:, 2], labels))
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    return order[first]


def neural3dmm_spirals(vertices: np.ndarray, faces: np.ndarray, hops: int = 1, dilation: int = 1,
                       reference_vertices: np.ndarray | None = None, nb_stds: float = 2.0) -> np.ndarray:
    """Neural3DMM spirals ``(V, L)`` int64, padded with the dummy index ``V``.

    Every spiral holds the vertex and all vertices of its ``hops`` rings; ring 1 starts at the
    neighbour on the shortest path (Euclidean edge lengths) towards the reference vertex of its
    component (the reference vertex itself starts at its nearest neighbour). Dilation keeps
    ``seq[:1] + seq[1::dilation]``. ``L = int(mean + nb_stds * std)`` of the spiral lengths;
    longer spirals are truncated, shorter ones padded with ``V`` (a dummy vertex whose features
    are zero in the models).
    """
    if hops < 1 or dilation < 1:
        raise ValueError("spiral hops and dilation must be at least 1")
    v = np.asarray(vertices, dtype=np.float64)
    n = len(v)
    refs = default_reference_vertices(v, faces) if reference_vertices is None else np.asarray(reference_vertices)
    e = edges(faces)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    graph = sp.csr_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
    _, pred, _ = dijkstra(graph, directed=False, indices=refs, min_only=True, return_predecessors=True)
    rings, degree = ordered_rings(faces, n)
    start = pred.astype(np.int64)
    nearest = np.where(rings >= 0, np.linalg.norm(v[np.maximum(rings, 0)] - v[:, None], axis=2), np.inf)
    no_pred = start < 0
    start[no_pred] = rings[no_pred, np.argmin(nearest[no_pred], axis=1)]
    seq, lens = _ring_sequences(rings, degree, start, max_rings=hops, enough=np.iinfo(np.int64).max)
    seq = np.concatenate([seq[:, :1], seq[:, 1::dilation]], axis=1)
    lens = 1 + (lens - 1 + dilation - 1) // dilation
    size = int(lens.mean() + nb_stds * lens.std())
    seq = seq[:, :size] if seq.shape[1] >= size else np.pad(seq, ((0, 0), (0, size - seq.shape[1])), constant_values=-1)
    return np.where(seq < 0, n, seq)


def _per_level(value: int | Sequence[int], n_levels: int, name: str) -> list[int]:
    values = [int(value)] * n_levels if np.isscalar(value) else [int(x) for x in value]
    if len(values) != n_levels:
        raise MorphableError(f"{name} needs one value per level ({n_levels}), got {len(values)}")
    if min(values) < 1:
        raise MorphableError(f"{name} values must be at least 1, got {values}")
    return values


def spiral_settings(n_levels: int, style: str = "spiralnet", length: int | Sequence[int] = 9,
                    dilation: int | Sequence[int] = 1, hops: int | Sequence[int] = 1) -> dict[str, Any]:
    """The spiral settings of a hierarchy, one value per level, as :func:`level_spirals` takes them.

    ``style`` ``"spiralnet"`` uses ``length`` and ``dilation`` (``spiral_hops`` is None);
    ``"neural3dmm"`` uses ``hops`` and ``dilation`` (``spiral_length`` is None). Each value is one
    number or one per level. Returns ``{"spiral_style", "spiral_length", "spiral_dilation",
    "spiral_hops"}``; an unknown style or a bad value raises :class:`MorphableError`.
    """
    if style not in SPIRAL_STYLES:
        raise MorphableError(f"unknown spiral style {style!r} (choose from {', '.join(SPIRAL_STYLES)})")
    spiralnet = style == "spiralnet"
    return {"spiral_style": style,
            "spiral_length": _per_level(length, n_levels, "spiral_length") if spiralnet else None,
            "spiral_dilation": _per_level(dilation, n_levels, "spiral_dilation"),
            "spiral_hops": None if spiralnet else _per_level(hops, n_levels, "spiral_hops")}


def level_spirals(vertices: Sequence[np.ndarray], faces: Sequence[np.ndarray], settings: dict[str, Any]
                  ) -> list[np.ndarray]:
    """Spiral indices of every level of a hierarchy, the ones the spiral autoencoders train with.

    Args:
        vertices, faces: per level ``(V_l, 3)`` and ``(F_l, 3)``.
        settings: from :func:`spiral_settings`. SpiralNet++: :func:`spiralnet_spirals` ``(V_l, L_l)``;
            Neural3DMM: :func:`neural3dmm_spirals` ``(V_l, L_l)`` padded with ``V_l``, towards the
            default reference vertex of each component of that level.
    """
    out = []
    for level, (v, f) in enumerate(zip(vertices, faces)):
        dilation = settings["spiral_dilation"][level]
        if settings["spiral_style"] == "spiralnet":
            out.append(spiralnet_spirals(f, len(v), settings["spiral_length"][level], dilation))
        else:
            out.append(neural3dmm_spirals(v, f, settings["spiral_hops"][level], dilation))
    return out
