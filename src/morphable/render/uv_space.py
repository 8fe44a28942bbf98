"""Rendering in texture space: the texels a mesh's UV chart covers, and a photo unwrapped into that chart.

UVs follow :mod:`morphable.render.shading` (OBJ convention, ``v`` up; texel ``(row r, column c)`` has its
centre at ``u = (c + 1/2) / W_t``, ``v = 1 - (r + 1/2) / H_t``). :func:`rasterize_uv` rasterises the
triangles ``face_uvs`` at their UVs into an ``H_t x W_t`` grid: per texel the triangle (an index into
``faces``, whose rows ``face_uvs`` share) and the barycentrics of the texel centre, so that any per-vertex
quantity (positions, normals) interpolates into a UV map with :func:`morphable.render.raster.interpolate`.
It depends on the chart only: compute it once per topology and reuse it for every mesh and photo.

Unwrapping a photo (:func:`unwrap_photo`, HRN's input to its detail networks): each covered texel's surface
point ``X = sum_k b_k p_k`` goes to the camera frame and is projected to pixel ``(x, y)``; the photo is
sampled there bilinearly. The texel is *visible* when the point faces the camera (``n_f . X_c < 0``, ``n_f``
the face normal in the camera frame), projects inside the image with the four pixels of its bilinear
sample on the mesh (no background blended in at silhouettes), and is the surface the camera sees: the
rendered depth at the nearest pixel is within ``depth_tolerance`` (relative) of the point's depth.
Invisible texels are 0 in the texture and False in the mask. Differentiable w.r.t. the photo and vertices.
"""

from __future__ import annotations

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.render.camera import Camera
from morphable.render.raster import Rendering, interpolate, rasterize


def rasterize_uv(uvs: torch.Tensor | np.ndarray, face_uvs: torch.Tensor | np.ndarray, height: int,
                 width: int | None = None) -> Rendering:
    """The UV chart's triangles rasterised into an ``height x width`` texel grid (module docstring).

    Args:
        uvs: ``(T, 2)`` texture coordinates in [0, 1]; face_uvs ``(F, 3)`` their indices per face corner.
        height, width: texel grid (``width`` defaults to ``height``).

    Returns:
        :class:`~morphable.render.raster.Rendering` of ``(height, width)`` maps: ``face_index`` into the
        faces, ``bary`` of the texel centres (its ``depth`` and ``normals`` carry no meaning here).
    """
    width = height if width is None else width
    t = torch.as_tensor(uvs, dtype=torch.float64)
    if t.dim() != 2 or t.shape[1] != 2 or not torch.isfinite(t).all():
        raise MorphableError(f"uvs must be a finite (T, 2) array, got shape {tuple(t.shape)}")
    screen = torch.stack([t[:, 0] * width - 0.5, (1 - t[:, 1]) * height - 0.5, torch.ones(len(t), dtype=t.dtype)], 1)
    chart = Camera(1.0, 1.0, 0.0, 0.0, width, height, torch.eye(3, dtype=t.dtype), torch.zeros(3, dtype=t.dtype),
                   orthographic=True)
    return rasterize(screen, face_uvs, chart, smooth=False)


def _bilinear(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """``image (C, H, W)`` sampled at pixel coordinates ``pixels (N, 2)`` (``(x, y)``, centres at integers):
    ``(N, C)``; outside the image the border pixels repeat."""
    C, H, W = image.shape
    grid = torch.stack([(2 * pixels[:, 0] + 1) / W - 1, (2 * pixels[:, 1] + 1) / H - 1], dim=-1).to(image)
    out = torch.nn.functional.grid_sample(image[None], grid[None, None], mode="bilinear", padding_mode="border",
                                          align_corners=False)
    return out[0, :, 0].T


def unwrap_photo(photo: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor | np.ndarray, camera: Camera,
                 uv_raster: Rendering, *, depth_tolerance: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo's colours in the mesh's UV chart where the camera sees the surface (module docstring).

    Args:
        photo: ``(C, H, W)`` image (``camera``'s size).
        vertices: ``(V, 3)`` world coordinates of the mesh as the photo shows it; faces ``(F, 3)``.
        camera: the photo's :class:`~morphable.render.camera.Camera`.
        uv_raster: :func:`rasterize_uv` of the mesh's chart (its triangles are ``faces``).
        depth_tolerance: relative depth difference below which a texel's point is the one the camera sees.

    Returns:
        ``texture (C, H_t, W_t)`` (0 where not visible) and ``visible (H_t, W_t)`` bool.
    """
    if photo.dim() != 3 or tuple(photo.shape[1:]) != (camera.height, camera.width):
        raise MorphableError(f"the photo must be (C, {camera.height}, {camera.width}) for this camera, "
                             f"got {tuple(photo.shape)}")
    f = torch.as_tensor(faces, dtype=torch.long, device=vertices.device)
    index = uv_raster.face_index.to(vertices.device)
    covered = torch.nonzero(index.reshape(-1) >= 0).squeeze(1)
    face = index.reshape(-1)[covered]
    bary = uv_raster.bary.to(vertices).reshape(-1, 3)[covered]
    v_cam = camera.world_to_camera(vertices)
    corners = v_cam[f[face]]  # (N, 3, 3)
    point = (bary[..., None] * corners).sum(1)  # (N, 3)
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    pixel = camera.project(point)
    with torch.no_grad():
        seen = rasterize(vertices.detach(), f, camera)
        inside = ((pixel[:, 0] > -0.5) & (pixel[:, 0] < camera.width - 0.5) &
                  (pixel[:, 1] > -0.5) & (pixel[:, 1] < camera.height - 0.5))
        col = pixel[:, 0].round().long().clamp(0, camera.width - 1)
        row = pixel[:, 1].round().long().clamp(0, camera.height - 1)
        col0 = pixel[:, 0].floor().long().clamp(0, camera.width - 1)
        row0 = pixel[:, 1].floor().long().clamp(0, camera.height - 1)
        col1, row1 = (col0 + 1).clamp_max(camera.width - 1), (row0 + 1).clamp_max(camera.height - 1)
        on_mesh = seen.mask[row0, col0] & seen.mask[row0, col1] & seen.mask[row1, col0] & seen.mask[row1, col1]
        depth = seen.depth[row, col]
        visible = (inside & on_mesh & ((normal * point).sum(-1) < 0) &
                   ((depth - point[:, 2]).abs() <= depth_tolerance * point[:, 2].abs()))
    colours = _bilinear(photo, pixel) * visible[:, None].to(photo)
    C, (Ht, Wt) = photo.shape[0], index.shape
    texture = torch.zeros(Ht * Wt, C, dtype=photo.dtype, device=photo.device).index_put((covered.to(photo.device),),
                                                                                         colours.to(photo.dtype))
    mask = torch.zeros(Ht * Wt, dtype=torch.bool, device=vertices.device).index_put((covered,), visible)
    return texture.T.reshape(C, Ht, Wt), mask.reshape(Ht, Wt)


def uv_map_of(attributes: torch.Tensor, faces: torch.Tensor | np.ndarray, uv_raster: Rendering) -> torch.Tensor:
    """Per-vertex ``attributes (V, C)`` (or ``(B, V, C)``) interpolated into the chart: ``([B,] C, H_t, W_t)``,
    0 on texels no triangle covers (e.g. a position map of the mesh)."""
    index, bary = uv_raster.face_index.to(attributes.device), uv_raster.bary.to(attributes)
    if attributes.dim() == 3:
        index, bary = index.expand(len(attributes), *index.shape), bary.expand(len(attributes), *bary.shape)
    values = interpolate(attributes, faces, index, bary)  # ([B,] H_t, W_t, C)
    return values.movedim(-1, -3)
