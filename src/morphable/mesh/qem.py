"""Quadric-error decimation that keeps a subset of the original vertices (CoMA semantics).

Down-sampling (CoMA ``generate_transform_matrices`` semantics, re-derived and vectorised):

* Every vertex carries the quadric ``Q_v = sum_f p_f p_f^T`` of the planes ``p_f = (n_f, -n_f . a_f)``
  of its incident faces (unit normals), plus, on an open boundary, the planes through each
  boundary edge perpendicular to its face (so boundaries keep their shape).
* Collapsing the edge ``(c, r)`` removes ``c`` and keeps ``r`` at its original position, at the
  cost ``r~^T (Q_c + Q_r) r~`` (``r~ = (r, 1)``); the kept vertex inherits ``Q_c + Q_r``.
* The collapses run in rounds. In each round every vertex ``c`` proposes its cheapest legal
  collapse; a proposal is accepted when its cost is the lowest among all proposals whose
  region (``c`` and its one-ring) overlaps its own. Accepted collapses touch disjoint stars,
  so they are independent and all of them are applied at once with array operations.
* A collapse is legal when: the edge is manifold and satisfies the link condition (the two
  endpoints share exactly as many neighbours as the edge has faces); a boundary vertex only
  slides along a boundary edge; no vertex loses its last face; the component keeps at least
  3 (open) or 4 (closed) vertices, so no component vanishes; and no face around ``c`` flips
  or degenerates (its normal keeps a positive cosine of at least ``min_cos`` with the old
  one and a non-zero area). Because small per-collapse rotations can add up, a moved face must
  also face the same side as the input surface: its normal has a positive dot product with the
  sum of the input's unit vertex normals at its corners. Only if no collapse passes this
  second test before the target is reached (tiny meshes, e.g. the last 4-8 vertices) is it
  dropped for the remaining collapses. Faces keep their orientation because indices are replaced in place.

The coarse mesh therefore references kept original vertices at their original positions,
with no unreferenced vertices, no degenerate or flipped faces and the same components.

Up-sampling: every fine vertex is mapped to the nearest point of the coarse surface of its own
component, with the barycentric weights of that point in its coarse triangle (non-negative,
summing to one; kept vertices map to themselves). Nearest triangles come from a ``cKDTree``
of triangle centroids with an exactness check (a triangle can only be nearer than the best
found distance ``d`` if its centroid lies within ``d + r_max``, ``r_max`` the largest
centroid-to-corner radius), so the result equals a brute-force search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals
from morphable.mesh.topology import (boundary_edges, boundary_mask, connected_components, face_normals, half_edges,
                                     vertex_faces)


@dataclass
class Decimation:
    """Result of :func:`decimate`.

    Attributes:
        kept: ``(V_c,)`` int64, increasing indices of the fine vertices that survive.
        faces: ``(F_c, 3)`` int64 coarse faces, indices into ``kept`` (coarse numbering).
    """

    kept: np.ndarray
    faces: np.ndarray


def component_minimum(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Component labels ``(V,)`` and the smallest size of every component ``(n_components,)``.

    A component can be decimated down to 3 vertices if it has an open boundary, else to 4
    (a tetrahedron); fewer would make it vanish or degenerate.
    """
    n_comp, labels = connected_components(faces, n_vertices)
    open_comp = np.zeros(n_comp, dtype=bool)
    open_comp[labels[boundary_edges(faces)[:, 0]]] = True
    return labels, np.where(open_comp, 3, 4).astype(np.int64)


def level_sizes(faces: np.ndarray, n_vertices: int, factors: tuple[int, ...] | list[int]) -> list[int]:
    """Vertex count of every level: ``V_{l+1} = max(ceil(V_l / f_l), min(m, V_l))``.

    ``m`` is the smallest size that keeps every component (3 vertices per open component, 4 per
    closed one); on the COMA template with factors ``(4, 4, 4, 4)``: 5023, 1256, 314, 79, 20.
    """
    minimum = int(component_minimum(faces, n_vertices)[1].sum())
    sizes = [int(n_vertices)]
    for f in factors:
        if int(f) < 1:
            raise MorphableError(f"decimation factors must be at least 1, got {f}")
        sizes.append(max(-(-sizes[-1] // int(f)), min(minimum, sizes[-1])))
    return sizes


def _plane_quadrics(vertices: np.ndarray, faces: np.ndarray, boundary_weight: float) -> np.ndarray:
    """Per-vertex quadrics ``(V, 4, 4)``: face planes, plus weighted boundary-edge planes."""
    n_vertices = len(vertices)
    normals = face_normals(vertices, faces)
    length = np.linalg.norm(normals, axis=1)
    unit = normals / np.where(length > 0, length, 1.0)[:, None]
    planes = np.concatenate([unit, -(unit * vertices[faces[:, 0]]).sum(1, keepdims=True)], axis=1)
    k_faces = (planes[:, :, None] * planes[:, None, :]).reshape(-1, 16)
    q = (vertex_faces(faces, n_vertices) != 0).astype(np.float64) @ k_faces
    if boundary_weight > 0:
        he = half_edges(faces)
        on_boundary = boundary_mask(faces)
        if on_boundary.any():
            face_of = np.tile(np.arange(len(faces)), 3)[on_boundary]
            a, b = vertices[he[on_boundary, 0]], vertices[he[on_boundary, 1]]
            m = np.cross(b - a, unit[face_of])
            m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-300)
            bp = np.concatenate([m, -(m * a).sum(1, keepdims=True)], axis=1)
            kb = boundary_weight * (bp[:, :, None] * bp[:, None, :]).reshape(-1, 16)
            for col in (0, 1):
                np.add.at(q, he[on_boundary, col], kb)
    return q.reshape(n_vertices, 4, 4)


def _segments(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened positions of CSR rows ``rows``: ``(positions, owner)`` with owner = index into ``rows``."""
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), lens)
    offsets = np.cumsum(lens) - lens
    positions = np.arange(lens.sum()) - np.repeat(offsets, lens) + np.repeat(starts, lens)
    return positions, owner


def decimate(vertices: np.ndarray, faces: np.ndarray, target: int, *, ordering: str = "qem", seed: int = 0,
             boundary_weight: float = 1.0, min_cos: float = 0.2,
             normals: np.ndarray | None = None) -> Decimation:
    """Decimate to exactly ``target`` vertices by edge collapses that keep original vertices.

    Args:
        vertices: ``(V, 3)`` float positions; faces ``(F, 3)`` int, every vertex referenced.
        target: number of vertices to keep, between the component minimum and ``V``.
        ordering: ``"qem"`` (quadric error, the method) or ``"random"`` (random priorities with
            the same legality rules: a baseline to measure what the quadrics buy).
        seed: random seed for ``ordering="random"``.
        boundary_weight: weight of the boundary-edge planes in the quadrics.
        min_cos: smallest allowed cosine between a face normal before and after a collapse.
        normals: ``(V, 3)`` reference vertex normals that moved faces must agree with (default:
            the area-weighted vertex normals of the input; a hierarchy passes the template's, so
            no level drifts away from the template's orientation).

    Raises:
        MorphableError: when no legal collapse is left before reaching ``target``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    cur = np.asarray(faces, dtype=np.int64).copy()
    n = len(v)
    if not 1 <= target <= n:
        raise MorphableError(f"cannot decimate {n} vertices to {target}")
    if ordering not in ("qem", "random"):
        raise ValueError(f"unknown ordering {ordering!r}")
    rng = np.random.default_rng(seed)
    quadric = _plane_quadrics(v, cur, boundary_weight)
    vh = np.concatenate([v, np.ones((n, 1))], axis=1)
    outer = (vh[:, :, None] * vh[:, None, :]).reshape(n, 16)
    labels, comp_min = component_minimum(cur, n)
    n_comp = len(comp_min)
    comp_alive = np.bincount(labels, minlength=n_comp)
    alive = np.ones(n, dtype=bool)
    n_alive = n
    scale = np.ptp(v, axis=0).max() if n else 1.0
    area_eps = 1e-10 * scale * scale
    ref_normals = vertex_normals(v, cur) if normals is None else np.asarray(normals, dtype=np.float64)
    while n_alive > target:
        chosen_c, chosen_r = _collapse_round(v, outer, cur, quadric, labels, comp_alive, comp_min,
                                             n_alive - target, ordering, rng, min_cos, area_eps, ref_normals)
        if not len(chosen_c) and ref_normals is not None:
            ref_normals = None
            continue
        if not len(chosen_c):
            raise MorphableError(
                f"cannot decimate to {target} vertices: stopped at {n_alive}, every remaining collapse "
                "would flip a face or change the topology (use smaller factors)")
        quadric[chosen_r] += quadric[chosen_c]
        remap = np.arange(n)
        remap[chosen_c] = chosen_r
        cur = remap[cur]
        cur = cur[(cur[:, 0] != cur[:, 1]) & (cur[:, 1] != cur[:, 2]) & (cur[:, 2] != cur[:, 0])]
        alive[chosen_c] = False
        comp_alive -= np.bincount(labels[chosen_c], minlength=n_comp)
        n_alive -= len(chosen_c)
    kept = np.nonzero(alive)[0]
    new_index = np.full(n, -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    return Decimation(kept=kept, faces=new_index[cur])


def _collapse_round(v: np.ndarray, outer: np.ndarray, cur: np.ndarray, quadric: np.ndarray, labels: np.ndarray,
                    comp_alive: np.ndarray, comp_min: np.ndarray, need: int, ordering: str,
                    rng: np.random.Generator, min_cos: float, area_eps: float,
                    ref_normals: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One round: legal proposals, independent local minima, capped; returns ``(removed, kept_into)``.

    ``outer (V, 16)`` holds the flattened ``v~ v~^T`` of every vertex (``v~ = (v, 1)``).
    """
    n = len(v)
    he = half_edges(cur)
    key = np.minimum(he[:, 0], he[:, 1]) * n + np.maximum(he[:, 0], he[:, 1])
    ukey, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    e0, e1 = ukey // n, ukey % n
    n_edges = len(ukey)
    # The opposite corner of half-edge k*F + f is faces[f, (k + 2) % 3]; it must keep another face.
    opposite = np.concatenate([cur[:, 2], cur[:, 0], cur[:, 1]])
    face_count = np.bincount(cur.ravel(), minlength=n)
    min_opposite = np.full(n_edges, np.iinfo(np.int64).max)
    np.minimum.at(min_opposite, inverse, face_count[opposite])
    adj = sp.csr_matrix((np.ones(2 * n_edges), (np.concatenate([e0, e1]), np.concatenate([e1, e0]))), shape=(n, n))
    common = np.asarray((adj @ adj)[e0, e1]).ravel()
    edge_ok = (counts <= 2) & (common == counts) & (min_opposite >= 2)
    on_boundary = np.zeros(n, dtype=bool)
    on_boundary[e0[counts == 1]] = True
    on_boundary[e1[counts == 1]] = True

    # CoMA: an edge collapses onto its cheaper endpoint; a boundary vertex only moves along the boundary.
    if ordering == "qem":
        # r~^T (Q_c + Q_r) r~ = <Q_c, r~ r~^T> + r~^T Q_r r~ (Frobenius product of flattened 4x4s).
        qflat = quadric.reshape(n, 16)
        qsum = qflat[e0] + qflat[e1]
        cost0 = np.einsum("nk,nk->n", qsum, outer[e0])
        cost1 = np.einsum("nk,nk->n", qsum, outer[e1])
    else:
        cost0 = rng.random(n_edges)
        cost1 = rng.random(n_edges)
    interior = counts == 2
    keep0 = (cost0 <= cost1) & ~(on_boundary[e1] & interior) | (on_boundary[e0] & interior)
    c = np.where(keep0, e1, e0)
    r = np.where(keep0, e0, e1)
    cost = np.where(keep0, cost0, cost1)
    ok = edge_ok & ~(on_boundary[c] & interior) & (comp_alive[labels[c]] > comp_min[labels[c]])
    c, r, cost = c[ok], r[ok], cost[ok]
    if not len(c):
        return c, r
    order = np.lexsort((cost, c))
    c, r, cost = c[order], r[order], cost[order]
    best = _cheapest_without_flips(v, cur, c, r, min_cos, area_eps, ref_normals)
    c, r, cost = c[best], r[best], cost[best]
    sel = _independent_minima(adj, c, cost)
    # Caps: no component below its minimum, and no more than needed in total.
    comp = labels[c[sel]]
    by_comp = np.argsort(comp, kind="stable")
    comp_sorted = comp[by_comp]
    within = np.empty(len(sel), dtype=np.int64)
    within[by_comp] = np.arange(len(sel)) - np.searchsorted(comp_sorted, comp_sorted, side="left")
    sel = sel[within < (comp_alive - comp_min)[comp]][:need]
    return c[sel], r[sel]


def _cheapest_without_flips(v: np.ndarray, cur: np.ndarray, c: np.ndarray, r: np.ndarray, min_cos: float,
                            area_eps: float, ref_normals: np.ndarray | None) -> np.ndarray:
    """For proposals sorted by ``(c, cost)``, the index of the cheapest one per ``c`` that flips no face.

    Moving ``c`` onto ``r`` changes the faces around ``c`` that do not contain ``r`` (those that do
    are removed); each must keep ``n_old . n_new >= min_cos |n_old| |n_new|``, a non-zero area and,
    when ``ref_normals (V, 3)`` is given, ``n_new . sum_corners ref_normals > 0``.
    The cheapest proposal is tested first and the next one only where it fails.
    """
    n = len(v)
    normals = face_normals(v, cur)
    norm_len = np.linalg.norm(normals, axis=1)
    vf = vertex_faces(cur, n)
    if ref_normals is not None:
        face_ref = ref_normals[cur[:, 0]] + ref_normals[cur[:, 1]] + ref_normals[cur[:, 2]]
    block_start = np.nonzero(np.r_[True, c[1:] != c[:-1]])[0]
    block_end = np.r_[block_start[1:], len(c)]
    trial = block_start.copy()
    chosen = []
    while len(trial):
        pos, owner = _segments(vf.indptr, c[trial])
        fids = vf.indices[pos]
        tri = cur[fids]
        cr, rr = c[trial][owner][:, None], r[trial][owner][:, None]
        moved = np.where(tri == cr, rr, tri)
        n_new = face_normals(v, moved)
        len_new = np.linalg.norm(n_new, axis=1)
        good = ((normals[fids] * n_new).sum(1) >= min_cos * norm_len[fids] * len_new) & (len_new > area_eps)
        if ref_normals is not None:
            ref = face_ref[fids] + ref_normals[r[trial]][owner] - ref_normals[c[trial]][owner]
            good &= (n_new * ref).sum(1) > 0
        good |= (tri == rr).any(axis=1)
        passed = np.bincount(owner, weights=~good, minlength=len(trial)) == 0
        chosen.append(trial[passed])
        trial = trial[~passed] + 1
        block_end = block_end[~passed]
        trial, block_end = trial[trial < block_end], block_end[trial < block_end]
    return np.sort(np.concatenate(chosen))


def _independent_minima(adj: sp.csr_matrix, c: np.ndarray, cost: np.ndarray, passes: int = 3) -> np.ndarray:
    """Indices of proposals to apply together, cheapest first.

    The region of a proposal is ``c`` with its one-ring. A proposal is taken when its cost is the
    lowest among all still-open proposals whose regions overlap its own; regions of taken
    proposals are blocked and the rest compete again (``passes`` times), so taken regions are
    pairwise disjoint and the collapses are independent.
    """
    n, m = adj.shape[0], len(c)
    rank = np.empty(m, dtype=np.int64)
    rank[np.argsort(cost, kind="stable")] = np.arange(m)
    pos, owner = _segments(adj.indptr, c)
    region = np.concatenate([c, adj.indices[pos]])
    region_owner = np.concatenate([np.arange(m), owner])
    blocked = np.zeros(n, dtype=bool)
    open_ = np.ones(m, dtype=bool)
    is_taken = np.zeros(m, dtype=bool)
    taken = []
    for _ in range(passes):
        hit = np.bincount(region_owner, weights=blocked[region], minlength=m) > 0
        open_ &= ~hit
        live = open_[region_owner]
        vmin = np.full(n, m, dtype=np.int64)
        np.minimum.at(vmin, region[live], rank[region_owner[live]])
        lost = np.bincount(region_owner, weights=vmin[region] != rank[region_owner], minlength=m) > 0
        sel = np.nonzero(open_ & ~lost)[0]
        if not len(sel):
            break
        taken.append(sel)
        open_[sel] = False
        is_taken[sel] = True
        blocked[region[is_taken[region_owner]]] = True
    sel = np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)
    return sel[np.argsort(rank[sel])]


def down_matrix(kept: np.ndarray, n_fine: int) -> sp.csr_matrix:
    """Selection matrix ``D (V_c, V_f)`` CSR: ``D[i, kept[i]] = 1`` (rows in increasing original index)."""
    kept = np.asarray(kept, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(kept)), (np.arange(len(kept)), kept)), shape=(len(kept), n_fine))


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights ``(N, 3)`` of the point of triangle ``(a, b, c)`` nearest to ``p`` (all ``(N, 3)``).

    The closest point is ``w0 a + w1 b + w2 c`` with ``w >= 0`` and ``sum w = 1`` (Voronoi-region
    test: three vertex regions, three edge regions, the interior).
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.clip(num / np.where(den != 0, den, 1.0), 0.0, 1.0)

    t_ab = ratio(d1, d1 - d3)
    t_ac = ratio(d2, d2 - d6)
    t_bc = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    total = va + vb + vc
    total = np.where(total != 0, total, 1.0)
    inside_v, inside_w = vb / total, vc / total
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    conditions = [
        (d1 <= 0) & (d2 <= 0),
        (d3 >= 0) & (d4 <= d3),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6),
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
    ]
    w1 = np.select(conditions, [zero, one, t_ab, zero, zero, 1 - t_bc], inside_v)
    w2 = np.select(conditions, [zero, zero, zero, one, t_ac, t_bc], inside_w)
    w = np.stack([1.0 - w1 - w2, w1, w2], axis=1)
    w = np.clip(w, 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def nearest_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                    point_labels: np.ndarray | None = None, face_labels: np.ndarray | None = None,
                    k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact nearest surface point for every query point, optionally within the same label.

    Candidates are the ``k`` triangles with the nearest centroids; the best distance ``d`` found
    is then made exact: a triangle of centroid-to-corner radius at most ``rho`` can only be
    nearer than ``d`` if its centroid lies within ``d + rho``. Triangles are grouped by radius
    (each group spans a factor of 2) so the check stays local even next to a few huge triangles.
    Labels are a fourth coordinate scaled far beyond the mesh size, so a point never reaches a
    triangle of another label.

    Args:
        points: ``(N, 3)`` queries; vertices ``(V, 3)``, faces ``(F, 3)`` the surface.
        point_labels, face_labels: ``(N,)`` and ``(F,)`` ints; a point only looks at faces with
            its label (e.g. connected component). Every label used by a point needs a face.
        k: number of centroid neighbours tried before the exactness check.

    Returns:
        ``face (N,)`` int64, ``weights (N, 3)`` barycentric (>= 0, sum 1) and ``distance (N,)``.
    """
    p = np.asarray(points, dtype=np.float64)
    verts = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n_points = len(p)
    tri = verts[faces]
    centroid = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centroid[:, None], axis=2).max(axis=1)
    lo = np.minimum(p.min(axis=0), verts.min(axis=0))
    hi = np.maximum(p.max(axis=0), verts.max(axis=0))
    sep = 4.0 * (float(np.linalg.norm(hi - lo)) + float(radius.max()) + 1.0)
    pl = np.zeros(n_points) if point_labels is None else np.asarray(point_labels, dtype=np.float64)
    fl = np.zeros(len(faces)) if face_labels is None else np.asarray(face_labels, dtype=np.float64)
    centroid4 = np.concatenate([centroid, (fl * sep)[:, None]], axis=1)
    query = np.concatenate([p, (pl * sep)[:, None]], axis=1)

    def evaluate(pi: np.ndarray, fi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = closest_points_on_triangles(p[pi], tri[fi, 0], tri[fi, 1], tri[fi, 2])
        q = np.einsum("nk,nkd->nd", w, tri[fi])
        return w, np.linalg.norm(q - p[pi], axis=1)

    kk = min(k, len(faces))
    _, cand = cKDTree(centroid4).query(query, k=kk)
    cand = cand.reshape(n_points, kk)
    w, d = evaluate(np.repeat(np.arange(n_points), kk), cand.ravel())
    d = d.reshape(n_points, kk)
    j = np.argmin(d, axis=1)
    rows = np.arange(n_points)
    best_face, best_w, best_d = cand[rows, j], w.reshape(n_points, kk, 3)[rows, j], d[rows, j]
    if kk == len(faces):
        return best_face, best_w, best_d
    # Exactness check, grouped by triangle radius (factor 2 per group) and by the search radius
    # of the points (factor 2 per bucket), so each pair search uses a tight common radius.
    group = np.floor(np.log2(np.maximum(radius, 1e-300) / max(float(radius.min()), 1e-300))).astype(np.int64)
    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        rho = float(radius[members].max())
        tree = cKDTree(centroid4[members])
        reach = best_d + rho
        bucket = np.floor(np.log2(reach / rho)).astype(np.int64)
        for b in np.unique(bucket):
            pts = np.nonzero(bucket == b)[0]
            pairs = cKDTree(query[pts]).sparse_distance_matrix(tree, float(reach[pts].max()), output_type="ndarray")
            pi, fi = pts[pairs["i"]], members[pairs["j"]]
            near = pairs["v"] - radius[fi] < best_d[pi]
            pi, fi = pi[near], fi[near]
            if not len(pi):
                continue
            w2, d2 = evaluate(pi, fi)
            order = np.lexsort((d2, pi))
            first = order[np.r_[True, pi[order][1:] != pi[order][:-1]]]
            better = first[d2[first] < best_d[pi[first]]]
            best_face[pi[better]] = fi[better]
            best_w[pi[better]] = w2[better]
            best_d[pi[better]] = d2[better]
    return best_face, best_w, best_d


def up_matrix(fine_vertices: np.ndarray, fine_faces: np.ndarray, kept: np.ndarray,
              coarse_faces: np.ndarray) -> sp.csr_matrix:
    """Barycentric up-sampling ``U (V_f, V_c)`` CSR.

    Row ``i`` holds the weights of the point of the coarse surface (same connected component as
    fine vertex ``i``) nearest to fine vertex ``i``: at most 3 non-zeros, all positive, summing
    to 1; ``U[kept[j], j] = 1``. Hence ``U D`` reproduces kept vertices exactly and, for any field
    ``x``, ``(U D x)_i`` is the linear interpolation of ``x`` at the projection of vertex ``i``.
    """
    fine = np.asarray(fine_vertices, dtype=np.float64)
    n_fine = len(fine)
    _, labels = connected_components(fine_faces, n_fine)
    coarse_labels = labels[kept]
    face_idx, w, _ = nearest_on_mesh(fine, fine[kept], coarse_faces, labels, coarse_labels[coarse_faces[:, 0]])
    cols = coarse_faces[face_idx]
    is_kept = np.zeros(n_fine, dtype=bool)
    is_kept[kept] = True
    w[is_kept] = 0.0
    cols[is_kept] = 0
    w[kept, 0] = 1.0
    cols[kept, 0] = np.arange(len(kept))
    rows = np.repeat(np.arange(n_fine), 3)
    up = sp.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(n_fine, len(kept)))
    up.eliminate_zeros()
    up.sort_indices()
    return up
