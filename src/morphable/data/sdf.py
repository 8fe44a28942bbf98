"""Training data for implicit (SDF) head models, from meshes and open scans.

Pipeline (thesis section 5.1.2, after DeepSDF):

1. **Normalise** every mesh into the unit sphere with a similarity ``x' = (x - translation) * scale`` so
   the bounding sphere (about the bounding-box centre) has radius 0.9: the margin keeps near-surface
   points inside the unit ball, where ball points are drawn and meshes are extracted. A dataset shares
   one similarity by default (sizes stay comparable and held-out scans map with the same transform).
2. **Surface points** by area-weighted barycentric sampling, with normals from the barycentric
   interpolation of area-weighted vertex normals (as the thesis does: smooth across edges, like the
   surface the scan approximates; face normals would jump at every edge). Triangles belong to the face
   region when at least two of their corners are in the per-vertex region mask.
3. **Near-surface points** ``p + eps``, ``eps ~ N(0, sigma^2 I)`` (a random direction, length
   ``sigma * chi_3``) for ``sigma = 0.0025`` and ``0.00025`` (unit-sphere units), with the exact SDF.
4. **Ball points** uniform in the unit ball, with the exact SDF.

Signed distance (``sign="auto"``): the magnitude is the exact Euclidean distance to the triangles
(libigl AABB tree). The sign:

* closed, manifold, consistently oriented mesh: the angle-weighted pseudonormal test at the closest
  point (exact, Baerentzen & Aanaes); the generalised winding number would agree everywhere.
* open scan: the generalised winding number ``w(p)`` (libigl fast winding number; ``w = 1`` inside and
  ``0`` outside a closed surface, jumping by 1 across the scan). Points with ``w >= 0.5`` are inside:
  this treats the scan as if its holes were closed by the caps ``{w = 0.5}``, soap-film-like surfaces
  spanning each hole. Where the scan is nearly flat or the point sees it under a small solid angle,
  ``w`` stays near 0.5 on the back side and is no guide, so within ``local_band`` of the scan, when
  the closest point is not on the open boundary, the local side of the scan (pseudonormal test) decides.
  Near-surface samples therefore always get the side of the scan they lie on.

Limits for open scans: the caps are only implicit (distance magnitudes are to the scan, not to the
caps, so the field jumps from ``+d`` to ``-d`` across a cap); a flat open sheet encloses nothing, so
beyond ``local_band`` behind it points are outside; hole-caps of very large openings (a face-only mask)
are guesses; faces must be consistently oriented with outward normals.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from morphable.data.registered import UNIT_TO_MM, check_unit
from morphable.errors import MorphableError, input_error
from morphable.io import atomic_path, read_json, write_json
from morphable.mesh.normals import vertex_normals

SIGMAS = (0.0025, 0.00025)
DEFAULT_RADIUS = 0.9
DATASET_JSON = "sdf_dataset.json"
FORMAT_VERSION = 1

SignMethod = Literal["auto", "pseudonormal", "winding"]


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Similarity:
    """``normalised = (x - translation) * scale``; lengths scale by ``scale``."""

    scale: float
    translation: tuple[float, float, float]

    @classmethod
    def fit(cls, vertex_sets: Sequence[np.ndarray], radius: float = DEFAULT_RADIUS) -> "Similarity":
        """The similarity that maps the bounding sphere of all ``vertex_sets`` (each ``(V_i, 3)``) about
        their common bounding-box centre ``c`` to radius ``radius``: ``scale = radius / max |x - c|``."""
        lo = np.min([np.asarray(v, dtype=np.float64).min(axis=0) for v in vertex_sets], axis=0)
        hi = np.max([np.asarray(v, dtype=np.float64).max(axis=0) for v in vertex_sets], axis=0)
        centre = (lo + hi) / 2
        extent = max(float(np.linalg.norm(np.asarray(v, dtype=np.float64) - centre, axis=1).max()) for v in vertex_sets)
        if not extent > 0:
            raise ValueError("cannot normalise: all vertices coincide")
        return cls(radius / extent, tuple(float(c) for c in centre))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` source units -> normalised units."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.translation)) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` normalised units -> source units."""
        return np.asarray(points, dtype=np.float64) / self.scale + np.asarray(self.translation)

    def to_mm(self, length: float | np.ndarray, unit: str) -> float | np.ndarray:
        """A length in normalised units, in millimetres, for sources in ``unit`` (m, cm or mm)."""
        return length / self.scale * UNIT_TO_MM[unit]

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "translation": list(self.translation)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Similarity":
        return cls(float(d["scale"]), tuple(float(c) for c in d["translation"]))


def normalise_to_unit_sphere(vertices: np.ndarray, radius: float = DEFAULT_RADIUS) -> tuple[np.ndarray, Similarity]:
    """Centre ``vertices (V, 3)`` at their bounding-box centre and scale the bounding sphere to ``radius``.

    Returns:
        ``normalised (V, 3)`` float64 and the :class:`Similarity` that produced it.
    """
    sim = Similarity.fit([vertices], radius)
    return sim.apply(vertices), sim


# --------------------------------------------------------------------------- mesh checks


@dataclass(frozen=True)
class EdgeReport:
    """Edge statistics of a triangle mesh: ``irregular_vertices`` are the corners of edges that do not
    have exactly two incident faces (open boundary or non-manifold); ``flipped_edges`` counts directed
    edges used twice in the same direction (inconsistent orientation)."""

    n_open_edges: int
    n_nonmanifold_edges: int
    flipped_edges: int
    irregular_edges: np.ndarray  # (E, 2) sorted vertex pairs
    irregular_vertices: np.ndarray  # (V,) bool

    @property
    def closed(self) -> bool:
        return self.n_open_edges == 0 and self.n_nonmanifold_edges == 0


def edge_report(faces: np.ndarray, n_vertices: int) -> EdgeReport:
    """Count open, non-manifold and inconsistently oriented edges of ``faces (F, 3)``."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    irregular = undirected[counts != 2]
    irregular_vertices = np.zeros(n_vertices, dtype=bool)
    irregular_vertices[irregular.reshape(-1)] = True
    return EdgeReport(int((counts == 1).sum()), int((counts > 2).sum()), int((directed_counts > 1).sum()),
                      irregular, irregular_vertices)


def check_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, region_mask: np.ndarray | None = None) -> EdgeReport:
    """Validate a mesh for SDF sampling; raise a :class:`MorphableError` naming ``name`` on bad input.

    Checks: ``vertices (V, 3)`` finite, ``faces (F, 3)`` in range and non-empty, total area > 0,
    ``region_mask (V,)``, consistent orientation, and outward orientation (the signed volume of the
    cones from the bounding-box centre to the faces must not be clearly negative).
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise input_error(name, f"vertices must have shape (V, 3), got {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise input_error(name, "vertices contain NaN or infinite values")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise input_error(name, f"faces must have shape (F, 3) with F > 0, got {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise input_error(name, f"face indices out of range 0..{len(vertices) - 1}")
    if region_mask is not None and region_mask.shape != (len(vertices),):
        raise input_error(name, f"region mask has shape {region_mask.shape}, expected ({len(vertices)},)")
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if not np.linalg.norm(cross, axis=1).sum() > 0:
        raise input_error(name, "the mesh has zero surface area")
    report = edge_report(faces, len(vertices))
    if report.flipped_edges:
        raise input_error(name, f"faces are not consistently oriented ({report.flipped_edges} edges are used twice "
                                "in the same direction): the sign of the distance would be meaningless")
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    volume = float(np.einsum("ij,ij->i", tri[:, 0] - centre, cross).sum()) / 6
    if volume < -1e-3 * float(np.ptp(vertices, axis=0).max()) ** 3:
        raise input_error(name, "faces are oriented inwards (negative enclosed volume): flip them")
    return report


# --------------------------------------------------------------------------- signed distance


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number ``w(p) = (1 / 4 pi) sum_f Omega_f(p)`` (signed solid angles), via
    libigl's fast (hierarchical, Barill et al. 2018) evaluation: ``(N, 3) -> (N,)`` float64."""
    return igl_module().fast_winding_number(np.ascontiguousarray(vertices, dtype=np.float64),
                                            np.ascontiguousarray(faces, dtype=np.int64),
                                            np.ascontiguousarray(points, dtype=np.float64))


def igl_module():
    """Import libigl (a required dependency of the SDF data path) with a clear message when missing."""
    try:
        import igl
    except ImportError:
        raise MorphableError("SDF sampling needs libigl: pip install libigl") from None
    return igl


def _irregular_face_edges(faces: np.ndarray, report: EdgeReport) -> np.ndarray:
    """``(F, 3)`` bool: is the edge opposite corner ``k`` of each face open or non-manifold."""
    n = int(faces.max()) + 1
    opposite = np.stack([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], axis=1)
    keys = np.sort(opposite, axis=2) @ np.array([n, 1], dtype=np.int64)
    return np.isin(keys, report.irregular_edges @ np.array([n, 1], dtype=np.int64))


def barycentric_coordinates(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                            tri_index: np.ndarray) -> np.ndarray:
    """Barycentric coordinates ``(N, 3)`` of ``points (N, 3)`` in the plane of triangles ``faces[tri_index]``.

    With ``e0 = b - a``, ``e1 = c - a``, ``e2 = p - a`` and ``d_ij = e_i . e_j``:
    ``b1 = (d11 d20 - d01 d21) / D``, ``b2 = (d00 d21 - d01 d20) / D``, ``D = d00 d11 - d01^2``, and
    ``(1 - b1 - b2, b1, b2)``; degenerate triangles (``D = 0``) use ``D = 1``.
    """
    f = faces[tri_index]
    a = vertices[f[:, 0]]
    e0, e1, e2 = vertices[f[:, 1]] - a, vertices[f[:, 2]] - a, points - a
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (e2 * e0).sum(1), (e2 * e1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(den > 0, den, 1.0)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - b1 - b2, b1, b2], axis=1)


def _on_irregular_feature(closest: np.ndarray, tri_index: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                          irregular_edges: np.ndarray, irregular_vertices: np.ndarray,
                          tol: float = 1e-7) -> np.ndarray:
    """True where the closest point lies on an open/non-manifold edge or vertex.

    Barycentric coordinates ``b`` of ``closest (N, 3)`` in triangle ``tri_index (N,)``: the point is on the
    edge opposite corner ``k`` when ``b_k ~ 0`` and on corner ``k`` when ``b_k ~ 1``.
    ``irregular_edges (F, 3)`` from :func:`_irregular_face_edges`, ``irregular_vertices (V,)``.
    """
    f = faces[tri_index]
    bary = barycentric_coordinates(closest, vertices, faces, tri_index)
    on_edge = (irregular_edges[tri_index] & (bary <= tol)).any(axis=1)
    on_vertex = (irregular_vertices[f] & (bary >= 1 - tol)).any(axis=1)
    return on_edge | on_vertex


def signed_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, sign: SignMethod = "auto",
                    local_band: float = 0.02, chunk_size: int = 100_000, progress: bool = False) -> np.ndarray:
    """Exact signed distance from ``points (N, 3)`` to the triangle mesh; negative inside.

    Args:
        points: ``(N, 3)`` query points.
        vertices: ``(V, 3)``; faces: ``(F, 3)`` consistently oriented, outward normals.
        sign: ``"auto"`` (pseudonormal for closed meshes; winding number with a local pseudonormal band
            for open ones, see the module docstring), ``"pseudonormal"`` or ``"winding"`` (``w >= 0.5``
            inside, everywhere).
        local_band: for open meshes, distance within which the local side of the scan decides the sign.
        chunk_size: points per libigl call (bounds memory; a progress bar counts chunks).
        progress: show a tqdm bar when there is more than one chunk.

    Returns:
        ``(N,)`` float64 signed distances.
    """
    if sign not in ("auto", "pseudonormal", "winding"):
        raise ValueError(f"unknown sign method {sign!r}")
    igl = igl_module()
    P = np.ascontiguousarray(points, dtype=np.float64)
    V = np.ascontiguousarray(vertices, dtype=np.float64)
    F = np.ascontiguousarray(faces, dtype=np.int64)
    report = edge_report(F, len(V)) if sign == "auto" else None
    local_side = report is not None and not report.closed
    edge_flags = _irregular_face_edges(F, report) if local_side else None
    starts = range(0, len(P), chunk_size)
    if progress and len(starts) > 1:
        from tqdm import tqdm

        starts = tqdm(starts, desc="signed distance", unit="chunk", leave=False)
    out = np.empty(len(P), dtype=np.float64)
    for s in starts:
        chunk = P[s:s + chunk_size]
        if sign == "winding":
            sq, _, _ = igl.point_mesh_squared_distance(chunk, V, F)
            inside = winding_number(chunk, V, F) >= 0.5
            out[s:s + len(chunk)] = np.where(inside, -1.0, 1.0) * np.sqrt(sq)
            continue
        dist, tri, closest, _ = igl.signed_distance(chunk, V, F, igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
        if local_side:
            use_winding = np.abs(dist) > local_band
            near = np.nonzero(~use_winding)[0]
            use_winding[near] = _on_irregular_feature(closest[near], tri[near], V, F, edge_flags,
                                                      report.irregular_vertices)
            which = np.nonzero(use_winding)[0]
            if len(which):
                inside = winding_number(chunk[which], V, F) >= 0.5
                dist[which] = np.where(inside, -1.0, 1.0) * np.abs(dist[which])
        out[s:s + len(chunk)] = dist
    return out


# --------------------------------------------------------------------------- sampling


def face_region(faces: np.ndarray, region_mask: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: a triangle is in the face region when at least two of its corners are."""
    return np.asarray(region_mask, dtype=bool)[faces].sum(axis=1) >= 2


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator,
                   normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples on a triangle mesh with interpolated vertex normals.

    A triangle is drawn with probability proportional to its area, then barycentric coordinates
    ``(1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)`` with ``r1, r2 ~ U(0, 1)`` are uniform on it.
    Normals: ``normalise(sum_k b_k n_k)`` of the area-weighted vertex normals ``n_k`` (the face normal
    where that sum vanishes).

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)``; n: number of samples; rng: numpy generator.
        normals: ``(V, 3)`` vertex normals (computed when omitted).

    Returns:
        ``points (n, 3)`` and unit ``normals (n, 3)``, float64.
    """
    V = np.asarray(vertices, dtype=np.float64)
    if normals is None:
        normals = vertex_normals(torch.from_numpy(V), torch.from_numpy(np.asarray(faces, dtype=np.int64))).numpy()
    tri = V[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(area)
    which = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(faces) - 1)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, tri[which])
    nrm = np.einsum("nk,nkd->nd", bary, normals[faces[which]])
    length = np.linalg.norm(nrm, axis=1, keepdims=True)
    face_n = cross[which] / np.maximum(area[which], 1e-300)[:, None]
    nrm = np.where(length > 1e-12, nrm / np.maximum(length, 1e-300), face_n)
    return points, nrm


def sample_ball(n: int, rng: np.random.Generator, radius: float = 1.0) -> np.ndarray:
    """``(n, 3)`` points uniform in the ball: Gaussian direction, radius ``radius * u^(1/3)``."""
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * (radius * rng.random(n) ** (1 / 3))[:, None]


_SAMPLE_KEYS = ("face_points", "face_normals", "nonface_points", "nonface_normals", "near_face_points",
                "near_face_sdf", "near_nonface_points", "near_nonface_sdf", "ball_points", "ball_sdf", "sigmas")


@dataclass
class SdfSamples:
    """Pre-computed samples of one shape in normalised (unit-sphere) coordinates, all float32.

    Attributes:
        face_points, face_normals: ``(Nf, 3)`` surface samples of the face region and unit normals.
        nonface_points, nonface_normals: ``(Nn, 3)`` the same for the rest of the head.
        near_face_points: ``(L, Mf, 3)`` face-region surface samples perturbed with ``sigmas[l]``;
            near_face_sdf: ``(L, Mf)`` their exact SDF.
        near_nonface_points, near_nonface_sdf: ``(L, Mn, 3)``, ``(L, Mn)`` likewise.
        ball_points: ``(Nb, 3)`` uniform in the unit ball; ball_sdf: ``(Nb,)``.
        sigmas: ``(L,)`` perturbation standard deviations.
    """

    face_points: np.ndarray
    face_normals: np.ndarray
    nonface_points: np.ndarray
    nonface_normals: np.ndarray
    near_face_points: np.ndarray
    near_face_sdf: np.ndarray
    near_nonface_points: np.ndarray
    near_nonface_sdf: np.ndarray
    ball_points: np.ndarray
    ball_sdf: np.ndarray
    sigmas: np.ndarray = field(default_factory=lambda: np.asarray(SIGMAS, dtype=np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _SAMPLE_KEYS}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    def save(self, path: str | os.PathLike) -> None:
        """Write an uncompressed ``.npz`` (float32 arrays; random floats do not compress), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format_version=np.int64(FORMAT_VERSION), **self.arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SdfSamples":
        """Read a file written by :meth:`save`; a missing, broken or inconsistent file raises a
        :class:`MorphableError` naming it. Never unpickles."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _SAMPLE_KEYS if k not in data.files]
                if missing:
                    raise input_error(path, f"not an SDF sample file (missing {', '.join(missing)})")
                arrays = {k: data[k] for k in _SAMPLE_KEYS}
        except FileNotFoundError:
            raise input_error(path, "file not found") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise input_error(path, f"not a readable .npz file ({exc})") from None
        samples = cls(**{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
        problem = samples.problem()
        if problem:
            raise input_error(path, problem)
        return samples

    def problem(self) -> str | None:
        """A description of the first inconsistency in shapes or values, or None."""
        L = len(self.sigmas)
        n_face, n_nonface = len(self.face_points), len(self.nonface_points)
        m_face, m_nonface = self.near_face_points.shape[1:2], self.near_nonface_points.shape[1:2]
        expect = {"sigmas": (L,), "face_points": (n_face, 3), "face_normals": (n_face, 3),
                  "nonface_points": (n_nonface, 3), "nonface_normals": (n_nonface, 3),
                  "near_face_points": (L, *m_face, 3), "near_face_sdf": (L, *m_face),
                  "near_nonface_points": (L, *m_nonface, 3), "near_nonface_sdf": (L, *m_nonface),
                  "ball_points": (len(self.ball_points), 3), "ball_sdf": (len(self.ball_points),)}
        for name, shape in expect.items():
            if getattr(self, name).shape != shape:
                return f"'{name}' has shape {getattr(self, name).shape}, expected {shape}"
        if n_face + n_nonface == 0 or len(self.ball_points) == 0:
            return "no surface or no ball samples"
        for name, a in self.arrays().items():
            if not np.isfinite(a).all():
                return f"'{name}' contains NaN or infinite values"
        return None


def _split(n: int, face_fraction: float, has_face: bool, has_nonface: bool) -> tuple[int, int]:
    if not has_face:
        return 0, n
    if not has_nonface:
        return n, 0
    n_face = int(round(n * face_fraction))
    return n_face, n - n_face


def precompute_sdf_samples(vertices: np.ndarray, faces: np.ndarray, region_mask: np.ndarray, *,
                           n_surface: int = 250_000, n_near: int = 250_000, n_ball: int = 100_000,
                           face_fraction: float = 0.75, sigmas: Sequence[float] = SIGMAS,
                           sign: SignMethod = "auto", local_band: float = 0.02, seed: int = 0,
                           progress: bool = False, name: str = "mesh") -> SdfSamples:
    """Surface, near-surface and ball samples of one normalised mesh.

    Surface and near samples are drawn per region (``face_fraction`` of each count from the face
    region, the rest from the non-face region; all of it from one region when the other is empty).
    For each ``sigma`` a fresh set of ``n_near`` surface samples is perturbed by ``N(0, sigma^2 I)``.

    Args:
        vertices: ``(V, 3)`` already inside the unit ball (see :func:`normalise_to_unit_sphere`).
        faces: ``(F, 3)`` consistently oriented (outward normals).
        region_mask: ``(V,)`` bool/int, nonzero for face-region vertices.
        n_surface, n_near, n_ball: surface samples, near samples per sigma level, ball samples.
        face_fraction: share of the face region in the surface and near counts.
        sigmas: near-surface perturbation standard deviations (unit-sphere units).
        sign, local_band: see :func:`signed_distance`.
        seed: the samples are a deterministic function of the inputs and the seed.
        progress: progress bar over distance chunks.
        name: names the mesh in error messages.

    Returns:
        :class:`SdfSamples` (float32).
    """
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    mask = np.asarray(region_mask)
    check_mesh(name, V, F, mask)
    if np.linalg.norm(V, axis=1).max() > 1.0:
        raise input_error(name, "vertices lie outside the unit ball: normalise the mesh first")
    rng = np.random.default_rng(seed)
    normals = vertex_normals(torch.from_numpy(V), torch.from_numpy(F)).numpy()
    in_face = face_region(F, mask)
    regions = {"face": F[in_face], "nonface": F[~in_face]}
    counts = dict(zip(("face", "nonface"), _split(n_surface, face_fraction, in_face.any(), (~in_face).any())))
    near_counts = dict(zip(("face", "nonface"), _split(n_near, face_fraction, in_face.any(), (~in_face).any())))

    def surface(region: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n == 0:
            return np.zeros((0, 3)), np.zeros((0, 3))
        return sample_surface(V, regions[region], n, rng, normals)

    out: dict[str, np.ndarray] = {}
    for region in ("face", "nonface"):
        out[f"{region}_points"], out[f"{region}_normals"] = surface(region, counts[region])
    near = {region: np.stack([surface(region, near_counts[region])[0] for _ in sigmas]) for region in regions}
    for region in regions:
        near[region] += rng.standard_normal(near[region].shape) * np.asarray(sigmas)[:, None, None]
    ball = sample_ball(n_ball, rng)
    queries = np.concatenate([near["face"].reshape(-1, 3), near["nonface"].reshape(-1, 3), ball])
    sdf = signed_distance(queries, V, F, sign=sign, local_band=local_band, progress=progress)
    n_face_near = near["face"].shape[0] * near["face"].shape[1]
    n_nonface_near = near["nonface"].shape[0] * near["nonface"].shape[1]
    out["near_face_points"], out["near_face_sdf"] = near["face"], sdf[:n_face_near].reshape(near["face"].shape[:2])
    out["near_nonface_points"] = near["nonface"]
    out["near_nonface_sdf"] = sdf[n_face_near:n_face_near + n_nonface_near].reshape(near["nonface"].shape[:2])
    out["ball_points"], out["ball_sdf"] = ball, sdf[n_face_near + n_nonface_near:]
    out["sigmas"] = np.asarray(sigmas)
    return SdfSamples(**{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()})


# --------------------------------------------------------------------------- per-iteration sub-sampling


@dataclass(frozen=True)
class SubsampleCounts:
    """Points drawn per shape and iteration: ``face``/``nonface`` for the surface and for each sigma
    level (thesis: 750 / 250), ``ball`` uniform points (300)."""

    face: int = 750
    nonface: int = 250
    ball: int = 300


def _draw(n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(n, (k,), generator=generator)


def subsample(samples: SdfSamples, counts: SubsampleCounts = SubsampleCounts(),
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Draw one iteration's points of a shape (uniformly, with replacement) as CPU float32 tensors.

    When a region has no samples its share goes to the other region, so the shapes never change.
    With ``S = counts.face + counts.nonface`` and ``L`` sigma levels:

    Returns:
        ``surface_points (S, 3)``, ``surface_normals (S, 3)``, ``surface_is_face (S,)`` bool (face
        rows first), ``near_points (L * S, 3)`` and ``near_sdf (L * S,)`` (level-major, face rows first
        within each level), ``ball_points (counts.ball, 3)``, ``ball_sdf (counts.ball,)``.
    """
    n_face, n_nonface = len(samples.face_points), len(samples.nonface_points)
    k_face, k_nonface = (counts.face, counts.nonface) if n_face and n_nonface else \
        ((counts.face + counts.nonface, 0) if n_face else (0, counts.face + counts.nonface))
    fi, ni = _draw(max(n_face, 1), k_face, generator).numpy(), _draw(max(n_nonface, 1), k_nonface, generator).numpy()
    surface_points = np.concatenate([samples.face_points[fi], samples.nonface_points[ni]])
    surface_normals = np.concatenate([samples.face_normals[fi], samples.nonface_normals[ni]])
    is_face = np.concatenate([np.ones(k_face, dtype=bool), np.zeros(k_nonface, dtype=bool)])
    near_points, near_sdf = [], []
    m_face, m_nonface = samples.near_face_points.shape[1], samples.near_nonface_points.shape[1]
    for level in range(len(samples.sigmas)):
        fj = _draw(max(m_face, 1), k_face, generator).numpy()
        nj = _draw(max(m_nonface, 1), k_nonface, generator).numpy()
        near_points += [samples.near_face_points[level, fj], samples.near_nonface_points[level, nj]]
        near_sdf += [samples.near_face_sdf[level, fj], samples.near_nonface_sdf[level, nj]]
    bi = _draw(len(samples.ball_points), counts.ball, generator).numpy()
    return {
        "surface_points": torch.from_numpy(surface_points),
        "surface_normals": torch.from_numpy(surface_normals),
        "surface_is_face": torch.from_numpy(is_face),
        "near_points": torch.from_numpy(np.concatenate(near_points)),
        "near_sdf": torch.from_numpy(np.concatenate(near_sdf)),
        "ball_points": torch.from_numpy(samples.ball_points[bi]),
        "ball_sdf": torch.from_numpy(samples.ball_sdf[bi]),
    }


# --------------------------------------------------------------------------- datasets on disk


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in '/\\:\0') and name.isprintable()


def write_sdf_dataset(meshes: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], out_dir: str | os.PathLike,
                      unit: str, *, normalisation: Literal["shared", "per_shape"] = "shared",
                      radius: float = DEFAULT_RADIUS, n_surface: int = 250_000, n_near: int = 250_000,
                      n_ball: int = 100_000, face_fraction: float = 0.75, sigmas: Sequence[float] = SIGMAS,
                      sign: SignMethod = "auto", local_band: float = 0.02, seed: int = 0,
                      overwrite: bool = False, progress: bool = True) -> Path:
    """Pre-compute SDF samples for every mesh and write a dataset folder, all or nothing.

    Layout: ``<out_dir>/<name>.npz`` per shape (:meth:`SdfSamples.save`) and ``sdf_dataset.json`` with the
    names, the source unit, each shape's :class:`Similarity` and the settings. Everything is written
    into a temporary sibling folder that is renamed to ``out_dir`` at the end.

    Args:
        meshes: ``(name, vertices (V, 3), faces (F, 3), region_mask (V,))`` in source units; names are
            unique file stems.
        out_dir: the dataset folder (must not exist or be empty unless ``overwrite``).
        unit: source unit, m, cm or mm.
        normalisation: ``"shared"``: one similarity fitted to all meshes (keeps sizes, maps held-out
            data the same way); ``"per_shape"``: each mesh fills the sphere on its own.
        radius: bounding-sphere radius after normalisation.
        n_surface, n_near, n_ball, face_fraction, sigmas, sign, local_band: see
            :func:`precompute_sdf_samples`.
        seed: shape ``i`` uses seed ``(seed, i)``.
        overwrite: replace an existing non-empty ``out_dir``.
        progress: progress bars.

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    unit = check_unit(unit, out_dir)
    if not meshes:
        raise input_error(out_dir, "no meshes to write")
    names = [m[0] for m in meshes]
    bad = [n for n in names if not _valid_name(n)]
    if bad:
        raise input_error(out_dir, f"invalid shape name {bad[0]!r} (it becomes a file name)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise input_error(out_dir, f"duplicate shape name {dup!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise input_error(out_dir, "already exists and is not empty (choose another folder or overwrite)")
    prepared = []
    for name, vertices, faces, mask in meshes:
        V, F, M = np.asarray(vertices, dtype=np.float64), np.asarray(faces), np.asarray(mask)
        if not np.issubdtype(F.dtype, np.integer):
            raise input_error(name, f"faces must be integers, got {F.dtype}")
        report = check_mesh(name, V, F.astype(np.int64), M)
        prepared.append((name, V, F.astype(np.int64), M, report))
    if normalisation not in ("shared", "per_shape"):
        raise ValueError(f"unknown normalisation {normalisation!r}")
    shared = Similarity.fit([p[1] for p in prepared], radius) if normalisation == "shared" else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        shapes = []
        items = enumerate(prepared)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, total=len(prepared), desc="SDF samples", unit="shape")
        for i, (name, V, F, M, report) in items:
            sim = shared or Similarity.fit([V], radius)
            shape_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            samples = precompute_sdf_samples(
                sim.apply(V), F, M, n_surface=n_surface, n_near=n_near, n_ball=n_ball, face_fraction=face_fraction,
                sigmas=sigmas, sign=sign, local_band=local_band, seed=shape_seed, progress=progress, name=name)
            samples.save(tmp / f"{name}.npz")
            shapes.append({"name": name, "file": f"{name}.npz", "similarity": sim.to_dict(), "n_vertices": len(V),
                           "n_faces": len(F), "open_edges": report.n_open_edges})
        settings = {"normalisation": normalisation, "radius": radius, "n_surface": n_surface, "n_near": n_near,
                    "n_ball": n_ball, "face_fraction": face_fraction, "sigmas": list(map(float, sigmas)),
                    "sign": sign, "local_band": local_band, "seed": seed}
        write_json(tmp / DATASET_JSON, {"format_version": FORMAT_VERSION, "unit": unit, "settings": settings,
                                        "shapes": shapes})
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "data")
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


class SdfDataset(torch.utils.data.Dataset):
    """A folder written by :func:`write_sdf_dataset`, held in memory; item ``i`` is a fresh random
    sub-sample of shape ``i`` (:func:`subsample`) plus ``index`` (a 0-d int64 tensor for the code table).

    Randomness: by default the draws use torch's global generator (DataLoader workers seed it per
    worker). After :meth:`set_epoch` the draw of item ``i`` depends only on ``(seed, epoch, i)``, so a
    resumed run sees the same points as an uninterrupted one.
    """

    def __init__(self, root: str | os.PathLike, counts: SubsampleCounts = SubsampleCounts(), seed: int = 0,
                 progress: bool = False) -> None:
        self.root = Path(root)
        info_path = self.root / DATASET_JSON
        if not self.root.is_dir():
            raise input_error(self.root, "not a folder (expected an SDF dataset written by 'morphable data sdf')")
        if not info_path.exists():
            raise input_error(self.root, f"no {DATASET_JSON}: not an SDF dataset folder")
        info = read_json(info_path)
        try:
            self.unit = check_unit(info["unit"], info_path)
            self.settings: dict[str, Any] = dict(info["settings"])
            shapes = list(info["shapes"])
            self.names = [str(s["name"]) for s in shapes]
            self.similarities = [Similarity.from_dict(s["similarity"]) for s in shapes]
            files = [self.root / str(s["file"]) for s in shapes]
        except (KeyError, TypeError, ValueError) as exc:
            raise input_error(info_path, f"malformed SDF dataset description ({exc!r})") from None
        if not files:
            raise input_error(info_path, "the dataset has no shapes")
        if progress:
            from tqdm import tqdm

            files = tqdm(files, desc=f"loading {self.root.name}", unit="shape", leave=False)
        self.samples = [SdfSamples.load(p) for p in files]
        self.counts = counts
        self.seed = seed
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Make the draws of this epoch deterministic (see the class docstring)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = None
        if self.epoch is not None:
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0] >> 1))
        item = subsample(self.samples[index], self.counts, generator)
        item["index"] = torch.tensor(index, dtype=torch.long)
        return item

    def to_mm(self, index: int, length: float | np.ndarray) -> float | np.ndarray:
        """A length in normalised units of shape ``index``, in millimetres."""
        return self.similarities[index].to_mm(length, self.unit)

    def describe(self) -> str:
        """One line: shapes, unit, memory."""
        mb = sum(s.nbytes for s in self.samples) / 1e6
        return f"{len(self)} shapes ({self.unit}), {mb:.1f} MB of samples, settings {json.dumps(self.settings)}"
