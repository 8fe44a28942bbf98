"""Lambertian shading under spherical-harmonics light, textures and UV-space maps, one-call shaded renders.

Spherical harmonics. The 9 real SH functions of orders ``l = 0, 1, 2`` of a unit direction ``n = (x, y, z)``,
in this order (index ``k``):

    k  (l, m)   Y_k(n)
    0  (0,  0)  c0                       c0 = 1 / (2 sqrt(pi))          = 0.282095
    1  (1, -1)  c1 y                     c1 = sqrt(3 / (4 pi))          = 0.488603
    2  (1,  0)  c1 z
    3  (1,  1)  c1 x
    4  (2, -2)  c2 x y                   c2 = sqrt(15 / pi) / 2         = 1.092548
    5  (2, -1)  c2 y z
    6  (2,  0)  c3 (3 z^2 - 1)           c3 = sqrt(5 / pi) / 4          = 0.315392
    7  (2,  1)  c2 x z
    8  (2,  2)  c4 (x^2 - y^2)           c4 = sqrt(15 / pi) / 4         = 0.546274

(orthonormal on the sphere: ``int Y_k Y_j dw = delta_kj``).

Light. The coefficients ``L_k`` (``sh``) are those of the incident *radiance* ``L(w) = sum_k L_k Y_k(w)``, one
set per colour channel: shape ``(9, 3)`` (``sh[k, c]``), or ``(27,)`` = that array flattened row-major
(``sh[3 k + c]``), or batched ``(B, 9, 3)`` / ``(B, 27)``. The irradiance of a surface with normal ``n``,
``E(n) = int max(n . w, 0) L(w) dw``, is (Ramamoorthi and Hanrahan 2001, exact for a 9-term ``L``)

    E(n) = sum_k A_l(k) L_k Y_k(n),    A_0 = pi,  A_1 = 2 pi / 3,  A_2 = pi / 4

(the clamped-cosine convolution factors). :func:`sh_shading` returns ``E``. A Lambertian surface of albedo
``rho`` reflects the radiance ``rho E(n) / pi`` (:func:`shade`): under a uniform white sky
``L(w) = 1`` (``L_0 = 2 sqrt(pi)``, ``E = pi``) a pixel shows its albedo exactly.

Textures and UVs. UV coordinates follow the OBJ convention: ``u`` runs left to right and ``v`` runs *up*,
so ``(u, v) = (0, 0)`` is the bottom-left corner of the texture image and ``(0, 1)`` its top-left corner
(image row 0). A texture ``(C, Ht, Wt)`` is a stack of images with row 0 at the top; texel ``(row r,
column c)`` has its centre at ``u = (c + 1/2) / Wt``, ``v = 1 - (r + 1/2) / Ht``. Sampling is bilinear with
the border texels repeated outside ``[0, 1]^2`` (``torch.nn.functional.grid_sample``, ``align_corners=False``,
``padding_mode="border"``), differentiable w.r.t. the texture and the UVs.

UVs are per face corner (``uvs (T, 2)``, ``face_uvs (F, 3)``, as :class:`morphable.io.Mesh` reads them): a
vertex on a texture seam has several UVs. :func:`vertex_values_from_uv_map` gives such a vertex the *mean*
of the map over its distinct UVs (each distinct ``vt`` counted once, however many faces use it), so every
vertex gets one value and a mesh displaced by it stays watertight along seams.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.render.camera import Camera

if TYPE_CHECKING:
    from morphable.render.raster import Rendering

SH_CONSTANTS = (1 / (2 * math.sqrt(math.pi)), math.sqrt(3 / (4 * math.pi)), math.sqrt(15 / math.pi) / 2,
                math.sqrt(5 / math.pi) / 4, math.sqrt(15 / math.pi) / 4)
"""``(c0, c1, c2, c3, c4)`` of the basis table in the module docstring."""

SH_BAND_FACTORS = (math.pi, 2 * math.pi / 3, math.pi / 4)
"""``(A_0, A_1, A_2)``: irradiance = ``A_l`` times the radiance coefficient of band ``l``."""

_BAND_OF_COEFFICIENT = (0, 1, 1, 1, 2, 2, 2, 2, 2)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 real SH functions of the module docstring at unit directions: ``(..., 3) -> (..., 9)``."""
    x, y, z = normals.unbind(-1)
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    return torch.stack([torch.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z,
                        c3 * (3 * z * z - 1), c2 * x * z, c4 * (x * x - y * y)], dim=-1)


def _sh_matrix(sh: torch.Tensor) -> torch.Tensor:
    """``sh`` as ``(9, 3)`` or ``(B, 9, 3)`` (from ``(27,)``, ``(9, 3)``, ``(B, 27)`` or ``(B, 9, 3)``)."""
    if sh.shape[-1] == 27 and sh.dim() in (1, 2):
        return sh.reshape(*sh.shape[:-1], 9, 3)
    if sh.shape[-2:] == (9, 3) and sh.dim() in (2, 3):
        return sh
    raise MorphableError(f"SH light must have shape (27,), (9, 3), (B, 27) or (B, 9, 3), got {tuple(sh.shape)}")


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance ``E(n) = sum_k A_l(k) L_k Y_k(n)`` per colour channel (module docstring).

    Args:
        normals: ``(..., 3)`` unit normals; with batched light, ``(B, ..., 3)``.
        sh: radiance coefficients ``(9, 3)`` / ``(27,)``, or one set per batch element ``(B, 9, 3)`` / ``(B, 27)``.

    Returns:
        ``(..., 3)`` irradiance (``(B, ..., 3)`` with batched light).
    """
    light = _sh_matrix(sh).to(normals)
    factors = torch.tensor([SH_BAND_FACTORS[b] for b in _BAND_OF_COEFFICIENT], dtype=normals.dtype,
                           device=normals.device)
    light = light * factors[:, None]
    basis = sh_basis(normals)
    if light.dim() == 2:
        return basis @ light
    if basis.dim() < 2 or basis.shape[0] != light.shape[0]:
        raise MorphableError(f"batched SH light of {light.shape[0]} sets needs normals (B, ..., 3) with "
                             f"B = {light.shape[0]}, got {tuple(normals.shape)}")
    flat = basis.reshape(basis.shape[0], -1, 9)
    return torch.bmm(flat, light).reshape(*basis.shape[:-1], 3)


def to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function of linear RGB clipped to [0, 1]: ``12.92 c`` below 0.0031308, else
    ``1.055 c^(1/2.4) - 0.055`` (differentiable; :func:`morphable.data.albedo.linear_to_srgb` in numpy)."""
    c = linear.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def shade(albedo: torch.Tensor, normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian radiance ``rho E(n) / pi``: ``albedo (..., 3)``, ``normals (..., 3)`` -> ``(..., 3)``
    (``sh`` as in :func:`sh_shading`)."""
    return albedo * sh_shading(normals, sh) / math.pi


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture look-up at UV coordinates (OBJ convention, ``v`` up: module docstring).

    Args:
        texture: ``(C, Ht, Wt)`` one texture, or ``(B, C, Ht, Wt)`` one per batch element.
        uv: ``(..., 2)`` coordinates; with a batched texture ``(B, ..., 2)``.

    Returns:
        ``(..., C)`` values (``(B, ..., C)`` with a batched texture), differentiable w.r.t. both inputs.
    """
    batched = texture.dim() == 4
    if texture.dim() not in (3, 4):
        raise MorphableError(f"a texture must be (C, Ht, Wt) or (B, C, Ht, Wt), got {tuple(texture.shape)}")
    tex = texture if batched else texture[None]
    coords = uv if batched else uv[None]
    if coords.shape[0] != tex.shape[0]:
        raise MorphableError(f"{tex.shape[0]} textures but UVs of shape {tuple(uv.shape)}")
    grid = torch.stack([2 * coords[..., 0] - 1, 1 - 2 * coords[..., 1]], dim=-1).to(tex)
    flat = grid.reshape(tex.shape[0], 1, -1, 2)
    values = torch.nn.functional.grid_sample(tex, flat, mode="bilinear", padding_mode="border",
                                             align_corners=False)  # (B, C, 1, N)
    out = values[:, :, 0].transpose(1, 2).reshape(*coords.shape[:-1], tex.shape[1])
    return out if batched else out[0]


def vertex_uv_pairs(faces: torch.Tensor | np.ndarray, face_uvs: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The distinct ``(vertex, uv index)`` pairs of a mesh's face corners, ``(P, 2)`` int64, sorted.

    A vertex inside a UV chart appears once; a vertex on a seam once per UV it has there.
    """
    f = torch.as_tensor(faces, dtype=torch.long).reshape(-1)
    t = torch.as_tensor(face_uvs, dtype=torch.long, device=f.device).reshape(-1)
    if f.shape != t.shape:
        raise MorphableError(f"faces and face_uvs must have the same shape, got {f.numel()} and {t.numel()} corners")
    return torch.unique(torch.stack([f, t], dim=1), dim=0)


def vertex_values_from_uv_map(uv_map: torch.Tensor, uvs: torch.Tensor | np.ndarray,
                              face_uvs: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray,
                              n_vertices: int) -> torch.Tensor:
    """One value per vertex from a UV-space map (HRN's deformation / displacement maps).

    ``value(v) = mean over the distinct UV indices t used by v's face corners of sample(uv_map, uvs[t])``:
    a seam vertex (several UVs) gets the mean of its samples, every other vertex its one sample. A vertex
    in no face gets 0.

    Args:
        uv_map: ``(C, Ht, Wt)`` or ``(B, C, Ht, Wt)`` map (v up, as :func:`sample_texture`).
        uvs: ``(T, 2)`` texture coordinates; face_uvs ``(F, 3)`` their indices per face corner.
        faces: ``(F, 3)`` vertex indices.
        n_vertices: ``V``.

    Returns:
        ``(V, C)`` (or ``(B, V, C)``), differentiable w.r.t. ``uv_map``.
    """
    pairs = vertex_uv_pairs(faces, face_uvs).to(uv_map.device)
    uv = torch.as_tensor(uvs, device=uv_map.device).to(uv_map.dtype)[pairs[:, 1]]  # (P, 2)
    batched = uv_map.dim() == 4
    samples = sample_texture(uv_map, uv.expand(uv_map.shape[0], -1, -1) if batched else uv)  # ([B,] P, C)
    count = torch.zeros(n_vertices, dtype=uv_map.dtype, device=uv_map.device).index_add_(
        0, pairs[:, 0], torch.ones(len(pairs), dtype=uv_map.dtype, device=uv_map.device))
    total = torch.zeros(*samples.shape[:-2], n_vertices, samples.shape[-1], dtype=samples.dtype,
                        device=samples.device).index_add_(-2, pairs[:, 0], samples)
    return total / count.clamp_min(1)[:, None]


def render_shaded(vertices: torch.Tensor, faces: torch.Tensor | np.ndarray, camera: Camera | Sequence[Camera],
                  sh: torch.Tensor, *, albedo: torch.Tensor | None = None, texture: torch.Tensor | None = None,
                  uvs: torch.Tensor | np.ndarray | None = None, face_uvs: torch.Tensor | np.ndarray | None = None,
                  textured: torch.Tensor | np.ndarray | None = None,
                  background: torch.Tensor | float = 0.0, antialias: bool = True,
                  neighbours: torch.Tensor | None = None,
                  shading_normals: Callable[[Rendering], torch.Tensor] | None = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise, interpolate normals and albedo, shade with SH light, composite and anti-alias: one call.

    Light is given in the *camera* frame (OpenCV axes: x right, y down, z forward), so a light from the
    camera lights normals with ``n_z < 0``: e.g. ``L_2 < 0`` (the ``c1 z`` term) brightens the faces that
    look at the camera.

    Args:
        vertices: ``(V, 3)`` or ``(B, V, 3)`` world coordinates (a batch shares ``faces``).
        faces: ``(F, 3)``.
        camera: one :class:`Camera`, or one per batch element (same image size).
        sh: SH radiance coefficients, ``(9, 3)`` / ``(27,)`` or batched ``(B, 9, 3)`` / ``(B, 27)``.
        albedo: ``(V, 3)`` or ``(B, V, 3)`` per-vertex albedo; or give ``texture``.
        texture: ``(3, Ht, Wt)`` or ``(B, 3, Ht, Wt)`` albedo texture with ``uvs (T, 2)`` and ``face_uvs (F, 3)``.
            With neither albedo nor texture the albedo is 1.
        textured: ``(F,)`` bool with a texture: the faces it colours; the others take ``albedo`` (e.g. a face
            model's textured skin beside eyeballs and mouth socket coloured per vertex).
        background: a colour (float or ``(3,)``) or an image ``([B,] H, W, 3)`` behind the mesh.
        antialias: blend along silhouettes (:func:`morphable.render.raster.antialias`) so that they pass
            gradients to vertex positions; False gives the hard, z-buffered image.
        neighbours: :func:`morphable.render.raster.edge_neighbours` of ``faces``, to reuse across calls
            (computed per call when None: ~3 ms for 22k triangles).
        shading_normals: ``rendering -> ([B,] H, W, 3)`` unit normals to shade with instead of the
            interpolated vertex normals (e.g. a displacement map's,
            :func:`morphable.render.displacement.displaced_normal_map`); the silhouette is the mesh's.
        options: for :func:`morphable.render.raster.rasterize` (``near``, ``smooth``, ``budget``).

    Returns:
        ``image ([B,] H, W, 3)`` and ``mask ([B,] H, W)`` (float coverage in [0, 1]; 0 or 1 without
        antialiasing), differentiable w.r.t. vertices, light, albedo and texture.
    """
    from morphable.render import raster

    r = raster.rasterize(vertices, faces, camera, **options)
    covered = r.mask[..., None]
    if texture is not None:
        if uvs is None or face_uvs is None:
            raise MorphableError("a texture needs uvs and face_uvs")
        uv_table = torch.as_tensor(uvs, device=r.bary.device).to(r.bary.dtype)
        pixel_uv = raster.interpolate(uv_table, face_uvs, r.face_index, r.bary)
        colour = sample_texture(texture, pixel_uv)
        if textured is not None:
            if albedo is None:
                raise MorphableError("faces left untextured need a per-vertex albedo")
            own = raster.interpolate(albedo, faces, r.face_index, r.bary)
            is_textured = torch.as_tensor(textured, dtype=torch.bool, device=own.device)[r.face_index.clamp(min=0)]
            colour = torch.where(is_textured[..., None], colour, own)
    elif albedo is not None:
        colour = raster.interpolate(albedo, faces, r.face_index, r.bary)
    else:
        colour = torch.ones_like(r.normals)
    lit = shade(colour, r.normals if shading_normals is None else shading_normals(r), sh)
    back = torch.as_tensor(background, dtype=lit.dtype, device=lit.device).expand_as(lit)
    image = torch.where(covered, lit, back)
    coverage = r.mask.to(lit.dtype)
    if antialias:
        image, coverage = raster.antialias(torch.cat([image, coverage[..., None]], dim=-1), r, vertices, faces,
                                           camera, neighbours=neighbours).split([3, 1], dim=-1)
        coverage = coverage[..., 0]
    return image, coverage
