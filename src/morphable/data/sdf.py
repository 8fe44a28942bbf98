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

Signed distances (exact magnitudes, signs robust to open scans) come from
:func:`morphable.mesh.distance.signed_distance`, surface points from
:func:`morphable.mesh.sampling.sample_surface`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from morphable.data.normal_maps import NormalMaps, NormalMapSettings, read_normal_maps, render_normal_maps, \
    view_cameras, write_normal_maps
from morphable.data.registered import check_unit
from morphable.errors import input_error
from morphable.io import UNIT_TO_MM, atomic_folder, check_output_folder, atomic_path, read_json, read_npz, write_json
from morphable.mesh.distance import SignMethod, signed_distance
from morphable.mesh.normals import vertex_normals
from morphable.mesh.repair import RepairReport, repair_and_warn, repair_mesh
from morphable.mesh.sampling import sample_surface
from morphable.mesh.topology import EdgeReport, edge_report, face_region

SIGMAS = (0.0025, 0.00025)
DEFAULT_RADIUS = 0.9
DATASET_JSON = "sdf_dataset.json"
SCALE_RANGE = (1e-9, 1e9)  # a shape's similarity scale (unit sphere / data units): wider is a broken file
FORMAT_VERSION = 1


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


# --------------------------------------------------------------------------- mesh checks


def _check_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, region_mask: np.ndarray | None) -> None:
    """``vertices (V, 3)`` finite, ``faces (F, 3)`` in range and non-empty, ``region_mask (V,)``."""
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


def _check_outward(name: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Total area > 0, and the signed volume of the cones from the bounding-box centre to the faces not
    clearly negative (outward orientation)."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if not np.linalg.norm(cross, axis=1).sum() > 0:
        raise input_error(name, "the mesh has zero surface area")
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    volume = float(np.einsum("ij,ij->i", tri[:, 0] - centre, cross).sum()) / 6
    if volume < -1e-3 * float(np.ptp(vertices, axis=0).max()) ** 3:
        raise input_error(name, "faces are oriented inwards (negative enclosed volume): flip them")


def check_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, region_mask: np.ndarray | None = None) -> EdgeReport:
    """Validate a mesh strictly (no repair); raise a :class:`MorphableError` naming ``name`` on bad input.

    Checks: ``vertices (V, 3)`` finite, ``faces (F, 3)`` in range and non-empty, total area > 0,
    ``region_mask (V,)``, consistent orientation, and outward orientation (the signed volume of the
    cones from the bounding-box centre to the faces must not be clearly negative).
    :func:`prepare_mesh` is the lenient version for real scans.
    """
    _check_arrays(name, vertices, faces, region_mask)
    _check_outward(name, vertices, faces)
    report = edge_report(faces, len(vertices))
    if report.flipped_edges:
        raise input_error(name, f"faces are not consistently oriented ({report.flipped_edges} edges are used twice "
                                "in the same direction): the sign of the distance would be meaningless")
    return report


SIGN_USE = {
    "pseudonormal": "exact pseudonormal signs",
    "auto": "signs from winding numbers (local side near the surface)",
    "winding": "signs from generalised winding numbers",
    "untrusted": "the sign far from the surface cannot be trusted (large holes): ball samples only within the "
                 "local band or outside the convex hull",
}
"""What the warning line says about inside / outside for each :meth:`RepairReport.sign` mode."""


@dataclass(frozen=True)
class PreparedMesh:
    """A repaired mesh ready for SDF sampling: ``vertices (V', 3)``, ``faces (F', 3)``, ``region_mask (V',)``,
    and the repair report."""

    vertices: np.ndarray
    faces: np.ndarray
    region_mask: np.ndarray
    report: RepairReport

    @property
    def sign(self) -> str:
        """The sign mode the repaired mesh supports (:meth:`RepairReport.sign`)."""
        return self.report.sign()


def prepare_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, region_mask: np.ndarray,
                 warn: bool = True) -> PreparedMesh:
    """Check the arrays, repair the mesh (:func:`morphable.mesh.repair.repair_mesh`) and choose the sign
    mode; with ``warn`` one line on stderr says what was found and done. A mesh whose orientation is
    consistent as given but inward as a whole is still an error (it was not repaired, so it is taken as
    meant: flip it); components that had to be re-oriented were turned outward."""
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces)
    if F.size and not np.issubdtype(F.dtype, np.integer):
        raise input_error(name, f"faces must be integers, got {F.dtype}")
    F = F.astype(np.int64)
    mask = np.asarray(region_mask)
    _check_arrays(name, V, F, mask)
    repaired = (repair_and_warn(name, V, F, lambda report: SIGN_USE[report.sign()]) if warn
                else repair_mesh(V, F))
    if len(repaired.faces) == 0:
        raise input_error(name, "the mesh has zero surface area")
    _check_outward(name, repaired.vertices, repaired.faces)
    return PreparedMesh(repaired.vertices, repaired.faces, mask[repaired.vertex_map], repaired.report)


# --------------------------------------------------------------------------- sampling


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
        data = read_npz(path)
        missing = [k for k in _SAMPLE_KEYS if k not in data]
        if missing:
            raise input_error(path, f"not an SDF sample file (missing {', '.join(missing)})")
        wrong = [k for k in _SAMPLE_KEYS if data[k].dtype.kind != "f"]
        if wrong:
            raise input_error(path, f"{', '.join(wrong)} must hold floating-point numbers")
        samples = cls(**{k: np.asarray(data[k], dtype=np.float32) for k in _SAMPLE_KEYS})
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


def _sound_ball_samples(name: str, n: int, rng: np.random.Generator, vertices: np.ndarray, faces: np.ndarray,
                        local_band: float, max_rounds: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ball points ``(n, 3)`` and their SDF ``(n,)`` where the sign of an open mesh with large holes is
    still sound: within ``local_band`` of the surface (the side of the surface decides) or outside the convex
    hull of the vertices (outside any closing of the holes: ``+|d|``). Drawn by rejection from
    :func:`sample_ball`; the other points of the ball are never used."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(vertices, qhull_options="QJ").equations  # (K, 4): n . x + d <= 0 inside; joggled: flat too
    points, values, have = [], [], 0
    for _ in range(max_rounds):
        draw = sample_ball(2 * n, rng)
        d = signed_distance(draw, vertices, faces, sign="auto", local_band=local_band)
        outside = (draw @ hull[:, :3].T + hull[:, 3] > 1e-9).any(axis=1)
        keep = outside | (np.abs(d) <= local_band)
        points.append(draw[keep])
        values.append(np.where(outside, np.abs(d), d)[keep])
        have += int(keep.sum())
        if have >= n:
            return np.concatenate(points)[:n], np.concatenate(values)[:n]
    raise input_error(name, "too few unit-ball points with a trustworthy sign (the mesh fills its convex hull "
                            "and its holes are large): close the holes or cut the mesh")


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
        vertices: ``(V, 3)`` already inside the unit ball (see :class:`Similarity`).
        faces: ``(F, 3)``; defects are repaired first (:func:`prepare_mesh`, silently here) and with
            ``sign="auto"`` the repair report picks the sign mode.
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
    prepared = prepare_mesh(name, vertices, faces, region_mask, warn=False)
    V, F, mask = prepared.vertices, prepared.faces, prepared.region_mask
    sound_ball = sign == "auto" and prepared.sign == "untrusted"
    if sign == "auto" and prepared.sign != "untrusted":
        sign = prepared.sign
    if np.linalg.norm(V, axis=1).max() > 1.0:
        raise input_error(name, "vertices lie outside the unit ball: normalise the mesh first")
    rng = np.random.default_rng(seed)
    normals = vertex_normals(torch.from_numpy(V), torch.from_numpy(F)).numpy()
    in_face = face_region(F, mask)
    regions = {"face": F[in_face], "nonface": F[~in_face]}
    counts = dict(zip(("face", "nonface"), _split(n_surface, face_fraction, in_face.any(), (~in_face).any())))
    near_counts = dict(zip(("face", "nonface"), _split(n_near, face_fraction, in_face.any(), (~in_face).any())))

    def surface(region: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        samples = sample_surface(V, regions[region], n, rng, normals)
        return samples.points, samples.normals

    out: dict[str, np.ndarray] = {}
    for region in ("face", "nonface"):
        out[f"{region}_points"], out[f"{region}_normals"] = surface(region, counts[region])
    near = {region: np.stack([surface(region, near_counts[region])[0] for _ in sigmas]) for region in regions}
    for region in regions:
        near[region] += rng.standard_normal(near[region].shape) * np.asarray(sigmas)[:, None, None]
    near_queries = [near["face"].reshape(-1, 3), near["nonface"].reshape(-1, 3)]
    if sound_ball:
        ball, ball_sdf = _sound_ball_samples(name, n_ball, rng, V, F, local_band)
        sdf = np.concatenate([signed_distance(np.concatenate(near_queries), V, F, sign=sign, local_band=local_band,
                                              progress=progress), ball_sdf])
    else:
        ball = sample_ball(n_ball, rng)
        sdf = signed_distance(np.concatenate([*near_queries, ball]), V, F, sign=sign, local_band=local_band,
                              progress=progress)
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
                      normal_maps: NormalMapSettings | None = None, overwrite: bool = False,
                      progress: bool = True, similarity: Similarity | None = None) -> Path:
    """Pre-compute SDF samples for every mesh and write a dataset folder, all or nothing.

    Layout: ``<out_dir>/<name>.npz`` per shape (:meth:`SdfSamples.save`) and ``sdf_dataset.json`` with the
    names, the source unit, each shape's :class:`Similarity`, its repair report (:func:`prepare_mesh`: repaired
    meshes are sampled; one warning line per defective mesh on stderr), its sign mode (``pseudonormal``, ``auto``,
    ``winding``, or ``untrusted``: an open mesh with large holes, whose ball samples are only those with a sound
    sign, see :func:`_sound_ball_samples`) and the settings. Everything is written
    into a temporary sibling folder that is renamed to ``out_dir`` at the end (:func:`morphable.io.atomic_folder`).
    With ``normal_maps``, ground-truth normal maps of every normalised mesh go to ``<name>_normals.npz``
    (:mod:`morphable.data.normal_maps`), listed as the shape's ``normal_maps`` entry.

    Args:
        meshes: ``(name, vertices (V, 3), faces (F, 3), region_mask (V,))`` in source units; names are
            unique file stems.
        out_dir: the dataset folder (must not exist or be empty unless ``overwrite``).
        unit: source unit: m, cm, mm or millimetres per unit (:func:`morphable.io.parse_unit`).
        normalisation: ``"shared"``: one similarity fitted to all meshes (keeps sizes, maps held-out
            data the same way); ``"per_shape"``: each mesh fills the sphere on its own.
        radius: bounding-sphere radius after normalisation.
        n_surface, n_near, n_ball, face_fraction, sigmas, sign, local_band: see
            :func:`precompute_sdf_samples`.
        seed: shape ``i`` uses seed ``(seed, i)``.
        normal_maps: views, resolution and camera distance of the ground-truth normal maps (None: none).
        overwrite: replace an existing non-empty ``out_dir``.
        progress: progress bars.
        similarity: one given similarity for every shape (e.g. fitted over more meshes than these, as
            :mod:`morphable.data.deformation` does over neutral and posed heads); overrides ``normalisation``
            and ``radius``, and is recorded as ``"normalisation": "given"``.

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
    check_output_folder(out_dir, overwrite)
    prepared = [(name, prepare_mesh(name, vertices, faces, mask)) for name, vertices, faces, mask in meshes]
    if normalisation not in ("shared", "per_shape"):
        raise ValueError(f"unknown normalisation {normalisation!r}")
    if similarity is not None:
        shared, normalisation = similarity, "given"
    else:
        shared = Similarity.fit([p.vertices for _, p in prepared], radius) if normalisation == "shared" else None

    cameras = view_cameras(normal_maps, radius) if normal_maps is not None else []
    with atomic_folder(out_dir) as tmp:
        shapes = []
        items = enumerate(prepared)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, total=len(prepared), desc="SDF samples", unit="shape")
        for i, (name, mesh) in items:
            V, F, M, report = mesh.vertices, mesh.faces, mesh.region_mask, mesh.report
            sim = shared or Similarity.fit([V], radius)
            shape_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            samples = precompute_sdf_samples(
                sim.apply(V), F, M, n_surface=n_surface, n_near=n_near, n_ball=n_ball, face_fraction=face_fraction,
                sigmas=sigmas, sign=sign, local_band=local_band, seed=shape_seed, progress=progress, name=name)
            samples.save(tmp / f"{name}.npz")
            shapes.append({"name": name, "file": f"{name}.npz", "similarity": sim.to_dict(), "n_vertices": len(V),
                           "n_faces": len(F), "open_edges": int(edge_report(F, len(V)).n_open_edges),
                           "sign": mesh.sign if sign == "auto" else sign, "repair": dataclasses.asdict(report)})
            if normal_maps is not None:
                write_normal_maps(tmp / f"{name}_normals.npz", render_normal_maps(sim.apply(V), F, cameras))
                shapes[-1]["normal_maps"] = f"{name}_normals.npz"
        settings = {"normalisation": normalisation, "radius": radius, "n_surface": n_surface, "n_near": n_near,
                    "n_ball": n_ball, "face_fraction": face_fraction, "sigmas": list(map(float, sigmas)),
                    "sign": sign, "local_band": local_band, "seed": seed}
        if normal_maps is not None:
            settings["normal_maps"] = normal_maps.to_dict(radius)
        write_json(tmp / DATASET_JSON, {"format_version": FORMAT_VERSION, "unit": unit, "settings": settings,
                                        "shapes": shapes})
    return out_dir


def _dataset_member(root: Path, info_path: Path, name: Any) -> Path:
    """``root / name`` for a ``file`` entry of the dataset's JSON, which must name a file inside ``root``:
    no absolute path, no ``..``, no link that leads out of the folder."""
    if not isinstance(name, str) or not name:
        raise input_error(info_path, f"'file' entries must be non-empty strings, got {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise input_error(info_path, f"'file' entry '{name}' leaves the dataset folder (absolute or '..')")
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise input_error(info_path, f"'file' entry '{name}' is a link leading out of the dataset folder")
    return path


def item_generator(seed: int, epoch: int | None, index: int, *stream: int) -> torch.Generator | None:
    """The generator of item ``index``'s random draw in ``epoch``, seeded by a 63-bit hash of
    ``(seed, epoch, index, *stream)`` (``stream`` tells apart several draws of one item); None (torch's global
    generator) while ``epoch`` is None, i.e. before a dataset's ``set_epoch``."""
    if epoch is None:
        return None
    key = [seed, epoch, index, *stream]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1))


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
            if not all(isinstance(s["name"], str) and s["name"] for s in shapes):
                raise ValueError("every shape needs a non-empty string 'name'")
            self.names = [s["name"] for s in shapes]
            self.similarities = [Similarity.from_dict(s["similarity"]) for s in shapes]
            files = [_dataset_member(self.root, info_path, s["file"]) for s in shapes]
            self.normal_map_files = [_dataset_member(self.root, info_path, s["normal_maps"]) if "normal_maps" in s
                                     else None for s in shapes]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise input_error(info_path, f"malformed SDF dataset description ({exc!r})") from None
        for name, sim in zip(self.names, self.similarities):
            if (len(sim.translation) != 3 or not np.isfinite([sim.scale, *sim.translation]).all()
                    or not SCALE_RANGE[0] < sim.scale < SCALE_RANGE[1] or np.abs(sim.translation).max() > 1e12):
                raise input_error(info_path, f"shape '{name}': the similarity needs a scale in "
                                             f"({SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}) and a finite 3D translation")
        if not files:
            raise input_error(info_path, "the dataset has no shapes")
        if progress:
            from tqdm import tqdm

            files = tqdm(files, desc=f"loading {self.root.name}", unit="shape", leave=False)
        self.samples = [SdfSamples.load(p) for p in files]
        self.counts = counts
        self.seed = seed
        self.epoch: int | None = None
        self._normal_maps: dict[int, NormalMaps] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Make the draws of this epoch deterministic (see the class docstring)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = item_generator(self.seed, self.epoch, index)
        item = subsample(self.samples[index], self.counts, generator)
        item["index"] = torch.tensor(index, dtype=torch.long)
        return item

    def normal_maps(self, index: int) -> NormalMaps:
        """The ground-truth normal maps of shape ``index`` (:func:`morphable.data.normal_maps.read_normal_maps`),
        read on first use and kept."""
        if self.normal_map_files[index] is None:
            raise input_error(self.root / DATASET_JSON, f"shape '{self.names[index]}' has no normal maps (write the "
                                                        "dataset with 'morphable data sdf --views N')")
        if index not in self._normal_maps:
            self._normal_maps[index] = read_normal_maps(self.normal_map_files[index])
        return self._normal_maps[index]

    def to_mm(self, index: int, length: float | np.ndarray) -> float | np.ndarray:
        """A length in normalised units of shape ``index``, in millimetres."""
        return self.similarities[index].to_mm(length, self.unit)

    def describe(self) -> str:
        """One line: shapes, unit, memory."""
        mb = sum(s.nbytes for s in self.samples) / 1e6
        return f"{len(self)} shapes ({self.unit}), {mb:.1f} MB of samples, settings {json.dumps(self.settings)}"
