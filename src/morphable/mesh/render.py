"""Pure-torch depth and normal rasteriser for triangle meshes, and depth back-projection.

Camera model (OpenCV convention): a world point ``X`` maps to camera coordinates
``X_c = R X + t`` (camera x right, y down, z forward) and to the image point

    u = fx * x_c / z_c + cx,    v = fy * y_c / z_c + cy.

Pixel ``(row i, column j)`` has its centre at ``(u, v) = (j, i)``, so ``cx = (W - 1) / 2`` centres the
principal point. Depth means ``z_c`` (distance along the optical axis, not along the ray).

Rasterisation is a z-buffer that is vectorised over triangles: each triangle's screen bounding box is
clipped to the image, triangles are grouped by the power-of-two size of their box, and every group is
evaluated as one ``(triangles, box pixels)`` tensor (chunked to bound memory). Screen-space barycentric
coordinates ``b`` decide coverage (``b >= 0``); since a planar triangle projects projectively,
``1 / z`` is affine in screen space, ``1 / z = sum_k b_k / z_k``, and the perspective-correct
barycentric coordinates are ``lambda_k = z b_k / z_k``. The depth test packs ``float32(z)`` (whose
bits order like integers for positive values) and the triangle index into one int64 key, so a single
``scatter_reduce(amin)`` resolves visibility. No back-face culling: open scans seen from behind render.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from morphable.errors import MorphableError

_NO_HIT = torch.iinfo(torch.int64).max
Vec3 = tuple[float, float, float] | torch.Tensor | np.ndarray


def _as_tensor(x: torch.Tensor | np.ndarray, dtype: torch.dtype | None = None,
               device: torch.device | None = None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype, device=device)


def vertex_normals(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Area-weighted vertex normals.

    ``n_v = normalise(sum_{f ni v} (v1 - v0) x (v2 - v0))``: the cross product has length twice the
    face area, so larger faces weigh more. Isolated vertices get a zero normal.

    Args:
        vertices: ``(V, 3)`` float.
        faces: ``(F, 3)`` integer, counter-clockwise seen from outside.

    Returns:
        ``(V, 3)`` unit normals (dtype and device of ``vertices``).
    """
    v = _as_tensor(vertices)
    f = _as_tensor(faces, dtype=torch.long, device=v.device)
    tri = v[f]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    acc = torch.zeros_like(v).index_add_(0, f.reshape(-1), cross.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(acc, dim=-1)


@dataclass
class Camera:
    """Pinhole camera: intrinsics ``fx, fy, cx, cy`` (pixels), image ``width x height``, and the
    world-to-camera rigid transform ``X_c = R X + t`` with ``R (3, 3)``, ``t (3,)`` (OpenCV axes)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    R: torch.Tensor
    t: torch.Tensor

    @classmethod
    def look_at(cls, eye: Vec3, target: Vec3 = (0.0, 0.0, 0.0), up: Vec3 = (0.0, 1.0, 0.0), *,
                fov_deg: float = 30.0, width: int = 256, height: int = 256) -> "Camera":
        """A camera at ``eye`` looking at ``target`` with ``up`` pointing up in the image.

        Axes: ``z = normalise(target - eye)``, ``x = normalise(z x up)``, ``y = z x x`` (image down);
        ``R = [x; y; z]`` (rows), ``t = -R eye``. ``fov_deg`` is the vertical field of view:
        ``fy = (H / 2) / tan(fov / 2)``, square pixels ``fx = fy``, centred principal point.
        """
        eye_t = _as_tensor(eye, dtype=torch.float64)
        z = torch.nn.functional.normalize(_as_tensor(target, dtype=torch.float64) - eye_t, dim=0)
        x = torch.linalg.cross(z, _as_tensor(up, dtype=torch.float64), dim=0)
        if float(x.norm()) < 1e-12:
            raise ValueError("look_at: 'up' is parallel to the viewing direction")
        x = x / x.norm()
        y = torch.linalg.cross(z, x, dim=0)
        R = torch.stack([x, y, z])
        f = 0.5 * height / float(np.tan(np.radians(fov_deg) / 2))
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, width, height, R, -R @ eye_t)

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in world coordinates, ``-R^T t``: ``(3,)``."""
        return -self.R.T @ self.t

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``X_c = R X + t``: ``(..., 3) -> (..., 3)`` (dtype and device of ``points``)."""
        R = self.R.to(points)
        return points @ R.T + self.t.to(points)

    def camera_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """``X = R^T (X_c - t)``: ``(..., 3) -> (..., 3)``."""
        R = self.R.to(points)
        return (points - self.t.to(points)) @ R

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates ``(u, v)`` of camera-frame points: ``(..., 3) -> (..., 2)``."""
        z = points_cam[..., 2]
        return torch.stack([self.fx * points_cam[..., 0] / z + self.cx,
                            self.fy * points_cam[..., 1] / z + self.cy], dim=-1)

    def rays(self, device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Camera-frame ray directions with ``z = 1`` through every pixel centre: ``(H, W, 3)``."""
        i = torch.arange(self.height, device=device, dtype=dtype)
        j = torch.arange(self.width, device=device, dtype=dtype)
        ii, jj = torch.meshgrid(i, j, indexing="ij")
        return torch.stack([(jj - self.cx) / self.fx, (ii - self.cy) / self.fy, torch.ones_like(ii)], dim=-1)


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
    v_world = _as_tensor(vertices)
    if not v_world.is_floating_point():
        v_world = v_world.double()
    device, dtype = v_world.device, v_world.dtype
    f_all = _as_tensor(faces, dtype=torch.long, device=device)
    H, W = camera.height, camera.width
    v_cam = camera.world_to_camera(v_world)

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
        n_world = (vertex_normals(v64, f_all)[corners] * lam[..., None]).sum(dim=1)
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
