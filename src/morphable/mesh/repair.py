"""Repair of real-scan triangle meshes: what can be removed safely is removed, the rest is reported.

:func:`repair_mesh` does, in order:

1. drops **degenerate** faces (a repeated corner index, or zero area ``|(b - a) x (c - a)| = 0``);
2. drops **duplicate** faces (the same three corners in any order; the first one is kept);
3. drops **unreferenced** vertices, keeping ``vertex_map`` (new index -> old index);
4. **re-orients** every component whose faces are inconsistently oriented: a breadth-first traversal
   over faces sharing a manifold edge flips each face so the shared edge runs in opposite directions
   in the two faces (:func:`orient_components`); a component that needed flips is then turned so its
   signed volume ``(1/6) sum_f (a - c) . ((b - a) x (c - a))`` (cones from its bounding-box centre
   ``c``) is positive, i.e. outward. Consistently oriented components are never flipped;
5. **detects** non-manifold edges (three or more faces) and boundary loops (open edges chained into
   cycles, :func:`boundary_loops`); they are kept and reported.

:class:`RepairReport` says what was found and what was done (:meth:`RepairReport.warning`, one line)
and which inside / outside test the mesh supports (:meth:`RepairReport.sign`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order
from scipy.sparse.csgraph import connected_components as _cc

from morphable.mesh.topology import boundary_mask, edge_report, face_normals, half_edges

LARGE_HOLE_FRACTION = 2.0
"""A boundary loop longer than this multiple of the bounding-box diagonal is a large hole: the inside /
outside of the surface is then not defined well enough to trust a sign far from it. The neck opening of a
head is about 1.4 diagonals (ICT-FaceKit skin: 1.44) and is closed well by the winding number's cap; the rim
of a face-only mask or of a flat sheet is well over 2."""


def degenerate_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: the face repeats a corner or has zero area."""
    f = np.asarray(faces, dtype=np.int64)
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
    return repeated | ~(np.abs(face_normals(vertices, f)).sum(axis=1) > 0)


def duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: the face has the same corner set as an earlier face (orientation ignored)."""
    key = np.sort(np.asarray(faces, dtype=np.int64), axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    out = np.ones(len(key), dtype=bool)
    out[first] = False
    return out


def remove_unreferenced_vertices(vertices: np.ndarray, faces: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop vertices no face uses: ``(vertices (V', 3), faces (F, 3) renumbered, vertex_map (V',))``
    with ``vertex_map[i]`` the old index of new vertex ``i`` (increasing, so the order is kept)."""
    f = np.asarray(faces, dtype=np.int64)
    used = np.zeros(len(vertices), dtype=bool)
    used[f.reshape(-1)] = True
    vertex_map = np.nonzero(used)[0]
    old_to_new = np.full(len(vertices), -1, dtype=np.int64)
    old_to_new[vertex_map] = np.arange(len(vertex_map))
    return np.asarray(vertices)[vertex_map], old_to_new[f], vertex_map


def _manifold_face_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces sharing an edge with exactly two incident faces: ``(f, g, same_direction)`` per such edge,
    ``same_direction`` True when both faces traverse the shared edge the same way (inconsistent)."""
    he = half_edges(faces)
    n_faces = len(faces)
    n = int(he.max()) + 1
    key = np.minimum(he[:, 0], he[:, 1]) * n + np.maximum(he[:, 0], he[:, 1])
    order = np.argsort(key, kind="stable")
    _, start, counts = np.unique(key[order], return_index=True, return_counts=True)
    pair = start[counts == 2]
    h1, h2 = order[pair], order[pair + 1]
    return h1 % n_faces, h2 % n_faces, he[h1, 0] == he[h2, 0]


def orient_components(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Consistent orientation per component of the manifold face adjacency (see the module docstring):
    ``(faces (F, 3), number of faces flipped)``; ``faces`` without duplicate or degenerate faces (see
    :func:`repair_mesh`).

    The parity of face ``f`` relative to its component's root is the XOR of ``same_direction`` along
    its breadth-first tree path; it is found for all faces at once by pointer jumping (``O(F log depth)``).
    """
    f = np.asarray(faces, dtype=np.int64)
    n_faces = len(f)
    a, b, same = _manifold_face_pairs(f)
    graph = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n_faces, n_faces))
    n_comp, labels = _cc(graph, directed=False)
    roots = np.unique(labels, return_index=True)[1]
    # one traversal from a virtual node n_faces joined to every component's first face
    a, b = np.r_[a, roots], np.r_[b, np.full(len(roots), n_faces)]
    relation = np.r_[same, np.zeros(len(roots), dtype=bool)].astype(np.int8) + 1
    rows, cols = np.r_[a, b], np.r_[b, a]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_faces + 1, n_faces + 1))
    flip_rel = sp.csr_matrix((np.r_[relation, relation], (rows, cols)), shape=(n_faces + 1, n_faces + 1))
    _, parent = breadth_first_order(graph, n_faces, directed=False, return_predecessors=True)
    parent[n_faces] = n_faces
    parity = np.zeros(n_faces + 1, dtype=bool)
    parity[:n_faces] = np.asarray(flip_rel[np.arange(n_faces), parent[:n_faces]]).ravel() == 2
    while (parent != parent[parent]).any():
        parity = parity ^ parity[parent]
        parent = parent[parent]
    parity = parity[:n_faces]
    if not parity.any():
        return f, 0
    out = f.copy()
    out[parity] = out[parity, ::-1]
    needed = np.zeros(n_comp, dtype=bool)
    needed[labels[parity]] = True
    corners = np.asarray(vertices, dtype=np.float64)[out]  # (F, 3, 3)
    low = np.full((n_comp, 3), np.inf)
    high = np.full((n_comp, 3), -np.inf)
    np.minimum.at(low, labels, corners.min(axis=1))
    np.maximum.at(high, labels, corners.max(axis=1))
    cones = np.einsum("ij,ij->i", corners[:, 0] - (low + high)[labels] / 2, face_normals(vertices, out)) / 6
    inward = needed & (np.bincount(labels, weights=cones, minlength=n_comp) < 0)
    out[inward[labels]] = out[inward[labels], ::-1]
    return out, int((out != f).any(axis=1).sum())


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The open boundary as vertex cycles: each loop ``(L,)`` lists the vertices in order (a chain that ends
    where the boundary meets a non-manifold edge, as around a fin, is returned as it is).

    Open edges (one incident face) are chained at their shared vertices; at a vertex where several loops
    touch the chain takes the first unused edge, so such loops may be merged (their total length is kept).
    """
    open_edges = half_edges(faces)[boundary_mask(faces)]
    if len(open_edges) == 0:
        return []
    neighbours: dict[int, list[int]] = {}
    for i, j in open_edges.tolist():
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    used: set[tuple[int, int]] = set()
    loops = []
    for i, j in open_edges.tolist():
        if (min(i, j), max(i, j)) in used:
            continue
        loop, cur = [i], j
        used.add((min(i, j), max(i, j)))
        while cur != i:
            loop.append(cur)
            step = next((k for k in neighbours[cur] if (min(cur, k), max(cur, k)) not in used), None)
            if step is None:
                break
            used.add((min(cur, step), max(cur, step)))
            cur = step
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def loop_length(vertices: np.ndarray, loop: np.ndarray) -> float:
    """Length of the closed polygon ``vertices[loop]``."""
    p = np.asarray(vertices, dtype=np.float64)[loop]
    return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_mesh` found and did. Lengths are relative to the bounding-box diagonal."""

    degenerate_faces: int
    duplicate_faces: int
    unreferenced_vertices: int
    flipped_faces: int
    nonmanifold_edges: int
    inconsistent_edges: int  # manifold edges run the same way by both faces after re-orientation
    boundary_loops: int
    longest_boundary: float

    @property
    def large_holes(self) -> bool:
        return self.longest_boundary > LARGE_HOLE_FRACTION

    @property
    def closed(self) -> bool:
        return self.boundary_loops == 0 and self.nonmanifold_edges == 0 and self.inconsistent_edges == 0

    def sign(self) -> str:
        """The inside / outside test the repaired mesh supports: ``"pseudonormal"`` (closed, manifold,
        consistent: exact), ``"auto"`` (open or non-manifold, consistent, small holes: winding number far
        and near non-manifold edges, local side near the rest, see
        :func:`morphable.mesh.distance.signed_distance`), ``"winding"`` (still inconsistent after
        re-orientation, e.g. non-orientable: generalised winding number everywhere) or ``"untrusted"``
        (large holes)."""
        if self.large_holes:
            return "untrusted"
        if self.inconsistent_edges:
            return "winding"
        return "pseudonormal" if self.closed else "auto"

    def found(self) -> list[str]:
        """The defects, in words."""
        items = [(self.degenerate_faces, "degenerate faces (removed)"),
                 (self.duplicate_faces, "duplicate faces (removed)"),
                 (self.unreferenced_vertices, "unreferenced vertices (removed)"),
                 (self.flipped_faces, "inconsistently oriented faces (flipped)"),
                 (self.nonmanifold_edges, "non-manifold edges (kept)"),
                 (self.inconsistent_edges, "edges left inconsistently oriented (kept)")]
        out = [f"{n} {what}" for n, what in items if n]
        if self.boundary_loops:
            out.append(f"{self.boundary_loops} boundary loops (longest {self.longest_boundary:.2f} of the "
                       "bounding-box diagonal)")
        return out

    def warning(self, name: str, sign_use: str) -> str | None:
        """One line for stderr, or None for a mesh without defects. ``sign_use`` says what the caller does
        about inside / outside (e.g. ``"signs from winding numbers"``)."""
        found = self.found()
        if not found:
            return None
        return f"morphable: warning: {name}: {', '.join(found)}; {sign_use}"


@dataclass(frozen=True)
class RepairedMesh:
    """``vertices (V', 3)``, ``faces (F', 3)``, ``vertex_map (V',)`` (new -> old vertex) and the report."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_map: np.ndarray
    report: RepairReport


def repair_mesh(vertices: np.ndarray, faces: np.ndarray, orient: bool = True) -> RepairedMesh:
    """Repair ``vertices (V, 3)``, ``faces (F, 3)`` as the module docstring says. A clean mesh comes back
    unchanged (same arrays' values, identity ``vertex_map``). ``orient=False`` skips step 4."""
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    degenerate = degenerate_faces(V, F)
    F1 = F[~degenerate]
    duplicate = duplicate_faces(F1)
    F2 = F1[~duplicate]
    V3, F3, vertex_map = remove_unreferenced_vertices(V, F2)
    F4, flipped = orient_components(V3, F3) if orient and len(F3) else (F3, 0)
    edges = edge_report(F4, len(V3))
    inconsistent = int(_manifold_face_pairs(F4)[2].sum()) if len(F4) else 0
    loops = boundary_loops(F4) if edges.n_open_edges else []
    diagonal = float(np.linalg.norm(np.ptp(V3, axis=0))) if len(V3) else 0.0
    longest = max((loop_length(V3, loop) for loop in loops), default=0.0) / diagonal if diagonal > 0 else 0.0
    report = RepairReport(int(degenerate.sum()), int(duplicate.sum()), len(V) - len(V3), flipped,
                          edges.n_nonmanifold_edges, inconsistent, len(loops), longest)
    return RepairedMesh(V3, F4, vertex_map, report)


def repair_and_warn(name: str, vertices: np.ndarray, faces: np.ndarray,
                    action: str | Callable[[RepairReport], str], orient: bool = True) -> RepairedMesh:
    """:func:`repair_mesh`, then one warning line on stderr (:meth:`RepairReport.warning`) when something was
    found; ``action`` says what the caller does with the repaired mesh (or computes it from the report)."""
    repaired = repair_mesh(vertices, faces, orient=orient)
    line = repaired.report.warning(name, action if isinstance(action, str) else action(repaired.report))
    if line:
        print(line, file=sys.stderr)
    return repaired
