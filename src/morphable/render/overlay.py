"""A mesh given in a photo's pixel frame, drawn over the photo (single-image reconstructions).

The photo pixel frame is the OpenCV camera frame of an orthographic camera with one pixel per unit: a point
``(u, v, d)`` lies over pixel column ``u``, row ``v`` (pixel centres at integers) at depth ``d`` (pixels,
larger is farther). :func:`pixel_frame_camera` is that camera, shifted along ``z`` so every vertex lies in
front of it; the mesh is rasterised with :func:`~morphable.render.raster.rasterize` and shaded by a head
light, ``c = a + (1 - a) max(0, -n_z)`` (``n`` the camera-frame normal; the camera looks along ``+z``),
then alpha-blended over the photo where the mesh covers it.
"""

from __future__ import annotations

import numpy as np
import torch

from morphable.render.camera import Camera
from morphable.render.raster import rasterize

AMBIENT = 0.25
MESH_COLOUR = (0.72, 0.80, 0.95)


def pixel_frame_camera(width: int, height: int, vertices: np.ndarray, margin: float = 1.0) -> Camera:
    """The orthographic camera of the photo pixel frame (module docstring) for ``vertices (N, 3)``: ``u = x``,
    ``v = y``, depth ``z + shift`` with ``shift`` putting the nearest vertex ``margin`` in front."""
    shift = margin - float(np.min(vertices[:, 2]))
    return Camera(1.0, 1.0, 0.0, 0.0, int(width), int(height), torch.eye(3, dtype=torch.float64),
                  torch.tensor([0.0, 0.0, shift], dtype=torch.float64), orthographic=True)


def pixel_frame_mask(vertices: np.ndarray, faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(height, width)`` bool: the pixels whose centre a pixel-frame mesh covers."""
    camera = pixel_frame_camera(width, height, vertices)
    return rasterize(torch.as_tensor(vertices, dtype=torch.float64), torch.as_tensor(faces), camera).mask.numpy()


def overlay_mesh(photo: np.ndarray, vertices: np.ndarray, faces: np.ndarray, alpha: float = 0.7,
                 colour: tuple[float, float, float] = MESH_COLOUR) -> np.ndarray:
    """``photo (H, W, 3)`` uint8 with the shaded pixel-frame mesh ``vertices (N, 3)``, ``faces (F, 3)`` blended
    over it at opacity ``alpha``; ``(H, W, 3)`` uint8."""
    H, W = photo.shape[:2]
    camera = pixel_frame_camera(W, H, vertices)
    rendering = rasterize(torch.as_tensor(vertices, dtype=torch.float64), torch.as_tensor(faces), camera)
    covered = rendering.mask.numpy()
    light = AMBIENT + (1.0 - AMBIENT) * np.clip(-rendering.normals[..., 2].numpy(), 0.0, 1.0)
    shaded = 255.0 * light[..., None] * np.asarray(colour)
    out = photo.astype(np.float64)
    out[covered] = (1.0 - alpha) * out[covered] + alpha * shaded[covered]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
