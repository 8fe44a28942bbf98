"""Procedural test meshes: a closed icosphere, a mesh of several components, an open cap, an open sheet,
real faces."""

from __future__ import annotations

import numpy as np
import trimesh

from conftest import ICT_NPZ, MEDIAPIPE_OBJ, require

ICT_SKIN_VERTICES = 11248


def icosphere(subdivisions: int = 3, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed unit icosphere, outward-oriented: ``(V, 3)`` float64, ``(F, 3)`` int64."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def bumpy_sphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere with a smooth radial bump pattern (curvature varies, so QEM has a choice)."""
    v, f = icosphere(subdivisions)
    r = 1.0 + 0.15 * np.sin(3 * v[:, 0]) * np.cos(2 * v[:, 1]) + 0.1 * v[:, 2] ** 2
    return v * r[:, None], f


def head_with_eyes(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Three closed components like the FLAME/COMA template: a head-like ellipsoid and two eyeballs."""
    head_v, head_f = bumpy_sphere(subdivisions)
    head_v = head_v * np.array([0.8, 1.0, 0.9])
    eye_v, eye_f = icosphere(2, radius=0.12)
    parts_v = [head_v, eye_v + [-0.3, 0.2, 1.0], eye_v + [0.3, 0.2, 1.0]]
    parts_f, offset = [], 0
    for pv, pf in zip(parts_v, [head_f, eye_f, eye_f]):
        parts_f.append(pf + offset)
        offset += len(pv)
    return np.concatenate(parts_v), np.concatenate(parts_f)


def open_cap(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy sphere with its top cut away (an open mesh with one boundary loop), compacted."""
    v, f = bumpy_sphere(subdivisions)
    f = f[v[f].mean(axis=1)[:, 2] < 0.4]
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def ict_skin() -> tuple[np.ndarray, np.ndarray]:
    """The ICT-FaceKit neutral outer skin surface (vertices 0..11247, cm); skips without the data."""
    with np.load(require(ICT_NPZ)) as data:
        v = data["neutral"][:ICT_SKIN_VERTICES].astype(np.float64)
        t = data["triangles"].astype(np.int64)
    return v, t[(t < ICT_SKIN_VERTICES).all(axis=1)]


def mediapipe_face() -> tuple[np.ndarray, np.ndarray]:
    """The 468-vertex MediaPipe canonical face; skips without the data."""
    from morphable.io import read_obj

    mesh = read_obj(require(MEDIAPIPE_OBJ))
    return mesh.vertices, mesh.faces


def tessellation_gap(V: np.ndarray, F: np.ndarray, radius: float) -> float:
    """Largest distance between a sphere and its inscribed icosphere: radius minus the closest face plane."""
    tri = V[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return radius - float(np.abs((n * tri[:, 0]).sum(1) / np.linalg.norm(n, axis=1)).min())


def sheet(n: int = 8, half: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An open square ``[-half, half]^2`` at z = 0 with normals +z."""
    g = np.linspace(-half, half, n + 1)
    x, y = np.meshgrid(g, g, indexing="ij")
    V = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return V, F
