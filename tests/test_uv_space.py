"""Texture-space rasterisation and photo unwrapping (render/uv_space.py): a naive point-in-triangle loop,
a textured real face rendered and unwrapped back, and an occluded surface that must stay invisible."""

from __future__ import annotations

import math

import numpy as np
import torch

from conftest import MEDIAPIPE_OBJ, require
from morphable.io import read_obj
from morphable.render.camera import Camera
from morphable.render.shading import render_shaded
from morphable.render.uv_space import rasterize_uv, unwrap_photo, uv_map_of

WHITE_SKY = torch.zeros(9, 3, dtype=torch.float64)
WHITE_SKY[0] = 2 * math.sqrt(math.pi)  # L = 1 everywhere: a pixel shows its albedo


def naive_uv_raster(uvs: np.ndarray, face_uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per texel centre the triangle containing it (-1 for none) and its barycentrics, by a loop."""
    index, bary = np.full((size, size), -1), np.zeros((size, size, 3))
    for r in range(size):
        for c in range(size):
            p = np.array([(c + 0.5) / size, 1 - (r + 0.5) / size])
            for f, corners in enumerate(face_uvs):
                a, b, d = uvs[corners]
                m = np.column_stack([b - a, d - a])
                l1, l2 = np.linalg.solve(m, p - a)
                if min(l1, l2, 1 - l1 - l2) >= -1e-12:
                    index[r, c], bary[r, c] = f, (1 - l1 - l2, l1, l2)
                    break
    return index, bary


def test_uv_rasterisation_equals_a_naive_loop():
    uvs = np.array([[0.1, 0.1], [0.9, 0.15], [0.5, 0.8], [0.95, 0.9], [0.2, 0.95]])
    face_uvs = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4]])
    r = rasterize_uv(uvs, face_uvs, 24)
    index, bary = naive_uv_raster(uvs, face_uvs, 24)
    interior = (index >= 0) & (r.face_index.numpy() >= 0)
    assert (r.face_index.numpy() >= 0).sum() == (index >= 0).sum() > 200
    np.testing.assert_allclose(r.bary.numpy()[interior], bary[interior], atol=1e-9)  # shared edges: same point
    positions = uv_map_of(torch.from_numpy(uvs), face_uvs, r)  # a map of the UVs themselves
    u, v = np.meshgrid((np.arange(24) + 0.5) / 24, 1 - (np.arange(24) + 0.5) / 24)
    np.testing.assert_allclose(positions[0].numpy()[interior], u[interior], atol=1e-12)
    np.testing.assert_allclose(positions[1].numpy()[interior], v[interior], atol=1e-12)


def texture_pattern(size: int) -> torch.Tensor:
    """A smooth RGB test texture ``(3, size, size)`` in [0.1, 0.9]."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    v, u = torch.meshgrid(1 - c, c, indexing="ij")
    return 0.5 + 0.4 * torch.stack([torch.sin(2 * math.pi * 2 * u), torch.cos(2 * math.pi * 3 * v),
                                    torch.sin(2 * math.pi * (u + v))])


def test_unwrapping_a_rendered_real_face_recovers_its_texture_on_visible_texels():
    mesh = read_obj(require(MEDIAPIPE_OBJ))  # MediaPipe's canonical face, cm, looking along +z
    vertices = torch.from_numpy(mesh.vertices)
    texture = texture_pattern(128)
    camera = Camera.look_at((0.0, 0.0, 60.0), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), fov_deg=22, width=256, height=256)
    image, mask = render_shaded(vertices, mesh.faces, camera, WHITE_SKY, texture=texture, uvs=mesh.uvs,
                                face_uvs=mesh.face_uvs, antialias=False)
    assert mask.mean() > 0.3
    chart = rasterize_uv(mesh.uvs, mesh.face_uvs, 128)
    unwrapped, visible = unwrap_photo(image.permute(2, 0, 1), vertices, mesh.faces, camera, chart)
    covered = chart.mask
    assert visible.sum() > 0.8 * covered.sum()  # a frontal view sees most of the face
    assert not (visible & ~covered).any()
    error = (unwrapped - texture).abs()[:, visible]
    assert error.mean() < 0.002 and np.quantile(error.numpy(), 0.99) < 0.03, (error.mean(), error.max())
    assert torch.equal(unwrapped[:, ~visible], torch.zeros_like(unwrapped[:, ~visible]))
    # seen from the side, the far cheek is hidden: fewer visible texels, and those still right
    side = Camera.look_at((50.0, 0.0, 30.0), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), fov_deg=22, width=256, height=256)
    image, _ = render_shaded(vertices, mesh.faces, side, WHITE_SKY, texture=texture, uvs=mesh.uvs,
                             face_uvs=mesh.face_uvs, antialias=False)
    side_texture, side_visible = unwrap_photo(image.permute(2, 0, 1), vertices, mesh.faces, side, chart)
    assert side_visible.sum() < 0.8 * visible.sum()
    assert (side_texture - texture).abs()[:, side_visible].mean() < 0.002


def test_an_occluded_layer_is_invisible_and_gradients_reach_the_photo():
    # two squares facing the camera, the back one hidden behind the front one; charts side by side
    square = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    vertices = torch.from_numpy(np.concatenate([square + [0, 0, 4.0], 0.5 * square + [0, 0, 6.0]]))
    faces = np.array([[0, 2, 1], [0, 3, 2], [4, 6, 5], [4, 7, 6]])
    uvs = np.array([[0.02, 0.02], [0.48, 0.02], [0.48, 0.98], [0.02, 0.98],
                    [0.52, 0.02], [0.98, 0.02], [0.98, 0.98], [0.52, 0.98]])
    camera = Camera(100.0, 100.0, 31.5, 31.5, 64, 64, torch.eye(3, dtype=torch.float64),
                    torch.zeros(3, dtype=torch.float64))
    chart = rasterize_uv(uvs, faces, 32)
    photo = torch.rand(3, 64, 64, dtype=torch.float64, requires_grad=True)
    texture, visible = unwrap_photo(photo, vertices, faces, camera, chart)
    left, right = chart.mask[:, :16], chart.mask[:, 16:]
    assert visible[:, 16:].sum() == 0 and right.sum() > 100
    assert visible[:, :16].sum() > 0.5 * left.sum()  # the front square is seen (only its middle fits the image)
    texture.sum().backward()
    assert photo.grad.abs().sum() > 0
