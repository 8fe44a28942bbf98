"""HRN's three levels on one crop: networks, the UV unwrapping between them, and the two renders.

For a crop ``I (B, 3, S, S)`` in [0, 1]:

    c      = mu + sigma E(I)                        coarse coefficients (B, P)  (:class:`CoarseRegressor`)
    M_0    = coarse(c)                              camera-frame vertices, albedo texture, SH light
    T_h    = unwrap(I, M_0) at h x h                the photo in the face tile's UV chart, with its visibility
    Mmap   = r_mid  tanh(G_mid([T_64, vis_64]))     (B, 3, 64, 64) deformation map (model units, camera frame)
    M_1    = M_0 + w Mmap(uv)                       the mid level's mesh (:meth:`FaceTile.deform`)
    Dmap   = r_high tanh(G_high([T_256, vis_256, up(Mmap) / r_mid]))   (B, 1, 256, 256) displacement map
    R_1    = render(M_1),  R_2 = render(M_1 with the normals Dmap bends)   (Blinn, render/displacement.py)

``r_mid`` / ``r_high`` bound the maps (``mid_range_mm``, ``high_range_mm``); the high generator sees the
mid map so that the two levels split the frequencies between them, as HRN's cascade. Maps live on the
face tile (:mod:`morphable.image.detail_maps`); faces off the tile keep their base normals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from morphable.image.coarse import CoarseFace, CoarseFaces
from morphable.image.detail_maps import FaceTile
from morphable.render.displacement import displaced_normal_map
from morphable.render.raster import Rendering
from morphable.render.shading import render_shaded, to_srgb
from morphable.render.uv_space import rasterize_uv, unwrap_photo


@dataclass
class HRNLevels:
    """One forward pass: ``coefficients (B, P)``, the decoded coarse face, ``mid_map (B, 3, h, h)``,
    ``high_map (B, 1, H, H)`` (model units), ``mid_vertices (B, V, 3)`` (camera frame) and the unwrapped
    photo at both sizes (``(B, 4, ., .)``: RGB and visibility)."""

    coefficients: torch.Tensor
    coarse: CoarseFaces
    mid_map: torch.Tensor
    high_map: torch.Tensor
    mid_vertices: torch.Tensor
    unwrapped_mid: torch.Tensor
    unwrapped_high: torch.Tensor

    def mid_landmarks(self, face: CoarseFace) -> torch.Tensor:
        """``(B, 68, 2)`` crop pixels of the mid mesh's landmark vertices."""
        marks = self.mid_vertices[:, face.landmark_ids]
        return marks[..., :2] / marks[..., 2:] * face.focal_px + (face.size - 1) / 2


class HRNGeometry(nn.Module):
    """The fixed (untrained) parts: the :class:`CoarseFace`, the :class:`FaceTile` and its UV rasters at the two
    map sizes. Buffers only."""

    def __init__(self, face: CoarseFace, tile: FaceTile, mid_size: int, high_size: int) -> None:
        super().__init__()
        self.face, self.tile, self.mid_size, self.high_size = face, tile, mid_size, high_size
        self.rasters = {size: rasterize_uv(tile.uvs, tile.face_uvs, size) for size in {mid_size, high_size}}
        in_tile = torch.zeros(len(face.faces), dtype=torch.bool)
        in_tile[torch.as_tensor(tile.face_ids)] = True
        self.register_buffer("in_tile", in_tile)
        self.register_buffer("tile_uvs", torch.as_tensor(tile.uvs, dtype=torch.float32))

    def texel_mask(self, size: int) -> torch.Tensor:
        """``(1, 1, size, size)`` float: 1 on texels a tile face covers (the skin the maps can move)."""
        return (self.rasters[size].face_index >= 0).float()[None, None].to(self.in_tile.device)

    def unwrap(self, images: torch.Tensor, vertices: torch.Tensor, size: int) -> torch.Tensor:
        """``images (B, 3, S, S)``, camera-frame ``vertices (B, V, 3)`` -> ``(B, 4, size, size)``: the photo's
        colours at visible texels and the visibility (:func:`~morphable.render.uv_space.unwrap_photo`)."""
        camera = self.face.camera(vertices.dtype)
        raster = self.rasters[size]
        faces = torch.as_tensor(self.tile.faces, device=vertices.device)
        out = []
        for image, v in zip(images, vertices.detach()):
            texture, visible = unwrap_photo(image, v, faces, camera, raster)
            out.append(torch.cat([texture, visible[None].to(texture)], 0))
        return torch.stack(out)

    def render(self, decoded: CoarseFaces, vertices: torch.Tensor, displacement: torch.Tensor | None = None,
               antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """sRGB ``(B, S, S, 3)`` and coverage ``(B, S, S)`` of ``vertices`` with ``decoded``'s albedo and light;
        with ``displacement (B, 1, H, H)`` the tile faces shade with the normals it bends."""
        face = self.face
        shading = None
        if displacement is not None:
            def shading(r: Rendering) -> torch.Tensor:
                bent = displaced_normal_map(r, vertices, face.faces, self.tile_uvs, face.face_uvs, displacement)
                on_tile = self.in_tile[r.face_index.clamp_min(0)] & (r.face_index >= 0)
                return torch.where(on_tile[..., None], bent, r.normals)
        camera = face.camera(vertices.dtype)
        linear, coverage = render_shaded(vertices, face.faces, [camera] * len(vertices), decoded.light,
                                         albedo=face.vertex_colour, texture=decoded.texture, uvs=face.uvs,
                                         face_uvs=face.face_uvs, textured=face.textured, antialias=antialias,
                                         shading_normals=shading)
        return to_srgb(linear), coverage


class CoarseRegressor(nn.Module):
    """``c = mu + sigma * E(I)``: a ResNet regressor whose output is standardised by the training targets'
    mean ``mu`` and deviation ``sigma`` (``(P,)`` buffers; pose translations vary by centimetres, expression
    weights by hundredths), so its zero-initialised head starts at the mean coefficients and every group
    learns at one scale."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, depth: int, width: int) -> None:
        super().__init__()
        from morphable.image.resnet import ResNetRegressor

        self.net = ResNetRegressor(len(mean), depth, 3, width)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self.net(images)

    def standardise(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``(c - mu) / sigma``: the scale the pre-training loss compares coefficients at."""
        return (coefficients - self.mean) / self.std


class HRNGenerators(nn.Module):
    """The coarse regressor and the two U-Nets (module docstring), their output convolutions zero-initialised.
    ``mid_range`` / ``high_range``: the maps' bounds in model units."""

    def __init__(self, coefficient_mean: np.ndarray, coefficient_std: np.ndarray, mid_size: int, high_size: int,
                 mid_range: float, high_range: float, *, coarse_depth: int, coarse_width: int,
                 generator_width: int) -> None:
        super().__init__()
        from morphable.image.unet import UNetGenerator

        self.mid_range, self.high_range = mid_range, high_range
        self.coarse = CoarseRegressor(coefficient_mean, coefficient_std, coarse_depth, coarse_width)
        self.mid = UNetGenerator(4, 3, int(math.log2(mid_size)), generator_width, dropout=False)
        self.high = UNetGenerator(7, 1, int(math.log2(high_size)), generator_width, dropout=False)
        for unet in (self.mid, self.high):  # zero maps at the start: M_1 = M_0 until the maps learn
            last = unet.head[1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)


def hrn_forward(generators: HRNGenerators, geometry: HRNGeometry, images: torch.Tensor,
                train_coarse: bool = True) -> HRNLevels:
    """The module docstring's cascade on ``images (B, 3, S, S)``; ``train_coarse`` False runs the coarse
    regressor without a graph (its weights frozen)."""
    with torch.set_grad_enabled(train_coarse and torch.is_grad_enabled()):
        coefficients = generators.coarse(images)
    decoded = geometry.face(coefficients)
    unwrapped_mid = geometry.unwrap(images, decoded.vertices, geometry.mid_size)
    unwrapped_high = geometry.unwrap(images, decoded.vertices, geometry.high_size)
    mid_map = generators.mid_range * generators.mid(unwrapped_mid)
    up = nn.functional.interpolate(mid_map / generators.mid_range, size=unwrapped_high.shape[-2:], mode="bilinear",
                                   align_corners=False)
    high_map = generators.high_range * generators.high(torch.cat([unwrapped_high, up], 1))
    mid_vertices = geometry.tile.deform(decoded.vertices, mid_map)
    return HRNLevels(coefficients, decoded, mid_map, high_map, mid_vertices, unwrapped_mid, unwrapped_high)


def model_frame(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Camera-frame ``vertices (B, V, 3)`` back to the model frame: ``(X - t) R`` for ``X = S R^T + t``
    (``rotation (B, 3, 3)``, ``translation (B, 3)``)."""
    return (vertices - translation[:, None]) @ rotation


def level_meshes(levels: HRNLevels, face: CoarseFace) -> dict[str, np.ndarray]:
    """Model-frame ``(B, V, 3)`` float64 meshes of the coarse and mid levels (pose removed: the geometry a
    reconstruction is scored on)."""
    from morphable.image.coarse import euler_rotation

    g = face.layout.split(levels.coefficients.detach())
    R = euler_rotation(g["rotation"].double())
    t = face.t_ref.double() + g["translation"].double() * face.cm
    coarse = model_frame(levels.coarse.vertices.detach().double(), R, t)
    mid = model_frame(levels.mid_vertices.detach().double(), R, t)
    return {"coarse": coarse.cpu().numpy(), "mid": mid.cpu().numpy()}
