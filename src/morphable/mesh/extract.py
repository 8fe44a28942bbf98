"""Exact, fast mesh extraction from an SDF: coarse-to-fine narrow-band grid evaluation + marching cubes.

The mesh that marching cubes (scikit-image, Lewiner) builds from a grid of SDF samples depends only on

1. the sign (relative to ``level``) of every grid value, and
2. the exact values at the 8 corners of every *mixed* cell (a cell whose corners do not all have the
   same sign): vertices are interpolated on the cell's crossing edges and the ambiguous cases are
   resolved with the corner values.

``method='band'`` evaluates the network only where it must, and yields the same mesh as ``'dense'``
(evaluation of all ``resolution^3`` points):

* Lipschitz argument. If ``|grad f| <= L``, a point c with ``|f(c) - level| = a`` proves that every point
  q with ``|q - c| < a / L`` lies on the same side of the level set, with ``|f(q) - level| >= a - L |q - c|``.
* Coarse to fine with certified bounds. Every grid point carries either its exact value or a *signed
  lower bound* ``level +- b`` with ``b <= |f - level|`` and the correct sign. The lattice of stride
  ``coarse`` (a power of two; the grid is padded to ``m * coarse + 1`` points per axis, the extra points
  lie just beyond the upper bound and are cropped) is evaluated. At each finer stride ``s`` a new point
  q inherits ``b(q) = max_c b(c) - L |c - q|`` from its 2, 4 or 8 neighbours c on the coarser lattice.
  If ``b(q) > m L (s - 1) |h|`` (h: grid spacing per axis, m: ``margin``) q is filled with its signed
  bound, otherwise it is evaluated. Any ``b > 0`` is a valid signed lower bound, so every filled value has the right sign;
  the threshold (the distance within which q's finer descendants lie) only makes the bounds strong
  enough to certify those descendants. At the finest stride (threshold 0) only points whose sign
  cannot be proven are evaluated.
* Repair. Marching cubes also needs the exact values at the 8 corners of every *mixed* cell; with all
  signs right these cells are known from the sign grid, and their unevaluated corners are evaluated.
  If an evaluated value contradicts its proven sign (L was too small locally) the mixed cells are
  recomputed and the loop repeats.

With ``L`` a true bound the result is exact; ``L = lipschitz * safety`` with ``lipschitz = 1`` suits
SDF networks trained with an eikonal term; ``lipschitz=None`` uses the steepest slope seen on the
coarse lattice (for untrained or unnormalised fields). Tests compare band against dense meshes.

SDF sources: any callable ``fn(points (N, 3)) -> (N,)``, or an object with
``grid_evaluator(axes) -> evaluate(ijk (N, 3) int64) -> (N,)`` for a faster exact path on grids
(:class:`morphable.implicit.triplane.TriplaneField`). Evaluation runs under ``torch.inference_mode``
in chunks, on the device of the SDF (``device`` for plain callables).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from morphable.mesh.topology import connected_components

GridEvaluator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ExtractionStats:
    """What an extraction cost: network evaluations and wall-clock seconds per phase."""

    method: str
    resolution: int
    evaluated: int
    total: int
    repaired: int
    seconds: float
    seconds_setup: float
    seconds_eval: float
    seconds_marching_cubes: float

    @property
    def fraction(self) -> float:
        """Evaluated points / resolution^3."""
        return self.evaluated / self.total


def _box(bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` scalars (a cube) or ``((x0, y0, z0), (x1, y1, z1))`` -> two float64 arrays (3,)."""
    lo = np.broadcast_to(np.asarray(bounds[0], dtype=np.float64), (3,)).copy()
    hi = np.broadcast_to(np.asarray(bounds[1], dtype=np.float64), (3,)).copy()
    if not np.all(hi > lo):
        raise ValueError(f"bounds must satisfy lo < hi on every axis, got {bounds}")
    return lo, hi


def grid_axes(resolution: int, bounds: Any = (-1.0, 1.0), size: int | None = None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coordinates of the extraction grid, ``lo + i (hi - lo) / (resolution - 1)`` for ``i < size``.

    Computed in float64 and rounded to float32, so dense and band evaluation see identical points.
    Returns three (size,) float32 tensors (x, y, z).
    """
    lo, hi = _box(bounds)
    n = resolution if size is None else size
    i = np.arange(n, dtype=np.float64)
    return tuple(torch.from_numpy((lo[a] + i * (hi[a] - lo[a]) / (resolution - 1)).astype(np.float32)).to(device)
                 for a in range(3))


def _evaluator(sdf: Any, axes: tuple[torch.Tensor, ...]) -> GridEvaluator:
    if hasattr(sdf, "grid_evaluator"):
        return sdf.grid_evaluator(axes)

    def evaluate(ijk: torch.Tensor) -> torch.Tensor:
        ijk = ijk.to(axes[0].device)
        return sdf(torch.stack([axes[0][ijk[:, 0]], axes[1][ijk[:, 1]], axes[2][ijk[:, 2]]], dim=1))

    return evaluate


def _clip_to_ball(evaluate: GridEvaluator, axes: tuple[torch.Tensor, ...], radius: float) -> GridEvaluator:
    """``max(f(x), |x| - radius)``: positive (outside) beyond the ball, ``f`` inside it where ``f <= |x| - radius``
    does not hold. The max of two 1-Lipschitz functions is 1-Lipschitz, so the band's bounds stay valid."""

    def clipped(ijk: torch.Tensor) -> torch.Tensor:
        values = evaluate(ijk).reshape(-1)
        ijk = ijk.to(axes[0].device)
        norm = torch.stack([axes[0][ijk[:, 0]], axes[1][ijk[:, 1]], axes[2][ijk[:, 2]]], dim=1).norm(dim=1)
        return torch.maximum(values, (norm - radius).to(values))

    return clipped


def _run(evaluate: GridEvaluator, ijk: torch.Tensor, chunk: int) -> torch.Tensor:
    """ijk: (N, 3) int64 -> float32 values (N,) on the CPU, evaluated ``chunk`` points at a time."""
    out = torch.empty(ijk.shape[0], dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, ijk.shape[0], chunk):
            out[start:start + chunk] = evaluate(ijk[start:start + chunk]).reshape(-1).float().cpu()
    return out


def _corners(v: torch.Tensor) -> list[torch.Tensor]:
    """The 8 corner views of all cells of a lattice volume v (n+1, n+1, n+1) -> 8 x (n, n, n)."""
    return [v[a:v.shape[0] - 1 + a, b:v.shape[1] - 1 + b, c:v.shape[2] - 1 + c]
            for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def _cells_to_points(cells: torch.Tensor) -> torch.Tensor:
    """Mark every corner of the marked cells: bool (n, n, n) -> bool (n+1, n+1, n+1)."""
    pts = torch.zeros(tuple(s + 1 for s in cells.shape), dtype=torch.bool)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                pts[a:a + cells.shape[0], b:b + cells.shape[1], c:c + cells.shape[2]] |= cells
    return pts


def _mixed_cells(volume: torch.Tensor, level: float) -> torch.Tensor:
    """Cells whose 8 corners are not all on one side of ``level``: (n+1)^3 -> bool (n)^3."""
    inside = volume > level
    corners = _corners(inside)
    any_in = corners[0].clone()
    all_in = corners[0].clone()
    for c in corners[1:]:
        any_in |= c
        all_in &= c
    return any_in & ~all_in


def evaluate_grid(sdf: Any, resolution: int = 256, bounds: Any = (-1.0, 1.0), level: float = 0.0,
                  method: str = "band", chunk: int = 4096, coarse: int | None = None,
                  lipschitz: float | None = 1.0, safety: float = 1.5,
                  device: torch.device | str | None = None, domain_radius: float | None = None,
                  margin: float = 0.5) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
    """SDF values on the grid ``grid_axes(resolution, bounds)``, exact wherever marching cubes needs them.

    Args:
        sdf: callable ``points (N, 3) -> (N,)`` or an object with ``grid_evaluator`` (see module doc).
        resolution: points per axis R.
        bounds: ``(lo, hi)`` or ``((x0, y0, z0), (x1, y1, z1))``.
        level: iso-value.
        method: ``'band'`` (coarse-to-fine narrow band) or ``'dense'`` (every point).
        chunk: points per network call (4096: activations of a 256- or 1024-wide MLP stay in cache;
            1.15-1.2x more points per second than 16384 in isolated runs of both implicit models).
        coarse: stride of the first lattice (power of two); default: the largest with >= 4 cells per axis.
        lipschitz: assumed bound of ``|grad f|``; None estimates it from the coarse lattice.
        safety: factor on that bound.
        margin: factor on the refinement threshold ``L (s - 1) |h|`` of the strides above the finest (any
            value >= 0 is exact; it trades evaluations on coarse strides against the finest one: 0.5
            evaluated 8 % fewer points than 1 on spheres and bumpy fields at 256^3).
        device: where a plain callable receives its points.
        domain_radius: evaluate ``max(f(x), |x| - domain_radius)`` instead of ``f``: the field of a model trained on
            samples in a ball (the implicit models: the unit ball) is unconstrained outside it, and
            level-set sheets there are artefacts. None: ``f`` everywhere.

    Returns:
        volume (R, R, R) float32 (``volume[i, j, k]`` at ``(x_i, y_j, z_k)``), exact (R, R, R) bool
        (which values come from the network) and :class:`ExtractionStats` (without marching cubes time).
    """
    if method not in ("band", "dense"):
        raise ValueError(f"method must be 'band' or 'dense', got {method!r}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    t0 = time.perf_counter()
    if device is None:
        device = "cpu"
    r = resolution
    if method == "dense":
        axes = grid_axes(r, bounds, device=device)
        evaluate = _evaluator(sdf, axes)
        if domain_radius is not None:
            evaluate = _clip_to_ball(evaluate, axes, domain_radius)
        t_setup = time.perf_counter() - t0
        ar = torch.arange(r)
        ijk = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), dim=-1).reshape(-1, 3)
        volume = _run(evaluate, ijk, chunk).reshape(r, r, r)
        stats = ExtractionStats("dense", r, r ** 3, r ** 3, 0, 0.0, t_setup, time.perf_counter() - t0 - t_setup, 0.0)
        stats.seconds = time.perf_counter() - t0
        return volume.numpy(), np.ones((r, r, r), dtype=bool), stats

    if coarse is None:
        coarse = 1
        while (r - 1) / (coarse * 2) >= 4:
            coarse *= 2
    if coarse < 1 or coarse & (coarse - 1):
        raise ValueError(f"coarse stride must be a power of two, got {coarse}")
    size = max(1, math.ceil((r - 1) / coarse)) * coarse + 1
    lo, hi = _box(bounds)
    h = (hi - lo) / (r - 1)
    axes = grid_axes(r, bounds, size=size, device=device)
    evaluate = _evaluator(sdf, axes)
    if domain_radius is not None:
        evaluate = _clip_to_ball(evaluate, axes, domain_radius)
    t_setup = time.perf_counter() - t0

    volume = torch.empty(size, size, size, dtype=torch.float32)
    exact = torch.zeros(size, size, size, dtype=torch.bool)
    lattice = volume[::coarse, ::coarse, ::coarse]
    ijk = torch.nonzero(torch.ones(lattice.shape, dtype=torch.bool)) * coarse
    lattice.copy_(_run(evaluate, ijk, chunk).reshape(lattice.shape))
    exact[::coarse, ::coarse, ::coarse] = True
    evaluated = ijk.shape[0]

    if lipschitz is None:
        g = lattice.double()
        lip = safety * max(float((g.diff(dim=a).abs() / (coarse * h[a])).max()) for a in range(3))
    else:
        lip = safety * lipschitz
    diag = float(np.linalg.norm(h))

    stride = coarse
    while stride > 1:
        half = stride // 2
        ijk = _refine(volume, stride, level, lip, h, threshold=margin * lip * (half - 1) * diag)
        if ijk.shape[0] > 0:
            volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = _run(evaluate, ijk, chunk)
            exact[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
            evaluated += ijk.shape[0]
        stride = half

    repaired = 0
    crop, crop_exact = volume[:r, :r, :r], exact[:r, :r, :r]
    missing = _cells_to_points(_mixed_cells(crop, level)) & ~crop_exact
    while True:
        ijk = torch.nonzero(missing)
        if ijk.shape[0] == 0:
            break
        before = crop[ijk[:, 0], ijk[:, 1], ijk[:, 2]] > level
        values = _run(evaluate, ijk, chunk)
        crop[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
        crop_exact[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
        repaired += ijk.shape[0]
        if bool(((values > level) == before).all()):
            break  # no sign changed: the mixed cells are the ones already repaired
        missing = _cells_to_points(_mixed_cells(crop, level)) & ~crop_exact
    evaluated += repaired

    t_eval = time.perf_counter() - t0 - t_setup
    stats = ExtractionStats("band", r, evaluated, r ** 3, repaired, time.perf_counter() - t0, t_setup, t_eval, 0.0)
    return np.ascontiguousarray(crop.numpy()), np.ascontiguousarray(crop_exact.numpy()), stats


def _refine(volume: torch.Tensor, stride: int, level: float, lip: float, h: np.ndarray,
            threshold: float) -> torch.Tensor:
    """Fill the new points of the stride/2 lattice with inherited signed bounds; return those to evaluate.

    The new points form 7 parity classes o in {0, 1}^3 (odd lattice index on the axes with o = 1); a
    point's coarse neighbours differ by 0 or 1 on those axes and lie at ``d = (stride / 2) |h * o|``.
    ``b = max_c |f(c) - level| - lip d``; points with ``b > threshold`` get ``level + sign(f(c*) - level) b``
    (c* the maximising neighbour), the others are returned as full-grid indices (K, 3) int64.
    """
    half = stride // 2
    coarse = volume[::stride, ::stride, ::stride] - level
    n = coarse.shape[0] - 1
    sub = volume[::half, ::half, ::half]
    todo = []
    for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)):
        views = [coarse[tuple(slice(sh, sh + n) if odd else slice(None) for sh, odd in zip(shift, o))]
                 for shift in ((a, b, c) for a in range(o[0] + 1) for b in range(o[1] + 1) for c in range(o[2] + 1))]
        high, low = views[0], views[0]
        for view in views[1:]:
            high = torch.maximum(high, view)
            low = torch.minimum(low, view)
        positive = high >= -low  # the neighbour with the largest |f - level| is above the level
        bound = torch.where(positive, high, -low)
        bound -= lip * half * float(np.sqrt((h ** 2 * np.asarray(o)).sum()))
        sub[o[0]::2, o[1]::2, o[2]::2] = torch.where(positive, bound, -bound).add_(level)
        need = torch.nonzero(bound <= threshold)
        todo.append((2 * need + torch.tensor(o)) * half)
    return torch.cat(todo)


def marching_cubes(volume: np.ndarray, bounds: Any = (-1.0, 1.0), level: float = 0.0,
                   mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image (Lewiner) marching cubes on a grid from :func:`grid_axes`.

    volume: (R, R, R); mask: optional bool (R, R, R): only cells at True points are processed (it must
    hold every corner of every cell with a sign change; the other cells produce nothing anyway).
    Returns vertices (V, 3) float64 in world coordinates and faces (F, 3) int64, oriented with outward
    normals for an SDF (negative inside).
    An empty level set gives (0, 3) arrays.
    """
    from skimage import measure

    r = np.asarray(volume.shape)
    if not (volume.min() < level < volume.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    lo, hi = _box(bounds)
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, mask=mask)
    verts = lo + verts.astype(np.float64) * (hi - lo) / (r - 1)
    return verts, faces.astype(np.int64)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component (through shared vertices) with the most faces; reindex vertices.

    vertices: (V, 3), faces: (F, 3) -> (V', 3), (F', 3). Ties go to the component with the smallest vertex.
    """
    if len(faces) == 0:
        return vertices, faces
    n = len(vertices)
    _, labels = connected_components(faces, n)
    face_labels = labels[faces[:, 0]]
    keep = face_labels == np.bincount(face_labels).argmax()
    kept = faces[keep]
    used = np.unique(kept)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[kept]


def extract_mesh(sdf: Any, resolution: int = 256, bounds: Any = (-1.0, 1.0), level: float = 0.0,
                 method: str = "band", chunk: int = 4096, coarse: int | None = None,
                 lipschitz: float | None = 1.0, safety: float = 1.5, keep_largest: bool = False,
                 device: torch.device | str | None = None, domain_radius: float | None = None,
                 margin: float = 0.5) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
    """Mesh of the ``level`` set of ``sdf`` on a ``resolution^3`` grid over ``bounds``.

    See :func:`evaluate_grid` for the arguments; ``keep_largest`` keeps the largest connected
    component. Returns vertices (V, 3) float64, faces (F, 3) int64 and :class:`ExtractionStats`.
    ``method='band'`` and ``'dense'`` give the same mesh (to float rounding of the network).
    """
    t0 = time.perf_counter()
    volume, exact, stats = evaluate_grid(sdf, resolution, bounds, level, method, chunk, coarse,
                                         lipschitz, safety, device, domain_radius, margin)
    t1 = time.perf_counter()
    # every corner of every mixed cell is exact: only cells at exact points can produce triangles
    vertices, faces = marching_cubes(volume, bounds, level, exact if method == "band" else None)
    if keep_largest:
        vertices, faces = largest_component(vertices, faces)
    stats.seconds_marching_cubes = time.perf_counter() - t1
    stats.seconds = time.perf_counter() - t0
    return vertices, faces, stats

