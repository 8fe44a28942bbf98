"""Pure-torch mesh rasteriser (face index, barycentrics, depth, normals), interpolation, back-projection.

Cameras follow :mod:`morphable.render.camera` (OpenCV convention: pixel ``(row i, column j)`` has its
centre at ``(u, v) = (j, i)``; depth is camera ``z``).

Rasterisation is a z-buffer that is vectorised over triangles: each triangle's screen bounding box is
clipped to the image, triangles are grouped by the power-of-two size of their box, and every group is
evaluated as one ``(triangles, box pixels)`` tensor (chunked to bound memory). Screen-space barycentric
coordinates ``b`` decide coverage (``b >= 0``); since a planar triangle projects projectively,
``1 / z`` is affine in screen space, ``1 / z = sum_k b_k / z_k``, and the perspective-correct
barycentric coordinates are ``lambda_k = z b_k / z_k``. The depth test packs ``float32(z)`` (whose
bits order like integers for positive values) and the triangle index into one int64 key, so a single
``scatter_reduce(amin)`` resolves visibility. No back-face culling: open scans seen from behind render.

Differentiability: which triangle a pixel sees is discrete, but for that fixed triangle the depth,
barycentrics and normals of :func:`rasterize` are torch expressions of the vertices (and of ``R, t``),
and :func:`interpolate` is linear in its attributes and barycentrics, so gradients flow through both
(not through coverage or occlusion changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals
from morphable.render.camera import Camera

_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Rendering:
    """Output of :func:`rasterize` for an ``H x W`` image.

    Attributes:
        depth: ``(H, W)`` camera ``z`` of the visible surface; 0 where no triangle covers the pixel.
        face_index: ``(H, W)`` int64 index of the visible triangle; -1 where none.
        bary: ``(H, W, 3)`` perspective-correct barycentric coordinates in that triangle; 0 where none.
        normals: ``(H, W, 3)`` unit surface normals in the camera frame (interpolated vertex normals,
            or face normals with ``smooth=False``); 0 where none.
    """

    depth: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor
    normals: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(H, W)`` bool, True where the mesh is visible."""
        return self.face_index >= 0


def _screen_barycentric_coeffs(uv: torch.Tensor) -> torch.Tensor:
    """Affine maps from pixel coordinates to screen-space barycentrics.

    Args:
        uv: ``(T, 3, 2)`` projected triangle corners.

    Returns:
        ``(T, 3, 3)`` ``A`` with ``b_k(u, v) = A[k, 0] u + A[k, 1] v + A[k, 2]``, i.e. the inverse of
        ``[[u0, u1, u2], [v0, v1, v2], [1, 1, 1]]`` written with edge functions.
    """
    u, v = uv[..., 0], uv[..., 1]
    # b_k is the edge function of the edge opposite corner k, normalised by twice the signed area.
    u1, u2 = u.roll(-1, dims=1), u.roll(-2, dims=1)
    v1, v2 = v.roll(-1, dims=1), v.roll(-2, dims=1)
    area2 = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    a = (v1 - v2) / area2[:, None]
    b = (u2 - u1) / area2[:, None]
    c = (u1 * v2 - u2 * v1) / area2[:, None]
    return torch.stack([a, b, c], dim=-1)


def rasterize(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera, *,
              near: float = 1e-6, smooth: bool = True, budget: int = 1 << 22) -> Rendering:
    """Z-buffer rasterisation of a triangle mesh into depth, triangle index, barycentrics and normals.

    Triangles with a corner at ``z_c <= near`` are dropped (no clipping). A pixel is covered when its
    centre has all screen barycentrics ``>= 0`` (pixels on a shared edge go to the nearer triangle).

    Args:
        vertices: ``(V, 3)`` world coordinates; the outputs use its dtype (float32/float64) and device.
        faces: ``(F, 3)`` integer.
        camera: the :class:`Camera`.
        near: near-plane depth.
        smooth: normals from interpolated area-weighted vertex normals (True) or per-face (False).
        budget: at most this many (triangle, pixel) candidates are evaluated at once.

    Returns:
        :class:`Rendering` with ``(H, W)`` maps.
    """
    v_world = torch.as_tensor(vertices)
    if not v_world.is_floating_point():
        v_world = v_world.double()
    device, dtype = v_world.device, v_world.dtype
    f_all = torch.as_tensor(faces, dtype=torch.long, device=device)
    H, W = camera.height, camera.width
    v_cam = camera.world_to_camera(v_world).detach()  # visibility is discrete: no graph

    tri_z = v_cam[f_all][..., 2]
    keep = (tri_z > near).all(dim=1)
    face_ids = torch.nonzero(keep).squeeze(1)
    uv = camera.project(v_cam)[f_all[face_ids]]  # (T, 3, 2)
    lo = uv.amin(dim=1).ceil()
    hi = uv.amax(dim=1).floor()
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, torch.tensor([W - 1, H - 1], dtype=dtype, device=device))
    area2 = ((uv[:, 1, 0] - uv[:, 0, 0]) * (uv[:, 2, 1] - uv[:, 0, 1])
             - (uv[:, 2, 0] - uv[:, 0, 0]) * (uv[:, 1, 1] - uv[:, 0, 1]))
    visible = (lo <= hi).all(dim=1) & (area2.abs() > 1e-12)
    face_ids, uv, lo, hi = face_ids[visible], uv[visible], lo[visible].long(), hi[visible].long()
    coeffs = _screen_barycentric_coeffs(uv)
    inv_z = 1.0 / tri_z[face_ids]  # (T, 3)

    size = hi - lo + 1  # (T, 2) box width, height in pixels
    bucket = torch.ceil(torch.log2(size.to(torch.float64))).long()  # power-of-two box sizes
    key = bucket[:, 0] * 64 + bucket[:, 1]
    zbuf = torch.full((H * W,), _NO_HIT, dtype=torch.long, device=device)
    for k in torch.unique(key).tolist():
        members = torch.nonzero(key == k).squeeze(1)
        bw, bh = 1 << (k // 64), 1 << (k % 64)
        oy, ox = torch.meshgrid(torch.arange(bh, device=device), torch.arange(bw, device=device), indexing="ij")
        ox, oy = ox.reshape(-1), oy.reshape(-1)
        for start in range(0, len(members), max(1, budget // (bw * bh))):
            idx = members[start:start + max(1, budget // (bw * bh))]
            px = lo[idx, 0, None] + ox  # (n, bw*bh)
            py = lo[idx, 1, None] + oy
            inside = (px <= hi[idx, 0, None]) & (py <= hi[idx, 1, None])
            A = coeffs[idx]
            pxf, pyf = px.to(dtype), py.to(dtype)
            b = A[:, None, :, 0] * pxf[..., None] + A[:, None, :, 1] * pyf[..., None] + A[:, None, :, 2]
            inside &= (b >= 0).all(dim=-1)
            z = 1.0 / (b * inv_z[idx, None, :]).sum(dim=-1)
            inside &= z > near
            pix = (py * W + px)[inside]
            zbits = z[inside].to(torch.float32).view(torch.int32).to(torch.long)
            packed = (zbits << 32) | idx[:, None].expand_as(px)[inside]
            zbuf.scatter_reduce_(0, pix, packed, reduce="amin")

    # Resolve the visible triangle of every covered pixel in float64 (float32 screen-space barycentrics of
    # small triangles lose about 1e-4 relative depth to cancellation).
    hit = zbuf != _NO_HIT
    pix = torch.nonzero(hit).squeeze(1)
    faces_hit = face_ids[zbuf[pix] & 0xFFFFFFFF]
    v64 = v_world.double()
    corners = f_all[faces_hit]
    v_cam64 = camera.world_to_camera(v64)
    A = _screen_barycentric_coeffs(camera.project(v_cam64)[corners])
    px, py = (pix % W).double(), (pix // W).double()
    b = A[:, :, 0] * px[:, None] + A[:, :, 1] * py[:, None] + A[:, :, 2]
    w = b / v_cam64[corners][..., 2]
    z = 1.0 / w.sum(dim=1)
    lam = w * z[:, None]
    if smooth:
        n_world = interpolate(vertex_normals(v64, f_all), f_all, faces_hit, lam)
    else:
        tri = v64[corners]
        n_world = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    n_cam = torch.nn.functional.normalize(n_world, dim=-1) @ camera.R.to(n_world).T

    depth = torch.zeros(H * W, dtype=dtype, device=device)
    depth[pix] = z.to(dtype)
    face_index = torch.full((H * W,), -1, dtype=torch.long, device=device)
    face_index[pix] = faces_hit
    bary = torch.zeros(H * W, 3, dtype=dtype, device=device)
    bary[pix] = lam.to(dtype)
    normals = torch.zeros(H * W, 3, dtype=dtype, device=device)
    normals[pix] = n_cam.to(dtype)
    return Rendering(depth.view(H, W), face_index.view(H, W), bary.view(H, W, 3), normals.view(H, W, 3))


def interpolate(attributes: torch.Tensor, faces: torch.Tensor | np.ndarray, face_index: torch.Tensor,
                bary: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at rasterised pixels (differentiable).

    ``out[p] = sum_k bary[p, k] attributes[faces[face_index[p], k]]`` where ``face_index[p] >= 0``, else 0.

    Args:
        attributes: ``(V, C)`` per-vertex values (colours, normals, texture coordinates, ...).
        faces: ``(F, 3)`` integer, the faces that were rasterised.
        face_index: ``(...)`` int64 triangle per pixel, -1 for none (:attr:`Rendering.face_index`).
        bary: ``(..., 3)`` barycentric coordinates (:attr:`Rendering.bary`).

    Returns:
        ``(..., C)`` interpolated values, 0 where ``face_index < 0``.
    """
    f = torch.as_tensor(faces, dtype=torch.long, device=attributes.device)
    values = (attributes[f[face_index.clamp(min=0)]] * bary[..., None]).sum(dim=-2)
    return torch.where((face_index >= 0)[..., None], values, torch.zeros((), dtype=values.dtype,
                                                                         device=values.device))


def normal_map(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera, *,
               smooth: bool = True, **options: Any) -> torch.Tensor:
    """Camera-frame unit normals per pixel, ``(H, W, 3)``: the interpolated area-weighted vertex normals
    (or face normals with ``smooth=False``) rotated by ``R``, ``n_c = R n``; 0 where the mesh is not
    visible. ``options`` go to :func:`rasterize` (``near``, ``budget``)."""
    return rasterize(vertices, faces, camera, smooth=smooth, **options).normals


def depth_map(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
              **options: Any) -> torch.Tensor:
    """Camera ``z`` of the visible surface per pixel, ``(H, W)``; 0 where the mesh is not visible.
    ``options`` go to :func:`rasterize`."""
    return rasterize(vertices, faces, camera, **options).depth


def mask(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
         **options: Any) -> torch.Tensor:
    """``(H, W)`` bool, True where the mesh covers the pixel centre. ``options`` go to :func:`rasterize`."""
    return rasterize(vertices, faces, camera, **options).mask


def backproject(depth: torch.Tensor, camera: Camera, world: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift every pixel with ``depth > 0`` to 3D.

    ``X_c = depth(i, j) * ((j - cx) / fx, (i - cy) / fy, 1)``; with ``world=True`` also
    ``X = R^T (X_c - t)``.

    Args:
        depth: ``(H, W)`` depth map (0 = no measurement).
        camera: the :class:`Camera` that produced it.
        world: return world (True) or camera (False) coordinates.

    Returns:
        ``points (N, 3)`` and ``pixels (N, 2)`` int64 ``(row, column)``, in row-major pixel order.
    """
    pixels = torch.nonzero(depth > 0)
    z = depth[pixels[:, 0], pixels[:, 1]]
    rays = camera.rays(device=depth.device, dtype=depth.dtype)[pixels[:, 0], pixels[:, 1]]
    points = rays * z[:, None]
    return (camera.camera_to_world(points) if world else points), pixels


def depth_point_cloud(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
                      n_points: int = 2500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A single-view observation: render depth, back-project, keep ``n_points`` random valid pixels.

    Args:
        vertices: ``(V, 3)`` world coordinates; faces: ``(F, 3)``.
        camera: the viewing :class:`Camera`.
        n_points: number of pixels drawn without replacement among those that see the mesh.
        seed: seed of the pixel draw.

    Returns:
        ``points (N, 3)`` on the visible surface and their unit ``normals (N, 3)`` (interpolated vertex
        normals), both in world coordinates with the dtype and device of ``vertices``.

    Raises:
        MorphableError: the camera sees fewer than ``n_points`` pixels of the mesh.
    """
    render = rasterize(vertices, faces, camera)
    points, pixels = backproject(render.depth, camera, world=True)
    if len(points) < n_points:
        raise MorphableError(f"the camera sees the mesh in only {len(points)} pixels, fewer than the "
                             f"{n_points} points requested: move the camera closer or raise the resolution")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(points), generator=generator)[:n_points].to(points.device)
    normals_cam = render.normals[pixels[pick, 0], pixels[pick, 1]]
    return points[pick], normals_cam @ camera.R.to(normals_cam)
