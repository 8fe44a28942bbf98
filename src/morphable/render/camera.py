"""The one camera of morphable: a pinhole camera in the OpenCV convention, and converters to OpenGL.

OpenCV convention (used everywhere in morphable). A world point ``X`` maps to camera coordinates
``X_c = R X + t`` (x right, y down, z forward: the camera looks along ``+z``) and to the pixel

    (u, v, 1)^T ~ K X_c,    K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],

i.e. ``u = fx x_c / z_c + cx``, ``v = fy y_c / z_c + cy``. Pixel ``(row i, column j)`` has its centre at
``(u, v) = (j, i)`` (centres at integers, row 0 at the top), so ``cx = (W - 1) / 2`` centres the
principal point. Depth means ``z_c``. A *pose* is the ``(4, 4)`` world-to-camera matrix
``[[R, t], [0, 1]]`` (the extrinsics); its inverse is the camera-to-world matrix.

OpenGL convention. The eye frame has x right, y up, z backward (the camera looks along ``-z``):

    X_gl = S X_cv,    S = diag(1, -1, -1),

so a world-to-camera pose converts as ``M_gl = diag(S, 1) M_cv`` (the GL view matrix) and a
camera-to-world matrix as ``C_gl = C_cv diag(S, 1)``; ``S`` is its own inverse, so the same product
converts back. The projection ``P`` maps eye to clip coordinates, ``X_clip = P X_eye``; normalised
device coordinates are ``clip_xyz / clip_w`` in ``[-1, 1]^3``, and window coordinates are
``x_w = (x_ndc + 1) W / 2``, ``y_w = (y_ndc + 1) H / 2`` with ``y_w`` counted from the *bottom* row and
pixel centres at half-integers: GL pixel (row ``r`` from the bottom, column ``j``) has its centre at
``(j + 1/2, r + 1/2)``. An OpenCV pixel ``(u, v)`` therefore sits at

    x_w = u + 1/2,    y_w = H - 1/2 - v,

and a GL image becomes an OpenCV image by flipping its rows (GL row ``r`` is OpenCV row ``H - 1 - r``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from morphable.errors import MorphableError

Vec3 = tuple[float, float, float] | torch.Tensor | np.ndarray
Matrix = torch.Tensor | np.ndarray

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_POLE_COS = 0.9  # fibonacci_views: beyond |cos(view, y)| = 0.9 the up vector switches from y to z


def _float_tensor(x: Matrix | Vec3) -> torch.Tensor:
    """``x`` as a tensor, keeping a floating dtype and turning anything else into float64."""
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.double()


def _intrinsics(K: Matrix) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of a ``(3, 3)`` intrinsic matrix without skew."""
    k = np.asarray(torch.as_tensor(K, dtype=torch.float64).detach().cpu())
    if k.shape != (3, 3):
        raise MorphableError(f"intrinsics K must be 3 x 3, got shape {k.shape}")
    if k[0, 1] != 0 or k[1, 0] != 0 or not np.array_equal(k[2], [0.0, 0.0, 1.0]) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise MorphableError(f"intrinsics K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
                             f"got {k.tolist()}")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def _flip_camera_axes(pose: Matrix, camera_to_world: bool) -> torch.Tensor:
    """``diag(1, -1, -1, 1) M`` (world-to-camera) or ``M diag(1, -1, -1, 1)`` (camera-to-world)."""
    m = _float_tensor(pose)
    if m.shape[-2:] != (4, 4):
        raise MorphableError(f"a pose must be a 4 x 4 matrix, got shape {tuple(m.shape)}")
    s = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=m.dtype, device=m.device)
    return m * s if camera_to_world else m * s[:, None]


def opengl_from_opencv_pose(pose: Matrix, *, camera_to_world: bool = False) -> torch.Tensor:
    """An OpenCV pose in the OpenGL convention: ``(..., 4, 4) -> (..., 4, 4)``.

    World-to-camera (default): ``M_gl = diag(1, -1, -1, 1) M_cv`` (rows y and z negated: the GL view
    matrix). With ``camera_to_world=True``: ``C_gl = C_cv diag(1, -1, -1, 1)`` (columns y and z negated).
    """
    return _flip_camera_axes(pose, camera_to_world)


def opencv_from_opengl_pose(pose: Matrix, *, camera_to_world: bool = False) -> torch.Tensor:
    """An OpenGL pose (view matrix, or camera-to-world with ``camera_to_world=True``) in the OpenCV
    convention: ``(..., 4, 4) -> (..., 4, 4)``. The inverse of :func:`opengl_from_opencv_pose`, and the same
    product, since ``diag(1, -1, -1, 1)`` is its own inverse."""
    return _flip_camera_axes(pose, camera_to_world)


def opengl_projection(K: Matrix, width: int, height: int, near: float, far: float) -> torch.Tensor:
    """The OpenGL projection matrix that images like ``K`` on a ``width x height`` viewport.

    With ``w_clip = -z_e = z_c`` and the window mapping of the module docstring, requiring
    ``x_w = u + 1/2`` and ``y_w = H - 1/2 - v`` gives

        P = [[2 fx / W, 0,        1 - 2 (cx + 1/2) / W,  0],
             [0,        2 fy / H, 2 (cy + 1/2) / H - 1,  0],
             [0,        0,        -(f + n) / (f - n),    -2 f n / (f - n)],
             [0,        0,        -1,                    0]]

    (row 1: ``y_ndc = 1 - 2 (v + 1/2) / H`` and ``y_c / z_c = y_e / z_e``), so ``z_ndc = -1`` at
    ``z_c = near`` and ``+1`` at ``z_c = far``.

    Args:
        K: ``(3, 3)`` intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (OpenCV pixels).
        width, height: image size ``W, H`` in pixels.
        near, far: clip distances along the optical axis, ``0 < near < far``.

    Returns:
        ``(4, 4)`` float64 ``P``.
    """
    fx, fy, cx, cy = _intrinsics(K)
    if not 0 < near < far:
        raise MorphableError(f"need 0 < near < far, got near={near}, far={far}")
    return torch.tensor([[2 * fx / width, 0.0, 1 - 2 * (cx + 0.5) / width, 0.0],
                         [0.0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0.0],
                         [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0.0, 0.0, -1.0, 0.0]], dtype=torch.float64)


def intrinsics_from_opengl_projection(projection: Matrix, width: int,
                                      height: int) -> tuple[torch.Tensor, float, float]:
    """The inverse of :func:`opengl_projection`: ``(K, near, far)`` of a perspective GL projection.

    ``P`` is first scaled so that ``P[3, 2] = -1`` (clip coordinates are homogeneous). Then
    ``fx = P00 W / 2``, ``fy = P11 H / 2``, ``cx = (1 - P02) W / 2 - 1/2``, ``cy = (P12 + 1) H / 2 - 1/2``, and
    with ``A = P22``, ``B = P23``: ``near = B / (A - 1)``, ``far = B / (A + 1)``.

    Args:
        projection: ``(4, 4)`` matrix of the form given in :func:`opengl_projection` (``glFrustum``).
        width, height: viewport size in pixels.

    Returns:
        ``K (3, 3)`` float64, ``near``, ``far``.

    Raises:
        MorphableError: ``projection`` is not of that form (e.g. orthographic or skewed).
    """
    p = np.asarray(torch.as_tensor(projection, dtype=torch.float64).detach().cpu())
    if p.shape != (4, 4) or not p[3, 2] < 0:
        raise MorphableError("not a perspective OpenGL projection (expected a 4 x 4 matrix with P[3, 2] < 0)")
    p = p / -p[3, 2]
    off = p[[0, 0, 1, 1, 2, 2, 3, 3], [1, 3, 0, 3, 0, 1, 0, 1]].tolist() + [p[3, 3]]
    if np.abs(off).max() > 1e-12 * np.abs(p).max():
        raise MorphableError(f"not a perspective OpenGL projection of the glFrustum form: {p.tolist()}")
    a, b = p[2, 2], p[2, 3]
    K = torch.tensor([[p[0, 0] * width / 2, 0.0, (1 - p[0, 2]) * width / 2 - 0.5],
                      [0.0, p[1, 1] * height / 2, (p[1, 2] + 1) * height / 2 - 0.5],
                      [0.0, 0.0, 1.0]], dtype=torch.float64)
    return K, float(b / (a - 1)), float(b / (a + 1))


@dataclass
class Camera:
    """Pinhole camera: intrinsics ``fx, fy, cx, cy`` (pixels), image ``width x height``, and the
    world-to-camera rigid transform ``X_c = R X + t`` with ``R (3, 3)``, ``t (3,)`` (OpenCV axes).

    With ``orthographic=True`` the same axes and pixels but a parallel projection,
    ``u = fx x_c + cx``, ``v = fy y_c + cy`` (``fx, fy`` in pixels per world unit); depth is still ``z_c``.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    R: torch.Tensor
    t: torch.Tensor
    orthographic: bool = False

    @classmethod
    def look_at(cls, eye: Vec3, target: Vec3 = (0.0, 0.0, 0.0), up: Vec3 = (0.0, 1.0, 0.0), *,
                fov_deg: float = 30.0, width: int = 256, height: int = 256,
                ortho_height: float | None = None) -> "Camera":
        """A camera at ``eye`` looking at ``target`` with ``up`` pointing up in the image.

        Axes: ``z = normalise(target - eye)``, ``x = normalise(z x up)``, ``y = z x x`` (image down);
        ``R = [x; y; z]`` (rows), ``t = -R eye``. ``fov_deg`` is the vertical field of view:
        ``fy = (H / 2) / tan(fov / 2)``, square pixels ``fx = fy``, centred principal point. With
        ``ortho_height`` the camera is orthographic and sees that many world units from top to bottom
        (``fx = fy = H / ortho_height``; ``fov_deg`` is ignored).
        """
        eye_t = torch.as_tensor(eye, dtype=torch.float64)
        z = torch.nn.functional.normalize(torch.as_tensor(target, dtype=torch.float64) - eye_t, dim=0)
        x = torch.linalg.cross(z, torch.as_tensor(up, dtype=torch.float64), dim=0)
        if float(x.norm()) < 1e-12:
            raise ValueError("look_at: 'up' is parallel to the viewing direction")
        x = x / x.norm()
        y = torch.linalg.cross(z, x, dim=0)
        R = torch.stack([x, y, z])
        if ortho_height is not None:
            f = height / ortho_height
        else:
            f = 0.5 * height / float(np.tan(np.radians(fov_deg) / 2))
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, width, height, R, -R @ eye_t, ortho_height is not None)

    @classmethod
    def from_matrices(cls, K: Matrix, pose: Matrix, width: int, height: int) -> "Camera":
        """A camera from intrinsics ``K (3, 3)`` and a world-to-camera ``pose (4, 4)`` or ``(3, 4)``
        ``[R | t]``, both in the OpenCV convention."""
        fx, fy, cx, cy = _intrinsics(K)
        m = _float_tensor(pose)
        if m.shape not in ((3, 4), (4, 4)):
            raise MorphableError(f"a pose must be 3 x 4 or 4 x 4, got shape {tuple(m.shape)}")
        return cls(fx, fy, cx, cy, width, height, m[:3, :3].clone(), m[:3, 3].clone())

    @classmethod
    def from_opengl(cls, view: Matrix, projection: Matrix, width: int, height: int) -> "Camera":
        """A camera from an OpenGL view matrix (world-to-eye) and a perspective projection on a
        ``width x height`` viewport: :func:`opencv_from_opengl_pose` and
        :func:`intrinsics_from_opengl_projection` (near and far are dropped)."""
        K, _, _ = intrinsics_from_opengl_projection(projection, width, height)
        return cls.from_matrices(K, opencv_from_opengl_pose(view), width, height)

    @property
    def K(self) -> torch.Tensor:
        """Intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``: ``(3, 3)`` float64."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)

    @property
    def pose(self) -> torch.Tensor:
        """World-to-camera matrix ``[[R, t], [0, 1]]``: ``(4, 4)`` (dtype of ``R``)."""
        m = torch.eye(4, dtype=self.R.dtype, device=self.R.device)
        m[:3, :3], m[:3, 3] = self.R, self.t.to(self.R)
        return m

    def opengl(self, near: float, far: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The OpenGL ``(view (4, 4), projection (4, 4))`` that render the same image (rows flipped);
        perspective cameras only."""
        if self.orthographic:
            raise MorphableError("Camera.opengl: only perspective cameras have a glFrustum projection")
        return opengl_from_opencv_pose(self.pose), opengl_projection(self.K, self.width, self.height, near, far)

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
        x, y = points_cam[..., 0], points_cam[..., 1]
        if not self.orthographic:
            x, y = x / points_cam[..., 2], y / points_cam[..., 2]
        return torch.stack([self.fx * x + self.cx, self.fy * y + self.cy], dim=-1)

    def unproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """The camera-frame point at pixel ``uv (..., 2)`` with camera ``z = depth (...)``: ``(..., 3)``
        (the inverse of :meth:`project` for that depth)."""
        x, y = (uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy
        if not self.orthographic:
            x, y = x * depth, y * depth
        return torch.stack([x, y, depth], dim=-1)

    def pixel_centres(self, device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``(u, v) = (j, i)`` of every pixel ``(row i, column j)``: ``(H, W, 2)``."""
        i = torch.arange(self.height, device=device, dtype=dtype)
        j = torch.arange(self.width, device=device, dtype=dtype)
        ii, jj = torch.meshgrid(i, j, indexing="ij")
        return torch.stack([jj, ii], dim=-1)

    def rays(self, device: torch.device | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Camera-frame ray directions with ``z = 1`` through every pixel centre: ``(H, W, 3)`` (perspective;
        an orthographic camera's rays all point along ``+z`` from :meth:`unproject` ``(uv, 0)``)."""
        uv = self.pixel_centres(device, dtype)
        return torch.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy,
                            torch.ones_like(uv[..., 0])], dim=-1)


def fibonacci_views(n: int, radius: float, target: Vec3 = (0.0, 0.0, 0.0), *, fov_deg: float = 30.0,
                    width: int = 256, height: int = 256) -> list[Camera]:
    """``n`` cameras on a Fibonacci-lattice sphere around ``target``, each looking at it.

    View ``k`` sits at ``target + radius d_k`` with ``y_k = 1 - 2 (k + 1/2) / n``,
    ``phi_k = k pi (3 - sqrt 5)`` (the golden angle) and
    ``d_k = (sqrt(1 - y_k^2) cos phi_k, y_k, sqrt(1 - y_k^2) sin phi_k)``: nearly uniform directions.
    The image up vector is world ``+y`` where ``|y_k| <= 0.9``; nearer the poles, where ``+y`` becomes
    parallel to the viewing direction, it is ``-sign(y_k) z`` (the continuation of ``+y`` over the pole
    from the ``+z`` side). Either way ``|view x up| >= sqrt(1 - 0.9^2) = 0.44``, so no view degenerates.

    Args:
        n: number of views, ``>= 1``.
        radius: distance of every camera centre from ``target``, ``> 0``.
        target: ``(3,)`` point every camera looks at (it projects to the image centre).
        fov_deg, width, height: as in :meth:`Camera.look_at`.

    Returns:
        ``n`` :class:`Camera` objects, float64.
    """
    if n < 1 or not radius > 0:
        raise MorphableError(f"fibonacci_views needs n >= 1 and radius > 0, got n={n}, radius={radius}")
    centre = torch.as_tensor(target, dtype=torch.float64)
    cameras = []
    for k in range(n):
        y = 1.0 - 2.0 * (k + 0.5) / n
        r, phi = math.sqrt(1.0 - y * y), k * _GOLDEN_ANGLE
        direction = torch.tensor([r * math.cos(phi), y, r * math.sin(phi)], dtype=torch.float64)
        up = (0.0, 1.0, 0.0) if abs(y) <= _POLE_COS else (0.0, 0.0, -math.copysign(1.0, y))
        cameras.append(Camera.look_at(centre + radius * direction, centre, up, fov_deg=fov_deg,
                                      width=width, height=height))
    return cameras
