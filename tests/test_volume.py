"""Volume renderer checks: the Laplace density against its piecewise formula, volume-rendered maps of analytic
SDFs against rasterised meshes (with a flipped-axis negative control), pixel conventions, the fast sampler
against the error-bounded reference (maps and parameter gradients; a 4-sample march must fail), chunking."""

import numpy as np
import pytest
import torch
import trimesh

from morphable.errors import MorphableError
from morphable.render import (Camera, ErrorBoundedSampler, FastSampler, LaplaceDensity, fibonacci_views, laplace_density, rasterize,
                              render_rays, render_views)

CENTRE = torch.tensor([0.12, -0.15, 0.08], dtype=torch.float64)
SMALL_CENTRE = torch.tensor([-0.25, 0.3, 0.2], dtype=torch.float64)


def sphere_sdf(points: torch.Tensor) -> torch.Tensor:
    """Off-centre sphere of radius 0.5."""
    return (points - CENTRE.to(points)).norm(dim=-1) - 0.5


def union_sdf(points: torch.Tensor) -> torch.Tensor:
    """Asymmetric shape: the union of the off-centre sphere and a smaller sphere (radius 0.3) beside it."""
    return torch.minimum(sphere_sdf(points), (points - SMALL_CENTRE.to(points)).norm(dim=-1) - 0.3)


def sphere_mesh() -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.icosphere(5, radius=0.5)
    return np.asarray(m.vertices) + CENTRE.numpy(), np.asarray(m.faces)


def union_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping icospheres: the z-buffer keeps the nearer one, which is the union's visible surface."""
    v1, f1 = sphere_mesh()
    small = trimesh.creation.icosphere(5, radius=0.3)
    v2 = np.asarray(small.vertices) + SMALL_CENTRE.numpy()
    return np.concatenate([v1, v2]), np.concatenate([f1, np.asarray(small.faces) + len(v1)])


def cameras(n: int = 2, size: int = 24) -> list[Camera]:
    return fibonacci_views(n, 2.6, fov_deg=46, width=size, height=size)


def flipped(camera: Camera) -> Camera:
    """The same camera with its y axis negated (a left-handed frame: images and normals flip vertically)."""
    R = camera.R.clone()
    R[1] = -R[1]
    return Camera(camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height, R, -R @ camera.center)


def agreement(vol_normals, vol_depth, vol_opacity, raster, camera) -> tuple[float, float, float]:
    """Mean cosine and mean depth error / camera distance on the raster mask, mean opacity on the mask."""
    m = raster.mask
    vol_normals, vol_depth, vol_opacity = vol_normals.detach(), vol_depth.detach(), vol_opacity.detach()
    cos = (vol_normals[m].double() * raster.normals[m]).sum(-1).mean()
    err = (vol_depth[m].double() - raster.depth[m]).abs().mean() / camera.center.norm()
    return float(cos), float(err), float(vol_opacity[m].double().mean())


def agrees(stats: tuple[float, float, float]) -> bool:
    cos, err, opacity = stats
    return cos >= 0.99 and err <= 0.005 and opacity >= 0.99


def test_laplace_density_matches_piecewise_formula_and_learns_beta():
    density = LaplaceDensity(beta_init=1e-2, beta_min=1e-4)
    assert float(density.beta.detach()) == pytest.approx(1e-2)
    s = torch.linspace(-0.05, 0.05, 41, dtype=torch.float64)
    beta = 1e-2
    # thesis eq. 3.6 evaluated at -s: the density is high inside (s < 0), low outside
    expected = torch.where(-s <= 0, torch.exp(-s / beta) / (2 * beta), (1 - 0.5 * torch.exp(s / beta)) / beta)
    torch.testing.assert_close(density(s), expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert float(density(torch.tensor(-1.0))) == pytest.approx(1 / beta) and float(density(torch.tensor(1.0))) < 1e-3
    density(torch.tensor([0.003], dtype=torch.float64)).sum().backward()
    h, x = 1e-7, torch.tensor(0.003, dtype=torch.float64)
    fd = (float(laplace_density(x, 1e-2 + h)) - float(laplace_density(x, 1e-2 - h))) / (2 * h)
    assert float(density.beta_param.grad) == pytest.approx(fd, rel=1e-4)
    with pytest.raises(MorphableError):
        LaplaceDensity(beta_init=1e-5, beta_min=1e-4)


@pytest.mark.parametrize("sampler", ["fast", "error_bounded"])
@pytest.mark.parametrize("shape", ["sphere", "union"])
def test_volume_maps_match_rasterised_mesh(sampler, shape):
    sdf, (V, F) = (sphere_sdf, sphere_mesh()) if shape == "sphere" else (union_sdf, union_mesh())
    cams = cameras()
    density = LaplaceDensity()
    out = render_views(sdf, cams, density, sampler=sampler, create_graph=False, dtype=torch.float64)
    wrong = render_views(sdf, [flipped(c) for c in cams], density, sampler=sampler, create_graph=False,
                         dtype=torch.float64)
    assert out.normals.shape == (1, 2, 24, 24, 3) and out.depth.shape == out.opacity.shape == (1, 2, 24, 24)
    for v, cam in enumerate(cams):
        raster = rasterize(V, F, cam)
        stats = agreement(out.normals[0, v], out.depth[0, v], out.opacity[0, v], raster, cam)
        assert agrees(stats), stats
        assert float(out.opacity[0, v][~raster.mask].mean()) < 0.05
        assert not agrees(agreement(wrong.normals[0, v], wrong.depth[0, v], wrong.opacity[0, v], raster, cam))


def test_projected_point_lands_where_both_renderers_draw_it():
    """A small marker sphere: its projected centre is the centroid of the raster mask and of the volume opacity."""
    radius = 0.08

    def marker(points):
        return (points - SMALL_CENTRE.to(points)).norm(dim=-1) - radius

    m = trimesh.creation.icosphere(4, radius=radius)
    V, F = np.asarray(m.vertices) + SMALL_CENTRE.numpy(), np.asarray(m.faces)
    cam = Camera.look_at((0.7, 0.4, 2.4), (0.05, -0.1, 0.0), fov_deg=40, width=64, height=48)
    u, v = cam.project(cam.world_to_camera(SMALL_CENTRE[None]))[0].tolist()
    rows, cols = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")

    def centroid(weight):
        weight = weight.double()
        return float((weight * cols).sum() / weight.sum()), float((weight * rows).sum() / weight.sum())

    raster = rasterize(V, F, cam).mask
    volume = render_views(marker, [cam], LaplaceDensity(), create_graph=False, dtype=torch.float64).opacity[0, 0]
    for weight in (raster, volume):
        cu, cv = centroid(weight)
        assert abs(cu - u) < 0.3 and abs(cv - v) < 0.3, (cu, cv, u, v)
    cu, cv = centroid(render_views(marker, [flipped(cam)], LaplaceDensity(), create_graph=False).opacity[0, 0])
    assert abs(cv - v) > 3


class TinySdf(torch.nn.Module):
    """A bumpy off-centre sphere: ``|x - c| - 0.5 + 0.05 tanh(MLP(x))`` (near-Lipschitz, smooth)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Softplus(beta=10), torch.nn.Linear(16, 1))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return sphere_sdf(points) + 0.05 * torch.tanh(self.mlp(points * 3).squeeze(-1))


def _maps_and_gradient(net: TinySdf, density: LaplaceDensity, **options) -> tuple[torch.Tensor, torch.Tensor]:
    net.zero_grad()
    out = render_views(net, cameras(2, 16), density, stride=2, **options)
    target = torch.nn.functional.normalize(torch.ones(3), dim=0)
    (out.normals - target * out.opacity[..., None]).abs().sum().backward()
    grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    return out.normals.detach(), grad


def _cosines(a, b, ga, gb) -> tuple[float, float]:
    mask = b.norm(dim=-1) > 0.5  # where the reference sees the surface
    cos_maps = float(torch.nn.functional.cosine_similarity(a[mask], b[mask], dim=-1).mean())
    return cos_maps, float(torch.nn.functional.cosine_similarity(ga, gb, dim=0))


def test_fast_sampler_agrees_with_error_bounded_reference_and_a_4_sample_march_does_not():
    net, density = TinySdf(), LaplaceDensity()
    ref_maps, ref_grad = _maps_and_gradient(net, density, sampler="error_bounded")
    fast_maps, fast_grad = _maps_and_gradient(net, density, sampler="fast")
    cos_maps, cos_grad = _cosines(fast_maps, ref_maps, fast_grad, ref_grad)
    assert cos_maps >= 0.995 and cos_grad >= 0.995, (cos_maps, cos_grad)
    assert ref_grad.norm() > 0 and density.beta_param.grad is not None and float(density.beta_param.grad) != 0
    crude_maps, crude_grad = _maps_and_gradient(net, density, sampler="fast",
                                                fast=FastSampler(n_coarse=4, n_fine=4, n_refine=0, window=1e9))
    crude = _cosines(crude_maps, ref_maps, crude_grad, ref_grad)
    assert min(crude) < 0.995, crude


def test_chunks_pixels_and_frames_are_consistent():
    cams = cameras(2, 12)
    density = LaplaceDensity()
    whole = render_views(union_sdf, cams, density, batch_size=2, create_graph=False, dtype=torch.float64)
    chunked = render_views(union_sdf, cams, density, batch_size=2, chunk=17, create_graph=False,
                           dtype=torch.float64)
    torch.testing.assert_close(chunked.normals, whole.normals)
    torch.testing.assert_close(chunked.depth, whole.depth)
    every_ray = render_views(union_sdf, cams, density, batch_size=2, skip=None, create_graph=False,
                             dtype=torch.float64)  # skipped background rays change nothing
    torch.testing.assert_close(every_ray.normals, whole.normals, atol=1e-6, rtol=0)
    torch.testing.assert_close(every_ray.opacity, whole.opacity, atol=1e-6, rtol=0)
    assert (whole.opacity == 0).any() and (whole.opacity > 0.99).any()
    strided = render_views(union_sdf, cams, density, stride=3, offset=(1, 2), create_graph=False,
                           dtype=torch.float64)
    torch.testing.assert_close(strided.depth[0], whole.depth[0, :, 1::3, 2::3])
    listed = render_views(union_sdf, [cams, cams[::-1]], density, pixels=torch.tensor([[5, 7], [0, 0]]),
                          frame="world", create_graph=False, dtype=torch.float64)
    assert listed.normals.shape == (2, 2, 2, 3)
    world = torch.einsum("ji,j->i", cams[1].R, whole.normals[0, 1, 5, 7])  # n = R^T n_c
    torch.testing.assert_close(listed.normals[1, 0, 0], world)


def test_render_rays_keeps_samples_finite_and_rejects_bad_input():
    origins = torch.tensor([[[0.0, 0.0, 3.0], [0.0, 0.0, 3.0]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]])  # one ray hits, one misses the bound
    seen = []

    def recording(points):
        seen.append(points.detach())
        return sphere_sdf(points)

    for sampler in ("fast", "error_bounded"):
        out = render_rays(recording, origins, directions, LaplaceDensity(), sampler=sampler, bound=1.0,
                          create_graph=False)
        assert torch.isfinite(out.depth).all() and torch.isfinite(out.normals).all()
        assert float(out.opacity[0, 0]) > 0.99 and float(out.opacity[0, 1]) < 0.01
        # the hit ray enters the sphere at distance 3 - (0.5 + 0.08) about the centre's z offset
        expected = 3.0 - float(CENTRE[2]) - np.sqrt(0.25 - float(CENTRE[:2].norm()) ** 2)
        assert float(out.depth[0, 0]) == pytest.approx(expected, abs=2e-3)
    assert all(torch.isfinite(p).all() for p in seen)
    with pytest.raises(MorphableError, match="sampler"):
        render_rays(sphere_sdf, origins, directions, LaplaceDensity(), sampler="uniform")
    with pytest.raises(MorphableError, match="B, R, 3"):
        render_rays(sphere_sdf, origins[0], directions[0], LaplaceDensity())
    with pytest.raises(MorphableError, match="B, N"):
        render_rays(lambda p: p.sum(-1, keepdim=True), origins, directions, LaplaceDensity())


def test_error_bounded_sampler_concentrates_samples_at_the_surface():
    """With a tiny beta the reference's final samples sit within a few beta of the first hit."""
    origins = torch.tensor([[[0.0, 0.0, 3.0]]], dtype=torch.float64)
    directions = torch.tensor([[[0.0, 0.0, -1.0]]], dtype=torch.float64)
    sdf = lambda p: p.norm(dim=-1) - 0.5  # noqa: E731 - first hit at t = 2.5
    seen = []

    def recording(points):
        seen.append(points.detach())
        return sdf(points)

    out = render_rays(recording, origins, directions, LaplaceDensity(1e-3), sampler="error_bounded",
                      error_bounded=ErrorBoundedSampler(), create_graph=False)
    final_t = 3.0 - seen[-1][0, :, 2]
    assert (final_t - 2.5).abs().median() < 0.01
    assert float(out.depth[0, 0]) == pytest.approx(2.5, abs=2e-3)
