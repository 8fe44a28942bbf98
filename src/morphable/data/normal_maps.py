"""Ground-truth normal maps of training meshes for the 2D objectives (thesis sec. 4.2.3, 5.2).

Cameras: ``views`` Fibonacci-lattice cameras (:func:`morphable.render.fibonacci_views`, up vector chosen per
view near the poles) on a sphere of radius ``radius`` about the origin, each looking at it. The thesis puts
them at 2.6 for heads inside the unit sphere; by default the radius is ``2.6 r`` for data normalised to the
bounding radius ``r`` (0.9 by default), and the vertical field of view, ``2 asin(1 / 2.6) = 45.2`` degrees
rounded up to 46, frames the bounding sphere whatever ``r`` is.

Maps: each normalised mesh is rasterised (:func:`morphable.render.rasterize`, interpolated area-weighted
vertex normals, OpenCV convention, the camera frame ``n_c = R n``), the convention of
:func:`morphable.render.render_views`. **Back faces are masked**: an open mesh (ICT skin: neck, mouth and
eye holes) shows the inside of its far wall through a hole; a pixel stays in the mask only when both the
face normal and the interpolated normal face the camera, ``n . x_c < 0`` with ``x_c`` the pixel's
camera-frame surface point (the holes are not closed: what lies behind a hole is unknown).

File ``<stem>_normals.npz`` (uncompressed): ``normals (V, H, W, 3)`` float16 (0 off the mask),
``mask (V, H, W)`` bool, ``K (3, 3)`` float64 intrinsics, ``poses (V, 4, 4)`` float64 world-to-camera,
``format_version``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morphable.errors import MorphableError, input_error
from morphable.io import atomic_path, read_npz
from morphable.render import Camera, fibonacci_views, rasterize

THESIS_VIEW_RADIUS = 2.6
"""Thesis sec. 5.2: camera distance for heads inside the unit sphere."""
FOV_DEG = 46.0
"""Vertical field of view: ``2 asin(1 / 2.6)`` (45.2 degrees) rounded up, so the bounding sphere fits."""
FORMAT_VERSION = 1
_KEYS = ("normals", "mask", "K", "poses")


@dataclass(frozen=True)
class NormalMapSettings:
    """``views`` cameras, ``resolution x resolution`` maps, camera distance ``radius`` (None: 2.6 times the
    data's bounding radius), vertical field of view ``fov_deg``."""

    views: int = 128
    resolution: int = 64
    radius: float | None = None
    fov_deg: float = FOV_DEG

    def view_radius(self, data_radius: float) -> float:
        """The camera distance for data normalised to the bounding radius ``data_radius``."""
        return self.radius if self.radius is not None else THESIS_VIEW_RADIUS * data_radius

    def to_dict(self, data_radius: float) -> dict[str, float | int]:
        return {"views": self.views, "resolution": self.resolution, "radius": self.view_radius(data_radius),
                "fov_deg": self.fov_deg}


@dataclass
class NormalMaps:
    """One shape's maps: ``normals (V, H, W, 3)`` float32 camera frame (0 off the mask), ``mask (V, H, W)``
    bool, and the ``V`` :class:`morphable.render.Camera` objects that saw them."""

    normals: np.ndarray
    mask: np.ndarray
    cameras: list[Camera]

    @property
    def K(self) -> np.ndarray:
        return np.asarray(self.cameras[0].K)

    @property
    def poses(self) -> np.ndarray:
        return np.stack([np.asarray(c.pose, dtype=np.float64) for c in self.cameras])


def view_cameras(settings: NormalMapSettings, data_radius: float) -> list[Camera]:
    """The settings' Fibonacci cameras for data normalised to bounding radius ``data_radius``."""
    return fibonacci_views(settings.views, settings.view_radius(data_radius), fov_deg=settings.fov_deg,
                           width=settings.resolution, height=settings.resolution)


def render_normal_maps(vertices: np.ndarray, faces: np.ndarray, cameras: list[Camera]) -> NormalMaps:
    """Rasterise a mesh into camera-frame normal maps with back faces masked (module docstring).

    Args:
        vertices: ``(V, 3)`` in the normalised frame of the cameras; faces: ``(F, 3)``, oriented outward.
        cameras: cameras of one image size.
    """
    V = torch.as_tensor(np.asarray(vertices, dtype=np.float64))
    F = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    tri = V[F]
    face_normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normals, masks = [], []
    for camera in cameras:
        r = rasterize(V, F, camera)
        view = camera.rays(dtype=torch.float64) * r.depth[..., None]  # x_c, the surface point per pixel
        face_cam = face_normals[r.face_index.clamp(min=0)] @ camera.R.T
        front = ((face_cam * view).sum(-1) < 0) & ((r.normals * view).sum(-1) < 0)
        keep = r.mask & front
        normals.append(torch.where(keep[..., None], r.normals, 0.0).numpy())
        masks.append(keep.numpy())
    return NormalMaps(np.stack(normals).astype(np.float32), np.stack(masks), list(cameras))


def write_normal_maps(path: str | os.PathLike, maps: NormalMaps) -> None:
    """Write ``maps`` to ``path`` (float16 normals), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, format_version=np.int64(FORMAT_VERSION), normals=maps.normals.astype(np.float16),
                 mask=maps.mask.astype(bool), K=maps.K, poses=maps.poses)


def _problem(data: dict[str, np.ndarray]) -> str | None:
    """The first inconsistency of a normal-map archive's arrays, or None."""
    missing = [k for k in _KEYS if k not in data]
    if missing:
        return f"not a normal-map file (missing {', '.join(missing)})"
    normals, mask, K, poses = (data[k] for k in _KEYS)
    if normals.dtype.kind != "f" or normals.ndim != 4 or normals.shape[-1] != 3 or 0 in normals.shape:
        return f"'normals' must be a non-empty float (views, H, W, 3) array, got {normals.dtype} {normals.shape}"
    if mask.dtype != bool or mask.shape != normals.shape[:3]:
        return f"'mask' must be bool with shape {normals.shape[:3]}, got {mask.dtype} {mask.shape}"
    if K.shape != (3, 3) or poses.shape != (len(normals), 4, 4) or K.dtype.kind != "f" or poses.dtype.kind != "f":
        return f"'K' must be 3 x 3 and 'poses' {len(normals)} x 4 x 4 floats, got {K.shape} and {poses.shape}"
    if not (np.isfinite(normals).all() and np.isfinite(K).all() and np.isfinite(poses).all()):
        return "NaN or infinite values"
    lengths = np.linalg.norm(normals.astype(np.float32), axis=-1)
    if np.abs(lengths[mask] - 1).max(initial=0) > 1e-2 or np.abs(lengths[~mask]).max(initial=0) > 0:
        return "normals must have unit length on the mask and be 0 off it"
    R = poses[:, :3, :3]
    if (np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-6 or np.abs(np.linalg.det(R) - 1).max() > 1e-6
            or not np.array_equal(poses[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(poses), 4)))):
        return "every pose must be a rigid world-to-camera matrix [[R, t], [0, 1]] with R a rotation"
    return None


def read_normal_maps(path: str | os.PathLike) -> NormalMaps:
    """Read a file written by :func:`write_normal_maps`, validated strictly (shapes, dtypes, finite values,
    unit normals on the mask, rotations, intrinsics); a problem raises a :class:`MorphableError` naming it."""
    path = Path(path)
    data = read_npz(path)
    problem = _problem(data)
    if problem:
        raise input_error(path, problem)
    normals, mask = data["normals"].astype(np.float32), data["mask"]
    try:
        cameras = [Camera.from_matrices(data["K"], pose, normals.shape[2], normals.shape[1]) for pose in data["poses"]]
    except MorphableError as exc:
        raise input_error(path, str(exc)) from None
    return NormalMaps(normals, mask, cameras)

