"""Plain Lambertian renders of ICT-FaceKit faces whose 68 iBUG landmark pixels are known exactly.

They exist to derive and to test a landmark detector (:mod:`morphable.image.landmarks`): the ICT
``vertex_indices.json`` lists the 68 landmark vertices in iBUG order, so projecting them with the
render's camera gives the ground truth. The albedo is a flat skin tone with darker brows and lash lines, redder lips,
white eyeballs with a dark iris and pupil, and a dark mouth socket; shading is
``albedo * (ambient + (1 - ambient) max(0, n . l))`` with one directional light ``l`` (camera frame),
over a uniform background. Mesh parts rendered (ICT vertex ranges): face and head ``0..11247``, mouth
socket ``11248..13293``, eyeballs ``21451..24590``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ICT_HEAD = (0, 11248)
ICT_MOUTH_SOCKET = (11248, 13294)
ICT_EYEBALLS = (21451, 24591)

BROW = np.array([0.23, 0.15, 0.10])
LASHES = np.array([0.10, 0.07, 0.06])
LIPS = np.array([0.62, 0.30, 0.30])
SCLERA = np.array([0.92, 0.90, 0.88])
IRIS = np.array([0.25, 0.17, 0.10])
PUPIL = np.array([0.03, 0.03, 0.03])
MOUTH = np.array([0.25, 0.08, 0.08])
SKINS = ((0.87, 0.68, 0.55), (0.76, 0.55, 0.42), (0.55, 0.38, 0.27), (0.93, 0.78, 0.68))


@dataclass
class ICTFace:
    """The parts of ICT-FaceKit a render needs.

    Attributes:
        neutral: ``(V, 3)`` neutral vertices (cm).
        identity_modes: ``(K, V, 3)`` identity offsets (1 sigma each).
        triangles: ``(F, 3)`` the rendered triangles (head, mouth socket, eyeballs).
        landmarks: ``(68,)`` landmark vertex indices in iBUG order.
        albedos: one ``(V, 3)`` :func:`face_albedo` per skin tone of :data:`SKINS`.
    """

    neutral: np.ndarray
    identity_modes: np.ndarray
    triangles: np.ndarray
    landmarks: np.ndarray
    albedos: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ICTFace":
        """From an ICT-FaceKit folder holding ``ict_face_model_light_f32.npz`` and
        ``FaceXModel/vertex_indices.json`` (its ``idx_to_landmark_verts``)."""
        folder = Path(folder)
        with np.load(folder / "ict_face_model_light_f32.npz", allow_pickle=False) as data:
            arrays = [data[k] for k in ("neutral", "identity_modes", "triangles")]
        landmarks = json.loads((folder / "FaceXModel" / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
        return cls.from_arrays(*arrays, landmarks)

    @classmethod
    def from_arrays(cls, neutral: np.ndarray, identity_modes: np.ndarray, triangles: np.ndarray,
                    landmarks: np.ndarray) -> "ICTFace":
        """Keep the triangles whose corners all lie in the rendered parts."""
        t = np.asarray(triangles, dtype=np.int64)
        keep = np.zeros(len(t), dtype=bool)
        for lo, hi in (ICT_HEAD, ICT_MOUTH_SOCKET, ICT_EYEBALLS):
            keep |= ((t >= lo) & (t < hi)).all(axis=1)
        face = cls(np.asarray(neutral, dtype=np.float64), np.asarray(identity_modes, dtype=np.float32), t[keep],
                   np.asarray(landmarks, dtype=np.int64))
        face.albedos = [face_albedo(face, skin) for skin in SKINS]
        return face

    def vertices(self, coefficients: np.ndarray) -> np.ndarray:
        """``(V, 3)`` float64: ``neutral + sum_k c_k identity_modes[k]`` for ``coefficients (k,)``."""
        c = np.asarray(coefficients, dtype=np.float64)
        return self.neutral + np.tensordot(c, self.identity_modes[:len(c)].astype(np.float64), axes=1)


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each of ``points (N, 3)`` to the polyline ``(M, 3)``."""
    best = np.full(len(points), np.inf)
    for a, b in zip(polyline[:-1], polyline[1:]):
        ab = b - a
        s = np.clip((points - a) @ ab / float(ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + s[:, None] * ab), axis=1))
    return best


def _inside_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: even-odd rule for ``xy (N, 2)`` against a closed ``polygon (M, 2)``."""
    inside = np.zeros(len(xy), dtype=bool)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (a[1] > xy[:, 1]) != (b[1] > xy[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = a[0] + (xy[:, 1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
        inside ^= crosses & (xy[:, 0] < x_at)
    return inside


def face_albedo(face: ICTFace, skin: tuple[float, float, float]) -> np.ndarray:
    """``(V, 3)`` per-vertex albedo in ``[0, 1]`` on the neutral geometry.

    Brows: head vertices within 0.45 cm of the brow polylines (iBUG 17-21, 22-26), lifted 0.15 cm.
    Lash lines: head vertices within 0.12 cm of the closed eyelid polylines (36-41, 42-47).
    Lips: front head vertices inside the outer lip contour (48-59) seen along ``z``. Eyeballs: the angle
    from the eyeball's forward axis (``+z`` through its centroid) picks pupil (< 11 deg), iris (< 30 deg)
    or sclera.
    """
    v, lm = face.neutral, face.landmarks
    albedo = np.tile(np.asarray(skin, dtype=np.float64), (len(v), 1))
    head = np.arange(*ICT_HEAD)
    front = head[v[head, 2] > v[lm[36], 2] - 3.0]
    lift = np.array([0.0, 0.15, 0.0])
    for lo, hi in ((17, 22), (22, 27)):
        near = _segment_distance(v[front], v[lm[lo:hi]] + lift) < 0.45
        albedo[front[near]] = BROW
    for lo, hi in ((36, 42), (42, 48)):
        eyelid = v[lm[list(range(lo, hi)) + [lo]]]
        albedo[front[_segment_distance(v[front], eyelid) < 0.12]] = LASHES
    lips = _inside_polygon(v[front, :2], v[lm[48:60], :2]) & (v[front, 2] > v[lm[48], 2] - 1.0)
    albedo[front[lips]] = LIPS
    albedo[np.arange(*ICT_MOUTH_SOCKET)] = MOUTH
    eyes = np.arange(*ICT_EYEBALLS)
    for side in (v[eyes, 0] < 0, v[eyes, 0] >= 0):
        idx = eyes[side]
        d = v[idx] - v[idx].mean(axis=0)
        angle = np.degrees(np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1.0, 1.0)))
        albedo[idx] = np.where((angle < 11)[:, None], PUPIL, np.where((angle < 30)[:, None], IRIS, SCLERA))
    return albedo


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """``(3, 3)`` head rotation ``R = R_z(roll) R_x(pitch) R_y(yaw)`` (degrees; model axes: ``y`` up,
    ``z`` towards the viewer)."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Rx @ Ry


def render_face(face: ICTFace, vertices: np.ndarray, albedo: np.ndarray, *, yaw: float = 0.0,
                pitch: float = 0.0, roll: float = 0.0, size: int = 256, distance: float = 70.0,
                fov_deg: float = 25.0, light: tuple[float, float, float] = (0.3, 0.5, 1.0),
                ambient: float = 0.35, background: tuple[float, float, float] = (0.55, 0.6, 0.65),
                ) -> tuple[np.ndarray, np.ndarray]:
    """Render one posed face; return ``image (size, size, 3) uint8`` and ``landmarks (68, 2)`` pixels.

    The head turns by :func:`rotation` about the midpoint of the outer eye corners lowered by 3 cm (near
    the face's centre), seen by a camera on the ``+z`` axis ``distance`` cm away (OpenCV axes, ``y``
    down in the image). ``light`` points from the light towards the scene, in the camera frame.
    """
    import torch

    from morphable.render.camera import Camera
    from morphable.render.raster import interpolate, rasterize

    lm = face.landmarks
    centre = 0.5 * (vertices[lm[36]] + vertices[lm[45]]) - np.array([0.0, 3.0, 0.0])
    posed = (vertices - centre) @ rotation(yaw, pitch, roll).T
    camera = Camera.look_at((0.0, 0.0, distance), fov_deg=fov_deg, width=size, height=size)
    v = torch.as_tensor(posed, dtype=torch.float32)
    hit = rasterize(v, face.triangles, camera)
    colour = interpolate(torch.as_tensor(albedo, dtype=torch.float32), face.triangles, hit.face_index, hit.bary)
    to_light = -torch.nn.functional.normalize(torch.as_tensor(light, dtype=torch.float32), dim=0)
    lambert = (hit.normals @ to_light).clamp(min=0.0)
    shaded = colour * (ambient + (1.0 - ambient) * lambert)[..., None]
    image = torch.where(hit.mask[..., None], shaded, torch.as_tensor(background, dtype=torch.float32))
    pixels = camera.project(camera.world_to_camera(torch.as_tensor(posed[lm], dtype=torch.float64)))
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), pixels.numpy()


def identity_render(face: ICTFace, seed: int, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                    size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_face` of identity ``seed``: coefficients ``N(0, 1)`` over all identity modes, skin
    tone ``SKINS[seed % 4]`` and a light ``(U(-0.6, 0.6), U(-0.2, 0.8), 1)``, all drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    coefficients = rng.normal(size=len(face.identity_modes))
    light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.2, 0.8), 1.0)
    return render_face(face, face.vertices(coefficients), face.albedos[seed % len(face.albedos)], yaw=yaw,
                       pitch=pitch, roll=roll, size=size, light=light)
