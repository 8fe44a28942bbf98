"""SH shading, textures and UV maps: orthonormality, Ramamoorthi-Hanrahan irradiance against quadrature,
finite-difference gradients, UV orientation, seam vertices."""

import math

import numpy as np
import pytest
import torch

from conftest import ICT_FOLDER, require
from morphable.errors import MorphableError
from morphable.render.shading import (sample_texture, sh_basis, sh_shading, shade, vertex_uv_pairs,
                                      vertex_values_from_uv_map)


def fibonacci_sphere(n: int) -> torch.Tensor:
    """``n`` nearly uniform unit directions (equal-area quadrature weights ``4 pi / n``)."""
    k = torch.arange(n, dtype=torch.float64)
    y = 1 - 2 * (k + 0.5) / n
    phi = k * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - y * y)
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], dim=1)


def test_sh_basis_is_orthonormal():
    w = fibonacci_sphere(200_000)
    Y = sh_basis(w)
    gram = Y.T @ Y * (4 * math.pi / len(w))
    np.testing.assert_allclose(gram.numpy(), np.eye(9), atol=2e-4)


@pytest.mark.parametrize("band", [0, 1, 2])
def test_irradiance_matches_quadrature_of_the_clamped_cosine(band):
    """E(n) = int max(n.w, 0) L(w) dw for a light with one band only, by quadrature, vs the closed form."""
    torch.manual_seed(band)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    ks = {0: [0], 1: [1, 2, 3], 2: [4, 5, 6, 7, 8]}[band]
    sh[ks] = torch.randn(len(ks), 3, dtype=torch.float64)
    w = fibonacci_sphere(100_000)
    radiance = sh_basis(w) @ sh  # (N, 3)
    normals = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=1)
    cosine = (normals @ w.T).clamp_min(0)  # (20, N)
    reference = cosine @ radiance * (4 * math.pi / len(w))
    np.testing.assert_allclose(sh_shading(normals, sh).numpy(), reference.numpy(), atol=2e-4)
    # negative control: without the convolution factors the band is off by A_l
    plain = sh_basis(normals) @ sh
    assert (plain - reference).abs().max() > 0.05


def test_uniform_white_sky_shows_the_albedo_and_layouts_agree():
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = 2 * math.sqrt(math.pi)
    normals = torch.nn.functional.normalize(torch.randn(4, 5, 3, dtype=torch.float64), dim=-1)
    albedo = torch.rand(4, 5, 3, dtype=torch.float64)
    np.testing.assert_allclose(shade(albedo, normals, sh).numpy(), albedo.numpy(), atol=1e-12)
    light = torch.randn(2, 9, 3, dtype=torch.float64)
    n2 = torch.nn.functional.normalize(torch.randn(2, 7, 3, dtype=torch.float64), dim=-1)
    batched = sh_shading(n2, light)
    assert torch.allclose(sh_shading(n2, light.reshape(2, 27)), batched)
    for b in range(2):
        assert torch.allclose(batched[b], sh_shading(n2[b], light[b].reshape(27)))
    with pytest.raises(MorphableError):
        sh_shading(n2, torch.zeros(3, 9, 3))
    with pytest.raises(MorphableError):
        sh_shading(n2, torch.zeros(10, 3))


def test_shading_and_texture_gradients():
    torch.manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)
    sh = torch.randn(2, 27, dtype=torch.float64, requires_grad=True)
    albedo = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: shade(a, normals, s), (albedo, sh))
    texture = torch.rand(3, 6, 7, dtype=torch.float64, requires_grad=True)
    uv = (0.1 + 0.8 * torch.rand(4, 2, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(sample_texture, (texture, uv))
    batched = torch.rand(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sample_texture(t, uv.detach().expand(2, 4, 2)), (batched,))


def test_texture_orientation_v_up_and_texel_centres():
    Ht, Wt = 4, 5
    texture = torch.arange(Ht * Wt, dtype=torch.float64).reshape(1, Ht, Wt)
    rows, cols = torch.meshgrid(torch.arange(Ht, dtype=torch.float64), torch.arange(Wt, dtype=torch.float64),
                                indexing="ij")
    uv = torch.stack([(cols + 0.5) / Wt, 1 - (rows + 0.5) / Ht], dim=-1)
    np.testing.assert_allclose(sample_texture(texture, uv)[..., 0].numpy(), texture[0].numpy(), atol=1e-12)
    # (0, 1) is the top-left texel, (0, 0) the bottom-left; halfway between two texels: their mean
    corners = sample_texture(texture, torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0 / Wt, 1 - 0.5 / Ht]],
                                                      dtype=torch.float64))
    np.testing.assert_allclose(corners[:, 0].numpy(), [0.0, 15.0, 1.5], atol=1e-12)


def test_uv_map_values_at_seams_are_one_per_vertex():
    """Two triangles sharing an edge whose vertex 1 has two UVs (a seam): its value is the mean of both."""
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    face_uvs = np.array([[0, 1, 2], [4, 3, 2]])  # vertex 1 uses uv 1 in face 0 and uv 4 in face 1
    uvs = np.array([[0.1, 0.1], [0.4, 0.1], [0.1, 0.6], [0.9, 0.9], [0.7, 0.3]])
    uv_map = torch.rand(2, 8, 8, dtype=torch.float64)
    values = vertex_values_from_uv_map(uv_map, uvs, face_uvs, faces, 5)
    samples = sample_texture(uv_map, torch.from_numpy(uvs))
    np.testing.assert_allclose(values[1].numpy(), ((samples[1] + samples[4]) / 2).numpy(), atol=1e-12)
    for v, t in ((0, 0), (2, 2), (3, 3)):
        np.testing.assert_allclose(values[v].numpy(), samples[t].numpy(), atol=1e-12)
    assert (values[4] == 0).all()  # in no face
    assert vertex_uv_pairs(faces, face_uvs).tolist() == [[0, 0], [1, 1], [1, 4], [2, 2], [3, 3]]
    batched = vertex_values_from_uv_map(uv_map.expand(3, -1, -1, -1), uvs, face_uvs, faces, 5)
    assert batched.shape == (3, 5, 2) and torch.allclose(batched[2], values)
    m = uv_map.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: vertex_values_from_uv_map(x, uvs, face_uvs, faces, 5), (m,))


def test_ict_mesh_displaced_by_a_uv_map_has_no_cracks():
    """ICT's neutral (28,911 UVs for 26,719 vertices): displacing vertices by a UV map, seam vertices move
    once, so every edge shared by two faces stays shared; per-corner sampling (negative control) cracks."""
    from morphable.io import read_obj

    mesh = read_obj(require(ICT_FOLDER) / "generic_neutral_mesh.obj")
    V = len(mesh.vertices)
    assert len(mesh.uvs) == 28911 and V == 26719
    torch.manual_seed(0)
    uv_map = torch.randn(3, 64, 64, dtype=torch.float64)  # a rough displacement map, no seam continuity
    offsets = vertex_values_from_uv_map(uv_map, mesh.uvs, mesh.face_uvs, mesh.faces, V)
    assert offsets.shape == (V, 3)
    moved = torch.from_numpy(mesh.vertices) + offsets
    # per face corner: the position each face sees for its corner, from the per-vertex values
    flat_v = torch.from_numpy(mesh.faces).reshape(-1)
    corner_pos = moved[flat_v]  # (3F, 3)
    assert corner_spread(corner_pos, flat_v, V).max() == 0  # seam-duplicate corners agree exactly
    pairs = vertex_uv_pairs(mesh.faces, mesh.face_uvs)
    seam = torch.bincount(pairs[:, 0], minlength=V) > 1
    assert 300 < int(seam.sum()) < 5000
    # negative control: sampling the map at each corner's own UV moves most seam vertices apart
    per_corner = sample_texture(uv_map, torch.from_numpy(mesh.uvs)[torch.from_numpy(mesh.face_uvs)].reshape(-1, 2))
    naive = corner_spread(per_corner, flat_v, V)
    assert (naive[seam] > 1e-3).double().mean() > 0.9 and naive[~seam].max() < 1e-12


def corner_spread(values: torch.Tensor, vertex: torch.Tensor, n: int) -> torch.Tensor:
    """Per vertex, the largest difference between the values its corners carry: ``(3F, C) -> (V,)``."""
    index = vertex[:, None].expand_as(values)
    hi = torch.full((n, values.shape[1]), -math.inf, dtype=values.dtype).scatter_reduce(0, index, values, "amax")
    lo = torch.full((n, values.shape[1]), math.inf, dtype=values.dtype).scatter_reduce(0, index, values, "amin")
    return (hi - lo).amax(dim=1)


@pytest.mark.parametrize("band", [0, 1, 2])
def test_rendered_sphere_under_one_band_matches_the_analytic_irradiance(band):
    """A unit-albedo sphere lit by a single SH band: pixel = A_l L(n) / pi (Ramamoorthi-Hanrahan: each band
    of the radiance is scaled by A_l = pi, 2 pi / 3, pi / 4), with n the exact sphere normal at the pixel."""
    import trimesh

    from morphable.render import Camera, render_shaded

    m = trimesh.creation.icosphere(4, radius=0.8)
    cam = Camera.look_at((0.2, -0.3, 3.0), fov_deg=40, width=64, height=64)
    rng = np.random.default_rng(band)
    coefficients = rng.normal(size=(2 * band + 1, 3))
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[band * band:(band + 1) ** 2] = torch.from_numpy(coefficients)
    image, coverage = render_shaded(torch.from_numpy(m.vertices), m.faces, cam, sh, antialias=False)
    # exact normals from ray-sphere intersections, in the camera frame
    rays = cam.rays().numpy()
    centre = cam.t.numpy()  # the sphere's centre in camera coordinates
    a, b, c = (rays ** 2).sum(-1), -2 * rays @ centre, centre @ centre - 0.8 ** 2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    n = (t[..., None] * rays - centre) / 0.8
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    c0, c1, c2, c3, c4 = 0.282095, 0.488603, 1.092548, 0.315392, 0.546274
    basis = {0: [c0 + 0 * x], 1: [c1 * y, c1 * z, c1 * x],
             2: [c2 * x * y, c2 * y * z, c3 * (3 * z * z - 1), c2 * x * z, c4 * (x * x - y * y)]}[band]
    radiance = sum(Y[..., None] * coefficients[k] for k, Y in enumerate(basis))
    expected = [math.pi, 2 * math.pi / 3, math.pi / 4][band] * radiance / math.pi
    inner = (disc > 0) & (-(n * rays).sum(-1) / np.linalg.norm(rays, axis=-1) > 0.3)
    assert inner.sum() > 1000 and coverage.numpy()[inner].min() == 1
    error = np.abs(image.numpy()[inner] - expected[inner]).max()
    assert error < 0.01 * np.abs(expected[inner]).max()
    if band > 0:  # negative control: the wrong convolution factor is far off
        assert np.abs(image.numpy()[inner] * math.pi / [math.pi, 2 * math.pi / 3, math.pi / 4][band]
                      - expected[inner]).max() > 0.1 * np.abs(expected[inner]).max()


def test_render_shaded_texture_gradients():
    """A textured quad: image gradients w.r.t. texture, SH light and vertex positions (soft edges) match
    finite differences in float64; a batch of two renders each mesh as one render would."""
    from morphable.render import Camera, render_shaded

    V = torch.tensor([[-0.7, -0.5, 0.1], [0.6, -0.6, -0.2], [0.6, 0.5, 0.0], [-0.5, 0.6, 0.2]], dtype=torch.float64)
    F = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[0.1, 0.1], [0.9, 0.15], [0.85, 0.9], [0.12, 0.8]])
    cam = Camera.look_at((0.0, 0.0, 3.0), fov_deg=30, width=9, height=8)
    torch.manual_seed(1)
    texture = torch.rand(3, 5, 6, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(27, dtype=torch.float64, requires_grad=True)
    v = V.clone().requires_grad_()

    def render(t, s, x):
        return render_shaded(x, F, cam, s, texture=t, uvs=uvs, face_uvs=F)[0]

    assert torch.autograd.gradcheck(render, (texture, sh, v), fast_mode=True)
    batch = torch.stack([V, V * 0.8])
    both, mask = render_shaded(batch, F, cam, sh.detach().expand(2, 27), texture=texture.detach().expand(2, -1, -1, -1),
                               uvs=uvs, face_uvs=F)
    for k in range(2):
        one, one_mask = render_shaded(batch[k], F, cam, sh.detach(), texture=texture.detach(), uvs=uvs, face_uvs=F)
        torch.testing.assert_close(both[k], one)
        torch.testing.assert_close(mask[k], one_mask)


def test_render_shaded_mixes_a_texture_with_per_vertex_albedo_and_srgb_matches_numpy():
    """Under a white sky a quad whose first triangle is textured and second coloured per vertex shows the
    texture on the first and the vertex colour on the second; ``to_srgb`` equals the numpy transfer function."""
    from morphable.data.albedo import linear_to_srgb
    from morphable.render import Camera, render_shaded
    from morphable.render.shading import to_srgb

    V = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]], dtype=torch.float64)
    F = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cam = Camera.look_at((0.0, 0.0, 4.0), fov_deg=30, width=16, height=16)
    sky = torch.zeros(9, 3, dtype=torch.float64)
    sky[0] = 2 * math.sqrt(math.pi)
    texture = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)[:, None, None].expand(3, 4, 4)
    colour = torch.tensor([0.9, 0.1, 0.3], dtype=torch.float64).expand(4, 3)
    image, mask = render_shaded(V, F, cam, sky, albedo=colour, texture=texture, uvs=uvs, face_uvs=F,
                                textured=np.array([True, False]), antialias=False)
    from morphable.render.raster import rasterize

    face = rasterize(V, F, cam).face_index
    torch.testing.assert_close(image[face == 0], texture[:, 0, 0].expand(int((face == 0).sum()), 3))
    torch.testing.assert_close(image[face == 1], colour[:1].expand(int((face == 1).sum()), 3))
    with pytest.raises(MorphableError, match="untextured need a per-vertex albedo"):
        render_shaded(V, F, cam, sky, texture=texture, uvs=uvs, face_uvs=F, textured=np.array([True, False]))
    c = torch.linspace(-0.1, 1.1, 241, dtype=torch.float64)
    np.testing.assert_allclose(to_srgb(c).numpy(), linear_to_srgb(c.numpy()), atol=1e-12)
