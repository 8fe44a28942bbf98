"""Per-identity face detail that a linear face model cannot express (HRN's mid and high frequency bands).

The synthetic photos of :mod:`morphable.data.photos` are made from a linear model, so its coefficients
would explain them exactly; HRN's detail levels need something beyond. Two bands, fixed per identity
(expression does not change them: HRN's static-detail limitation), each scaled to a stated RMS:

**Mid band** (geometry; HRN's 64 x 64 deformation map recovers it): a vertex displacement along the mean
shape's normals ``n_v``, a sum of ``K = 16`` Gaussian bumps

    d(p) = sum_k a_k exp(-|p - c_k|^2 / (2 r_k^2)),  a_k ~ N(0, 1),  r_k ~ U(0.6, 1.5) cm,

centred ``c_k`` on mean-shape skin vertices within 6 cm of the landmarks' centroid (the face, not the back of
the head), on the skin only, then made orthogonal to the model's span: with ``B (3V, K_s + K_e)`` the shape
and expression modes and ``B_skin`` their rows on the skin (zero elsewhere), ``D = d n`` flattened to
``(3V,)`` becomes ``D - Q Q^T D`` (``Q``: an orthonormal basis of ``B_skin``'s columns). ``D`` stays on the
skin (eyes and mouth socket do not move) and ``B^T D = B_skin^T D = 0``: no coefficient vector reproduces any
of it (the least-squares fit of the model to the displaced mesh leaves it all), and finally scaled to ``mid_mm`` RMS vertex displacement over the face vertices (skin vertices within the
landmarks' radius of their centroid). It moves the rendered and the ground-truth mesh.

**High band** (shading; HRN's 256 x 256 displacement map): a scalar displacement map on the albedo
texture's chart (``position_map`` texels, model units along the normal) built from 3D positions, so it is
continuous across seams: horizontal forehead wrinkles (``sin`` of height at 0.6-1.0 cm wavelength above the
brows), crow's feet (radial ripples of 0.3-0.5 cm around the outer eye corners), nasolabial folds (a
0.25 cm wide groove along the line from each nose wing to the mouth corner), and pore-scale bumps (16 random
3D sinusoids of 0.15-0.4 cm wavelength), scaled to ``high_mm`` RMS over the face texels. It changes only the
shading normals (:func:`morphable.render.displacement.displaced_normal_map`); the mesh keeps no trace of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphable.data.albedo import _smoothstep
from morphable.errors import MorphableError

MID_BUMPS = 16
PORE_WAVES = 16
FACE_RADIUS_CM = 6.0


@dataclass(frozen=True)
class DetailSettings:
    """RMS sizes of the two bands in millimetres (0 switches a band off)."""

    mid_mm: float = 0.0
    high_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mid_mm", "high_mm"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value <= 10):
                raise MorphableError(f"--detail {name.split('_')[0]} must be in 0..10 mm, got {value}")

    @property
    def enabled(self) -> bool:
        return self.mid_mm > 0 or self.high_mm > 0


def face_vertices(mean: np.ndarray, landmarks: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """``(V,)`` bool: skin vertices within the landmarks' radius of their centroid (where the RMS is stated)."""
    marks = mean[landmarks]
    centre = marks.mean(axis=0)
    radius = np.linalg.norm(marks - centre, axis=1).max()
    return skin & (np.linalg.norm(mean - centre, axis=1) <= radius)


def span_basis(modes: np.ndarray) -> np.ndarray:
    """``Q (3V, r)``: an orthonormal basis of the space ``modes (K, 3V)`` (rows: the model's modes) span."""
    q, r = np.linalg.qr(np.asarray(modes, dtype=np.float64).T)
    keep = np.abs(np.diag(r)) > 1e-9 * np.abs(np.diag(r)).max()
    return q[:, keep]


def mid_band(rng: np.random.Generator, mean: np.ndarray, normals: np.ndarray, landmarks: np.ndarray,
             skin: np.ndarray, span: np.ndarray, cm: float, rms_mm: float) -> np.ndarray:
    """``(V, 3)`` vertex displacement of the module docstring (model units), RMS ``rms_mm`` over the face;
    ``span`` is :func:`span_basis` of the modes restricted to ``skin``."""
    centre = mean[landmarks].mean(axis=0)
    candidates = np.nonzero(skin & (np.linalg.norm(mean - centre, axis=1) <= FACE_RADIUS_CM * cm))[0]
    if len(candidates) == 0:
        raise MorphableError("no skin vertices near the landmarks to place face detail on")
    centres = mean[rng.choice(candidates, MID_BUMPS)]
    radii = rng.uniform(0.6, 1.5, MID_BUMPS) * cm
    amplitudes = rng.standard_normal(MID_BUMPS)
    d = (amplitudes * np.exp(-((mean[:, None] - centres[None]) ** 2).sum(-1) / (2 * radii ** 2))).sum(axis=1) * skin
    field = (d[:, None] * normals).reshape(-1)
    field -= span @ (span.T @ field)
    field = field.reshape(-1, 3)
    region = face_vertices(mean, landmarks, skin)
    rms = np.sqrt((field[region] ** 2).sum(axis=1).mean())
    return field * (rms_mm * cm / 10.0 / rms)


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def high_band(rng: np.random.Generator, position: np.ndarray, normal: np.ndarray, covered: np.ndarray,
              landmarks: np.ndarray, cm: float, rms_mm: float) -> np.ndarray:
    """``(H_t, W_t)`` float32 displacement map of the module docstring (model units) on a position map
    (``position``, ``normal (H_t, W_t, 3)``, ``covered (H_t, W_t)``, mean-shape ``landmarks (68, 3)``)."""
    p = position
    front = _smoothstep((normal[..., 2] - 0.1) / 0.4)  # the model frame's z points out of the face
    brow_y = landmarks[17:27, 1].max()
    wavelength = rng.uniform(0.6, 1.0) * cm
    forehead = _smoothstep((p[..., 1] - brow_y - 0.4 * cm) / (0.8 * cm)) * (1 - _smoothstep(
        (p[..., 1] - brow_y - 4.5 * cm) / (1.0 * cm))) * (1 - _smoothstep((np.abs(p[..., 0]) - 4.5 * cm) / (1.5 * cm)))
    field = forehead * np.sin(2 * np.pi * p[..., 1] / wavelength + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.7, 1.3)
    for corner in (36, 45):
        r = np.linalg.norm(p - landmarks[corner], axis=-1)
        ripple = np.sin(2 * np.pi * r / (rng.uniform(0.3, 0.5) * cm))
        side = np.sign(landmarks[corner, 0]) * (p[..., 0] - landmarks[corner, 0]) > 0  # beside the eye, not on it
        field += 0.7 * side * ripple * np.exp(-((r - 1.2 * cm) / (0.6 * cm)) ** 2)
    for wing, mouth in ((31, 48), (35, 54)):
        distance = _distance_to_segment(p, landmarks[wing], landmarks[mouth])
        field -= 1.2 * np.exp(-(distance / (0.25 * cm)) ** 2)
    waves = rng.standard_normal((PORE_WAVES, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True) * (rng.uniform(0.15, 0.4, PORE_WAVES)[:, None] * cm / (2 * np.pi))
    phases = rng.uniform(0, 2 * np.pi, PORE_WAVES)
    field += 0.5 * np.sin(p @ waves.T + phases).sum(axis=-1) / np.sqrt(PORE_WAVES)
    field *= front * covered
    centre = landmarks.mean(axis=0)
    radius = np.linalg.norm(landmarks - centre, axis=1).max()
    region = covered & (np.linalg.norm(p - centre, axis=-1) <= radius) & (front > 0.5)
    rms = np.sqrt((field[region] ** 2).mean())
    return (field * (rms_mm * cm / 10.0 / rms)).astype(np.float32)
