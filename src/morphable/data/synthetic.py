"""Procedural synthetic faces: the embedded default dataset (no download, deterministic for a seed).

One fixed closed mesh (``V = 5048`` vertices, ``F = 10092`` outward triangles, metres) bent into a head
per identity (:mod:`morphable.data.synthetic_head`: eye sockets with eyeballs and lids, a nose with
nostrils, lips around a mouth slit, chin, cheekbones; identities from a non-Gaussian law with age and
weight effects) and posed per expression by a rig of real rotations and volume-kept bulges
(:mod:`morphable.data.synthetic_rig`: a jaw turning about its hinge, lids sliding over the eyeball,
sticky lips, skin sliding over bone, per-identity ways of making each expression). Optionally the head
turns on the neck (``pose``, degrees).

Sequences. :func:`expression_curve` ramps ``0 -> 1 -> 0`` (``sin^2``) like COMA recordings;
:func:`generate` gives every subject its own random stream (identity, then per expression a peak
intensity in [0.8, 1], an asymmetry in [-0.25, 0.25], a head-pose direction and a muscle mix: how
strongly this person uses each part of the expression).

Regions. :data:`REGION_NAMES` labels every vertex (:func:`region_parts`, from the mean head: the same for
every identity); :func:`region_labels` is the face / non-face mask. ``write_synthetic_dataset`` writes the
parts as ``regions.npy`` ``(V,)`` int8 with their names in ``dataset.json`` (``"regions"``).

Measured (seed 0): PCA with 8 components leaves a mean interpolation error of 1.00 mm on 12 x 12 x 5 and
0.89 mm on the default 12 x 12 x 10 (the generator before: 0.67 and 0.58 mm); a subject's apex displacements
fitted by the other subjects' (least squares, per expression) leave 22 % (before: 13 %); generating
12 x 12 x 10 meshes takes about 3.5 s on one CPU core (``docs/data.md``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphable.data.synthetic_head import (
    IDENTITY_PARAMS,
    N_IDENTITY_PARAMS,
    Head,
    build_head,
    gauss,
    sample_identities,
    sphere,
)
from morphable.data.synthetic_rig import EXPRESSIONS, Rig, head_pose
from morphable.errors import MorphableError

__all__ = [
    "EXPRESSIONS",
    "IDENTITY_PARAMS",
    "N_IDENTITY_PARAMS",
    "REGIONS_FILE",
    "REGION_NAMES",
    "SyntheticFaces",
    "expression_curve",
    "face_vertices",
    "generate",
    "region_labels",
    "region_parts",
    "rig",
    "sample_identities",
    "template_mesh",
    "write_synthetic_dataset",
]

REGION_NAMES: tuple[str, ...] = ("head", "forehead", "eyes", "nose", "cheeks", "mouth", "chin")
REGIONS_FILE = "regions.npy"


@dataclass
class SyntheticFaces:
    """A generated dataset: meshes ordered subject-major, then expression, then frame.

    ``vertices (N, V, 3)`` float32 metres; ``faces (F, 3)`` int64; ``subjects``, ``expressions``,
    ``frames`` labels of length ``N``; ``identity_params (subjects, N_IDENTITY_PARAMS)``;
    ``region_labels (V,)`` int8, 1 on the face (front of the head), 0 elsewhere.
    """

    vertices: np.ndarray
    faces: np.ndarray
    subjects: list[str]
    expressions: list[str]
    frames: list[int]
    identity_params: np.ndarray
    region_labels: np.ndarray


@functools.lru_cache(maxsize=1)
def _template() -> Head:
    return build_head(np.zeros(N_IDENTITY_PARAMS))


def template_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Neutral mean head: vertices ``(V, 3)`` float64 metres (``V = 5048``), faces ``(F, 3)`` int64.

    Computed once and cached; the returned arrays are copies."""
    return _template().vertices.copy(), sphere()[1].copy()


def rig(identity: np.ndarray) -> Rig:
    """The expression rig (:class:`morphable.data.synthetic_rig.Rig`) of identity ``(N_IDENTITY_PARAMS,)``."""
    return Rig(build_head(identity), sphere()[1])


@functools.lru_cache(maxsize=1)
def _parts() -> np.ndarray:
    h = _template()
    lm = h.lm
    x, y, ax = h.x, h.y, np.abs(h.x)
    face = (h.front > 0.5) & (y > lm.chin_bottom_y - 0.01) & (y < lm.brow_y + 0.035) & (ax < 0.062)
    parts = np.where(face, 4, 0)  # cheeks: the rest of the face
    parts[face & (y > lm.brow_y - 0.006)] = 1
    parts[face & (h.eyes[0].w + h.eyes[1].w + gauss(ax, y, lm.eye_x, lm.eye_y, 0.013, 0.009) > 0.5)] = 2
    parts[face & (ax < 0.02) & (y < lm.eye_y + 0.006) & (y > lm.nose_tip_y - 0.009)
          & (ax < 0.006 + 0.5 * (lm.eye_y + 0.006 - y))] = 3
    parts[face & (np.hypot(x / (lm.mouth_half_width + 0.008), (y - lm.mouth_y) / 0.016) < 1)] = 5
    parts[face & (y < lm.mouth_y - 0.016) & (ax < 0.03)] = 6
    return parts.astype(np.int8)


def region_parts() -> np.ndarray:
    """``(V,)`` int8 index into :data:`REGION_NAMES` of every vertex (0 ``head``: scalp, ears, neck, back;
    the others make up the face); from the mean head, the same for every identity."""
    return _parts().copy()


def region_labels() -> np.ndarray:
    """``(V,)`` int8: 1 for the face (front of the head, from below the chin to above the brows, between
    the temples), 0 for the rest of the head: ``region_parts() > 0``."""
    return (_parts() > 0).astype(np.int8)


def expression_curve(frames: int) -> np.ndarray:
    """Intensity ``(frames,)`` over a sequence, like a COMA recording: ``0 -> 1 -> 0``.

    With ``p = (frames - 1) // 2``: ``w_i = sin^2(pi/2 i/p)`` for ``i <= p`` and
    ``sin^2(pi/2 (frames-1-i)/(frames-1-p))`` after, so the first and last frames are 0 and frame ``p``
    is exactly 1. One frame gives ``[1]`` (the apex), two give ``[0, 1]``.
    """
    if frames < 1:
        raise MorphableError(f"frames must be at least 1, got {frames}")
    if frames < 3:
        return np.array([1.0]) if frames == 1 else np.array([0.0, 1.0])
    i = np.arange(frames, dtype=np.float64)
    peak = (frames - 1) // 2
    t = np.where(i <= peak, i / peak, (frames - 1 - i) / (frames - 1 - peak))
    return np.sin(0.5 * np.pi * t) ** 2


def _intensity(r: Rig, weight: float, asymmetry: float) -> np.ndarray:
    """Per-vertex intensity ``g = weight (1 + a tanh(X / 15 mm)) strength`` ``(V,)``, ``a`` = ``asymmetry`` plus
    the identity's dominant side, clipped to (-0.4, 0.4); ``strength`` the identity's muscle-strength map; ``g``
    is capped at ``1.4 weight`` so that no part is driven far past its designed apex."""
    a = float(np.clip(asymmetry + r.side, -0.4, 0.4))
    return np.minimum(weight * (1 + a * np.tanh(r.head.x / 0.015)) * r.strength, 1.4 * weight)


def _check_expression(expression: str) -> None:
    if expression not in EXPRESSIONS:
        raise MorphableError(f"unknown expression {expression!r}; expected one of {', '.join(EXPRESSIONS)}")


def _posed(r: Rig, expression: str, weight: float, asymmetry: float, pose: np.ndarray,
           mix: np.ndarray | None) -> np.ndarray:
    p = r.head.vertices if weight == 0.0 else r.pose(expression, _intensity(r, weight, asymmetry), mix)
    return head_pose(p, *(weight * pose)) if np.any(pose) else p


def face_vertices(identity: np.ndarray, expression: str, weight: float, asymmetry: float = 0.0,
                  pose: tuple[float, float, float] = (0.0, 0.0, 0.0), mix: np.ndarray | None = None) -> np.ndarray:
    """Vertices ``(V, 3)`` float64 metres of the head with identity parameters ``identity
    (N_IDENTITY_PARAMS,)`` showing ``expression`` at intensity ``weight`` in [0, 1] (0 = neutral), with a
    left/right ``asymmetry`` (|a| < 1; the side ``x > 0`` gets about ``1 + a`` times the intensity) and the
    head turned on the neck by ``weight * pose`` (yaw, pitch, roll in radians); ``mix (4,)`` scales the
    expression's parts (:meth:`morphable.data.synthetic_rig.Rig.pose`; default ones)."""
    identity = np.asarray(identity, dtype=np.float64)
    if identity.shape != (N_IDENTITY_PARAMS,):
        raise MorphableError(f"identity must have shape ({N_IDENTITY_PARAMS},), got {identity.shape}")
    _check_expression(expression)
    if not 0.0 <= weight <= 1.0:
        raise MorphableError(f"expression weight must be in [0, 1], got {weight}")
    if not abs(asymmetry) < 1.0:
        raise MorphableError(f"asymmetry must be in (-1, 1), got {asymmetry}")
    return _posed(rig(identity), expression, weight, asymmetry, np.asarray(pose, dtype=np.float64), mix)


def generate(subjects: int, expressions: int, frames: int, seed: int, pose: float = 0.0) -> SyntheticFaces:
    """All meshes of ``subjects`` x the first ``expressions`` of :data:`EXPRESSIONS` x ``frames``.

    Subject ``s`` draws from its own stream ``SeedSequence(seed).spawn(subjects)[s]``: its identity
    (:func:`sample_identities`), then for each of the twelve expressions a peak intensity in [0.8, 1],
    an asymmetry in [-0.25, 0.25], a head-pose direction (yaw, pitch, roll uniform in [-1, 1], scaled
    by ``pose`` degrees; 0: no head motion) and a muscle mix (4 factors uniform in [0.5, 1.5]); frame ``f``
    is ``face_vertices(identity, expression, peak * expression_curve(frames)[f], asymmetry, pose, mix)``.
    So a smaller dataset is a prefix (in subjects and in expressions) of a larger one with the same seed,
    whatever ``pose``.
    """
    for name, value, low, high in (("subjects", subjects, 1, None), ("expressions", expressions, 1, len(EXPRESSIONS)),
                                   ("frames", frames, 1, None)):
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high else f"at least {low}"
            raise MorphableError(f"{name} must be {bound}, got {value}")
    if not 0.0 <= pose <= 45.0:
        raise MorphableError(f"pose must be between 0 and 45 degrees, got {pose}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(subjects)]
    identities = np.vstack([sample_identities(1, rng) for rng in streams])
    peaks = np.stack([rng.uniform(0.8, 1.0, len(EXPRESSIONS)) for rng in streams])
    asymmetries = np.stack([rng.uniform(-0.25, 0.25, len(EXPRESSIONS)) for rng in streams])
    poses = np.stack([rng.uniform(-1.0, 1.0, (len(EXPRESSIONS), 3)) for rng in streams]) * np.radians(pose)
    mixes = np.stack([rng.uniform(0.5, 1.5, (len(EXPRESSIONS), 4)) for rng in streams])
    curve = expression_curve(frames)
    names = EXPRESSIONS[:expressions]
    n_vertices = len(sphere()[0])
    vertices = np.empty((subjects * len(names) * frames, n_vertices, 3), dtype=np.float32)
    labels_s, labels_e, labels_f = [], [], []
    i = 0
    for s in range(subjects):
        r = rig(identities[s])
        for e, name in enumerate(names):
            for f, w in enumerate(peaks[s, e] * curve):
                vertices[i] = _posed(r, name, w, asymmetries[s, e], poses[s, e], mixes[s, e])
                labels_s.append(f"subject_{s:02d}")
                labels_e.append(name)
                labels_f.append(f)
                i += 1
    return SyntheticFaces(vertices, sphere()[1].copy(), labels_s, labels_e, labels_f, identities, region_labels())


def write_synthetic_dataset(out: str | os.PathLike, subjects: int, expressions: int, frames: int, seed: int,
                            overwrite: bool = False, pose: float = 0.0) -> Path:
    """Generate synthetic faces (:func:`generate`) and write them in the COMA layout with ``dataset.json``
    (unit m, the generator settings, the region names), ``regions.npy`` (:func:`region_parts`) and
    ``preview.png``; returns the folder."""
    from morphable.data.registered import write_coma_layout
    from morphable.viz import dataset_preview

    faces_data = generate(subjects, expressions, frames, seed, pose)
    meta = {"source": "morphable synthetic faces", "seed": seed, "subjects": subjects,
            "expressions": expressions, "frames": frames, "pose_degrees": pose,
            "regions": {"file": REGIONS_FILE, "names": list(REGION_NAMES), "face": list(range(1, len(REGION_NAMES)))}}
    out_dir = write_coma_layout(out, faces_data.vertices, faces_data.faces, faces_data.subjects,
                                faces_data.expressions, faces_data.frames, "m", meta, overwrite=overwrite,
                                arrays={REGIONS_FILE: region_parts()})
    dataset_preview(out_dir, faces_data.vertices, faces_data.faces, faces_data.subjects, faces_data.expressions,
                    f"synthetic faces (seed {seed})")
    return out_dir
