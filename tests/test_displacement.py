"""Displacement-mapped shading normals (render/displacement.py) against an analytic plane and a finely
tessellated, really displaced cylinder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphable.errors import MorphableError
from morphable.render.camera import Camera
from morphable.render.displacement import (displaced_normal_map, displaced_normals, face_uv_tangents,
                                           map_gradient)
from morphable.render.raster import rasterize


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n * n, 2)`` parameters in [0, 1]^2 (row-major in ``s``, then ``t``) and ``(2 (n-1)^2, 3)`` triangles
    wound so that their normal is ``-(ds x dt)``."""
    s, t = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    params = np.stack([s.ravel(), t.ravel()], axis=1)
    k = np.arange(n * n).reshape(n, n)[:-1, :-1].ravel()
    faces = np.concatenate([np.stack([k, k + 1, k + n], 1), np.stack([k + 1, k + n + 1, k + n], 1)])
    return params, faces


def texel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` of the texel centres of a ``size x size`` map (v up, row 0 at the top)."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, 1 - c, indexing="xy")


def camera(width: int = 96) -> Camera:
    """Looking down +z from the origin at surfaces about 3 units away."""
    return Camera(120.0, 120.0, width / 2 - 0.5, width / 2 - 0.5, width, width, torch.eye(3, dtype=torch.float64),
                  torch.zeros(3, dtype=torch.float64))


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos((a * b).sum(-1).clamp(-1, 1)))


def test_a_displaced_plane_has_the_analytic_normals():
    params, faces = grid(5)
    vertices = torch.from_numpy(np.column_stack([2 * params - 1, np.full(len(params), 3.0)]))  # plane z = 3
    uvs = params.copy()  # u = (x + 1) / 2, v = (y + 1) / 2
    a, b = 0.02, 0.015

    def d(u, v):
        return a * np.sin(2 * np.pi * 3 * u) + b * np.cos(2 * np.pi * 2 * v)

    u, v = texel_centres(512)
    disp = torch.from_numpy(d(u, v))[None]
    r = rasterize(vertices, faces, camera())
    assert torch.allclose(r.normals[r.mask], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))  # faces the camera
    normals = displaced_normal_map(r, vertices, faces, uvs, faces, disp)
    # P' = P + d N with N = -z: the surface z = 3 - d(u(x), v(y)), du/dx = dv/dy = 1/2
    jj, ii = np.meshgrid(np.arange(96), np.arange(96))
    x, y = (jj - 47.5) / 120 * 3, (ii - 47.5) / 120 * 3
    pu, pv = (x + 1) / 2, (y + 1) / 2
    d_u = a * 2 * np.pi * 3 * np.cos(2 * np.pi * 3 * pu)
    d_v = -b * 2 * np.pi * 2 * np.sin(2 * np.pi * 2 * pv)
    expected = torch.nn.functional.normalize(torch.from_numpy(np.stack([-d_u / 2, -d_v / 2, -np.ones_like(x)], -1)), dim=-1)
    mask = r.mask
    err = angle_deg(normals[mask], expected[mask])
    tilt = angle_deg(expected[mask], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    assert tilt.max() > 5  # the bumps really tilt the normals
    assert err.max() < 0.05, err.max()
    assert torch.equal(normals[~mask], torch.zeros_like(normals[~mask]))


def cylinder(n: int, radius: float = 1.0, half_angle: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A patch of a cylinder about the y axis bulging towards a camera at the origin: vertices, faces, uvs,
    analytic unit normals (towards the camera)."""
    params, faces = grid(n)
    theta, y = (2 * params[:, 0] - 1) * half_angle, params[:, 1] - 0.5
    normal = np.stack([np.sin(theta), np.zeros_like(theta), -np.cos(theta)], axis=1)
    vertices = np.column_stack([radius * np.sin(theta), y, 4.0 - radius * np.cos(theta)])
    return vertices, faces, params, normal


@pytest.mark.parametrize("mirrored", [False, True])
def test_displaced_normals_match_a_finely_tessellated_really_displaced_surface(mirrored):
    """Both chart orientations: ``P_u x P_v`` against the base normal (this grid's winding) and along it."""
    a = 0.02  # 2 % of the radius: the dropped d dN/du term is of that order

    def d(u, v):
        return a * np.sin(2 * np.pi * 2 * u) * np.cos(2 * np.pi * v)

    coarse, faces, params, _ = cylinder(40)
    fine, fine_faces, fine_params, fine_normal = cylinder(400)
    uvs = params.copy()
    u, v = texel_centres(256)
    disp = d(u, v)
    if mirrored:  # a mirrored chart (u -> 1 - u) with the map mirrored too describes the same surface
        uvs[:, 0] = 1 - uvs[:, 0]
        disp = disp[:, ::-1].copy()
    cam = camera()
    r = rasterize(torch.from_numpy(coarse), faces, cam)
    ours = displaced_normal_map(r, torch.from_numpy(coarse), faces, uvs, faces, torch.from_numpy(disp)[None])
    displaced = fine + d(fine_params[:, 0], fine_params[:, 1])[:, None] * fine_normal
    reference = rasterize(torch.from_numpy(displaced), fine_faces, cam).normals
    base = r.normals
    mask = r.mask & (reference.norm(dim=-1) > 0)
    err = angle_deg(ours[mask], reference[mask])
    effect = angle_deg(base[mask], reference[mask])
    assert effect.mean() > 4
    assert err.mean() < 0.1 * effect.mean(), (err.mean(), effect.mean())


def test_a_zero_map_gives_the_base_normals_and_degenerate_uvs_keep_them():
    vertices, faces, uvs, _ = cylinder(12)
    v = torch.from_numpy(vertices)
    r = rasterize(v, faces, camera(48))
    flat = displaced_normal_map(r, v, faces, uvs, faces, torch.zeros(1, 32, 32, dtype=torch.float64))
    assert torch.allclose(flat[r.mask], r.normals[r.mask], atol=1e-12)
    p_u, p_v = face_uv_tangents(v, faces, np.zeros_like(uvs), faces)  # every UV triangle collapsed
    assert torch.equal(p_u, torch.zeros_like(p_u)) and torch.equal(p_v, torch.zeros_like(p_v))
    n = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(displaced_normals(n, p_u[:1], p_v[:1], torch.tensor([[5.0, -3.0]], dtype=torch.float64)), n)


def test_tangents_of_a_triangle_reproduce_its_edges_and_batches_agree():
    rng = np.random.default_rng(0)
    vertices, faces, uvs = rng.normal(size=(6, 3)), np.array([[0, 1, 2], [3, 4, 5]]), rng.uniform(size=(6, 2))
    p_u, p_v = face_uv_tangents(torch.from_numpy(vertices), faces, uvs, faces)
    for f in range(2):
        for k in (1, 2):
            du, dv = uvs[faces[f, k]] - uvs[faces[f, 0]]
            edge = vertices[faces[f, k]] - vertices[faces[f, 0]]
            np.testing.assert_allclose((du * p_u[f] + dv * p_v[f]).numpy(), edge, atol=1e-12)
    batch = torch.from_numpy(np.stack([vertices, 2 * vertices]))
    bu, bv = face_uv_tangents(batch, faces, uvs, faces)
    assert torch.allclose(bu[0], p_u) and torch.allclose(bu[1], 2 * p_u) and torch.allclose(bv[1], 2 * p_v)


def test_map_gradient_of_a_ramp_and_the_formula_is_differentiable():
    u, v = texel_centres(16)
    ramp = torch.from_numpy(3 * u - 2 * v)[None]
    g = map_gradient(ramp)
    assert torch.allclose(g[0], torch.full_like(g[0], 3.0)) and torch.allclose(g[1], torch.full_like(g[1], -2.0))
    with pytest.raises(MorphableError, match="displacement map must be"):
        map_gradient(torch.zeros(2, 16, 16))
    torch.manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=-1)
    p_u, p_v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    grad = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g_: displaced_normals(n, p_u, p_v, g_), (grad,))
    assert math.isclose(float(displaced_normals(n, p_u, p_v, grad.detach()).norm(dim=-1).min()), 1.0, rel_tol=1e-12)
