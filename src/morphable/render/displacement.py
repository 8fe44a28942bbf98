"""Displacement mapping for shading: the normals of a surface displaced along its normals by a UV-space map.

A surface point ``P(u, v)`` with unit normal ``N`` moves to ``P' = P + d(u, v) N`` (``d``: a displacement
map in UV space, model units; HRN's high-frequency level). Dropping the term ``d dN/du`` (a displacement
small against the base surface's radius of curvature: Blinn's bump mapping, 1978),

    dP'/du = P_u + d_u N,     dP'/dv = P_v + d_v N,
    dP'/du x dP'/dv = P_u x P_v + d_u (N x P_v) + d_v (P_u x N)           (N x N = 0)

with ``P_u, P_v`` the surface's tangents per unit of ``u`` and ``v`` and ``d_u, d_v`` the map's
derivatives. With ``P_u x P_v = s A N`` (``A = |P_u x P_v|``, ``s = +-1``: ``-1`` where the UV chart is
mirrored) the shading normal is

    n' = normalise(N + s (d_u (N x P_v) + d_v (P_u x N)) / A)

so a zero map gives back the base normal ``N`` exactly (also with interpolated vertex normals, where ``N``
is not the face normal). ``P_u, P_v`` are constant per triangle: with corner positions ``p_k`` and UVs
``t_k``, ``[p_1 - p_0, p_2 - p_0] = [P_u, P_v] [t_1 - t_0, t_2 - t_0]`` (3 x 2 = 3 x 2 . 2 x 2). Triangles whose
UVs span no area keep ``N``. The derivatives of the map are central differences on its texel grid (one-sided
at the border), sampled bilinearly at each pixel's UV; UVs follow :mod:`morphable.render.shading` (``v``
up, row 0 at the top of the map). Every function works in whatever frame its inputs share (world or
camera): the formula commutes with rotations. Differentiable w.r.t. the map and the vertices.
"""

from __future__ import annotations

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.render.raster import Rendering, interpolate
from morphable.render.shading import sample_texture

DEGENERATE_UV_AREA = 1e-12


def face_uv_tangents(vertices: torch.Tensor, faces: torch.Tensor | np.ndarray, uvs: torch.Tensor | np.ndarray,
                     face_uvs: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triangle tangents ``(P_u, P_v)``, each ``([B,] F, 3)``: the change of position per unit ``u`` and ``v``.

    Args:
        vertices: ``(V, 3)`` or ``(B, V, 3)``; faces ``(F, 3)``; uvs ``(T, 2)``; face_uvs ``(F, 3)``.

    A triangle whose UVs span no area (``|det| <= DEGENERATE_UV_AREA``) gets zero tangents.
    """
    f = torch.as_tensor(faces, dtype=torch.long, device=vertices.device)
    ft = torch.as_tensor(face_uvs, dtype=torch.long, device=vertices.device)
    if f.shape != ft.shape:
        raise MorphableError(f"faces {tuple(f.shape)} and face_uvs {tuple(ft.shape)} must have the same shape")
    t = torch.as_tensor(uvs, device=vertices.device).to(vertices.dtype)[ft]  # (F, 3, 2)
    p = vertices[..., f, :]  # ([B,] F, 3, 3)
    e1, e2 = p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :]
    du1, dv1 = t[:, 1, 0] - t[:, 0, 0], t[:, 1, 1] - t[:, 0, 1]
    du2, dv2 = t[:, 2, 0] - t[:, 0, 0], t[:, 2, 1] - t[:, 0, 1]
    det = du1 * dv2 - du2 * dv1
    ok = det.abs() > DEGENERATE_UV_AREA
    inv = torch.where(ok, 1 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    # [P_u P_v] = [e1 e2] T^-1, T = [[du1, du2], [dv1, dv2]], T^-1 = [[dv2, -du2], [-dv1, du1]] / det
    p_u = (e1 * dv2[:, None] - e2 * dv1[:, None]) * inv[:, None]
    p_v = (e2 * du1[:, None] - e1 * du2[:, None]) * inv[:, None]
    return p_u, p_v


def map_gradient(displacement: torch.Tensor) -> torch.Tensor:
    """``(d_u, d_v)`` of a map ``(B, 1, H, W)`` (or ``(1, H, W)``) per unit of ``u`` and ``v``: ``(B, 2, H, W)``
    (or ``(2, H, W)``); texel spacing ``1 / W`` in ``u`` and ``1 / H`` in ``v``, ``v`` growing up the rows."""
    batched = displacement.dim() == 4
    d = displacement if batched else displacement[None]
    if d.dim() != 4 or d.shape[1] != 1 or min(d.shape[-2:]) < 2:
        raise MorphableError(f"a displacement map must be (B, 1, H, W) with H, W >= 2, got {tuple(displacement.shape)}")
    H, W = d.shape[-2:]
    d_row, d_col = torch.gradient(d[:, 0], dim=(1, 2))  # per texel
    out = torch.stack([d_col * W, -d_row * H], dim=1)
    return out if batched else out[0]


def displaced_normals(normals: torch.Tensor, p_u: torch.Tensor, p_v: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Shading normals of the displaced surface (module docstring), ``(..., 3)`` unit vectors.

    Args:
        normals: ``(..., 3)`` unit base normals ``N``.
        p_u, p_v: ``(..., 3)`` tangents (:func:`face_uv_tangents`) at the same points.
        gradient: ``(..., 2)`` ``(d_u, d_v)`` of the displacement there (:func:`map_gradient`, sampled).
    """
    cross = torch.linalg.cross(p_u, p_v, dim=-1)
    area = cross.norm(dim=-1, keepdim=True)
    sign = torch.where((cross * normals).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(normals)
    ok = area > DEGENERATE_UV_AREA
    bend = (gradient[..., :1] * torch.linalg.cross(normals, p_v, dim=-1)
            + gradient[..., 1:] * torch.linalg.cross(p_u, normals, dim=-1))
    bent = normals + torch.where(ok, sign * bend / torch.where(ok, area, torch.ones_like(area)), torch.zeros_like(bend))
    return torch.nn.functional.normalize(bent, dim=-1)


def displaced_normal_map(rendering: Rendering, vertices: torch.Tensor, faces: torch.Tensor | np.ndarray,
                         uvs: torch.Tensor | np.ndarray, face_uvs: torch.Tensor | np.ndarray,
                         displacement: torch.Tensor) -> torch.Tensor:
    """Per-pixel shading normals ``([B,] H, W, 3)`` of a rendered mesh displaced by ``displacement``.

    Args:
        rendering: :func:`morphable.render.raster.rasterize` of ``vertices`` (its ``normals`` are the base ``N``).
        vertices: ``(V, 3)`` or ``(B, V, 3)`` in the frame of ``rendering.normals`` (the camera frame:
            ``camera.world_to_camera(vertices)``), as rasterised.
        faces, uvs, face_uvs: the mesh's triangles and texture coordinates (:mod:`morphable.render.shading`).
        displacement: ``(1, Ht, Wt)`` or ``(B, 1, Ht, Wt)`` map in model units.

    Returns:
        unit normals where the mesh is visible, 0 elsewhere.
    """
    batched = rendering.face_index.dim() == 3
    if batched != (displacement.dim() == 4) or batched != (vertices.dim() == 3):
        raise MorphableError("a batched rendering needs batched vertices (B, V, 3) and maps (B, 1, Ht, Wt)")
    uv_table = torch.as_tensor(uvs, device=vertices.device).to(vertices.dtype)
    pixel_uv = interpolate(uv_table, face_uvs, rendering.face_index, rendering.bary)
    gradient = sample_texture(map_gradient(displacement).to(vertices.dtype), pixel_uv)  # ([B,] H, W, 2)
    p_u, p_v = face_uv_tangents(vertices, faces, uvs, face_uvs)
    index = rendering.face_index.clamp_min(0)
    if batched:
        rows = torch.arange(len(index), device=index.device)[:, None, None]
        t_u, t_v = p_u[rows, index], p_v[rows, index]
    else:
        t_u, t_v = p_u[index], p_v[index]
    normals = displaced_normals(rendering.normals.to(vertices.dtype), t_u, t_v, gradient)
    return torch.where(rendering.mask[..., None], normals, torch.zeros_like(normals))
