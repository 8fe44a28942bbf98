"""Differentiable rasteriser: a naive per-pixel ray-casting loop (perspective and orthographic), batch
invariance, float64 finite differences of depth, barycentrics, interpolation and silhouette anti-aliasing,
ICT landmark projection under a rotated camera."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import ICT_FOLDER, require
from morphable.render import (Camera, antialias, backproject, edge_neighbours, interpolate, rasterize,
                              render_shaded)


def random_scene(seed: int, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random triangles around the origin (overlapping, interpenetrating)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.6, 0.6, (n, 1, 3))
    V = (centres + rng.uniform(-0.8, 0.8, (n, 3, 3))).reshape(-1, 3)
    return V, np.arange(3 * n).reshape(n, 3)


def naive_loop(V: np.ndarray, F: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, per triangle: Moeller-Trumbore in the camera frame (rays from the centre, or parallel
    to +z for an orthographic camera); nearest hit. Returns face index, barycentrics, depth."""
    Xc = V @ cam.R.numpy().T + cam.t.numpy()
    index = np.full((cam.height, cam.width), -1)
    bary = np.zeros((cam.height, cam.width, 3))
    depth = np.zeros((cam.height, cam.width))
    for i in range(cam.height):
        for j in range(cam.width):
            x, y = (j - cam.cx) / cam.fx, (i - cam.cy) / cam.fy
            origin, d = (np.array([x, y, 0.0]), np.array([0, 0, 1.0])) if cam.orthographic else \
                (np.zeros(3), np.array([x, y, 1.0]))
            best = np.inf
            for f, (a, b, c) in enumerate(Xc[F]):
                e1, e2 = b - a, c - a
                p = np.cross(d, e2)
                det = e1 @ p
                if abs(det) < 1e-14:
                    continue
                s = origin - a
                u = (s @ p) / det
                q = np.cross(s, e1)
                v = (d @ q) / det
                t = (e2 @ q) / det
                if u >= 0 and v >= 0 and u + v <= 1 and t > 0 and t < best:
                    best, index[i, j], bary[i, j], depth[i, j] = t, f, (1 - u - v, u, v), t
    return index, bary, depth


@pytest.mark.parametrize("orthographic", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_rasterize_equals_a_naive_loop(seed, orthographic):
    V, F = random_scene(seed, 20)
    cam = Camera.look_at((0.4, -0.3, 3.0), (0.0, 0.1, 0.0), fov_deg=40, width=23, height=19,
                         ortho_height=2.4 if orthographic else None)
    r = rasterize(V, F, cam)
    index, bary, depth = naive_loop(V, F, cam)
    hit = index >= 0
    assert 100 < hit.sum() < hit.size and len(np.unique(index[hit])) >= 10
    np.testing.assert_array_equal(r.face_index.numpy(), index)
    np.testing.assert_allclose(r.bary.numpy(), bary, atol=1e-10)
    np.testing.assert_allclose(r.depth.numpy(), depth, atol=1e-10)
    points, _ = backproject(r.depth, cam, world=True)
    on_surface = (r.bary.numpy()[hit][..., None] * V[F[index[hit]]]).sum(1)
    np.testing.assert_allclose(points.numpy(), on_surface, atol=1e-10)
    # negative control: the other projection draws a different picture
    other = Camera.look_at((0.4, -0.3, 3.0), (0.0, 0.1, 0.0), fov_deg=40, width=23, height=19,
                           ortho_height=None if orthographic else 2.4)
    assert (rasterize(V, F, other).face_index.numpy() != index).mean() > 0.1


def test_batch_equals_one_mesh_at_a_time():
    V, F = random_scene(2, 20)
    rng = np.random.default_rng(5)
    batch = torch.from_numpy(np.stack([V, V * 0.9 + 0.05, V + rng.normal(0, 0.05, V.shape)]))
    cams = [Camera.look_at((0.3 * k, 0.2, 3.0 - 0.2 * k), fov_deg=35, width=21, height=17) for k in range(3)]
    for cameras in (cams, cams[0]):
        r = rasterize(batch, F, cameras)
        assert r.face_index.shape == (3, 17, 21) and r.bary.shape == (3, 17, 21, 3)
        for k in range(3):
            one = rasterize(batch[k], F, cameras[k] if isinstance(cameras, list) else cameras)
            assert torch.equal(r.face_index[k], one.face_index)
            for name in ("depth", "bary", "normals"):
                torch.testing.assert_close(getattr(r, name)[k], getattr(one, name), rtol=0, atol=1e-12)
    colours = torch.rand(3, len(V), 2, dtype=torch.float64)
    r = rasterize(batch, F, cams)
    both = interpolate(colours, F, r.face_index, r.bary)
    for k in range(3):
        torch.testing.assert_close(both[k], interpolate(colours[k], F, r.face_index[k], r.bary[k]))
    assert (both[0] != both[1]).any()


@pytest.mark.parametrize("orthographic", [False, True])
def test_depth_barycentrics_and_interpolation_match_finite_differences(orthographic):
    V, F = random_scene(3, 6)
    cams = [Camera.look_at((0.3, 0.1 * k, 3.0), fov_deg=40, width=9, height=8,
                           ortho_height=2.5 if orthographic else None) for k in range(2)]
    verts = torch.from_numpy(np.stack([V, V * 1.1])).requires_grad_()
    colours = torch.rand(2, len(V), 2, dtype=torch.float64, requires_grad=True)
    assert rasterize(verts.detach(), F, cams).mask.sum() > 10

    def maps(v: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r = rasterize(v, F, cams)
        return r.depth, r.bary, r.normals, interpolate(c, F, r.face_index, r.bary)

    assert torch.autograd.gradcheck(maps, (verts, colours), fast_mode=True)


def quad_scene(orthographic: bool = False) -> tuple[torch.Tensor, np.ndarray, Camera]:
    """Two triangles of a tilted quadrilateral covering part of a 12 x 10 image (float64)."""
    V = torch.tensor([[-0.71, -0.52, 0.1], [0.63, -0.61, -0.2], [0.58, 0.49, 0.05], [-0.55, 0.66, 0.25]],
                     dtype=torch.float64)
    cam = Camera.look_at((0.05, 0.02, 3.0), fov_deg=30, width=12, height=10,
                         ortho_height=1.6 if orthographic else None)
    return V, np.array([[0, 1, 2], [0, 2, 3]]), cam


@pytest.mark.parametrize("orthographic", [False, True])
def test_antialias_matches_finite_differences_and_hard_edges_have_none(orthographic):
    V, F, cam = quad_scene(orthographic)
    torch.manual_seed(0)
    albedo = torch.rand(4, 3, dtype=torch.float64)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0], sh[2] = 2 * math.sqrt(math.pi), -1.0
    weights = torch.rand(10, 12, 3, dtype=torch.float64)

    def loss(v: torch.Tensor, soft: bool) -> torch.Tensor:
        image, _ = render_shaded(v, F, cam, sh, albedo=albedo, background=torch.tensor([0.2, 0.5, 0.9]),
                                 antialias=soft)
        return (image * weights).sum()

    v = V.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: render_shaded(x, F, cam, sh, albedo=albedo)[0], (v,))
    assert torch.autograd.gradcheck(lambda x: render_shaded(x, F, cam, sh, albedo=albedo)[1], (v,))
    # a flat, unlit quad: only its outline depends on the vertices
    flat = torch.zeros(9, 3, dtype=torch.float64)
    flat[0] = 2 * math.sqrt(math.pi)

    def coverage(x: torch.Tensor, soft: bool) -> torch.Tensor:
        return (render_shaded(x, F, cam, flat, antialias=soft)[1] * weights[..., 0]).sum()

    grad_soft, = torch.autograd.grad(coverage(v, True), v)
    assert (grad_soft[:, :2].abs().sum(dim=1) > 1e-3).all()  # every corner moves the soft outline
    assert not coverage(v, False).requires_grad  # negative control: the hard silhouette passes nothing
    step = 1e-6
    for corner in range(4):
        for axis in range(2):
            e = torch.zeros_like(V)
            e[corner, axis] = step
            fd = (coverage(V + e, True) - coverage(V - e, True)) / (2 * step)
            assert abs(float(fd) - float(grad_soft[corner, axis])) < 1e-6
            assert coverage(V + e, False) == coverage(V - e, False)  # and the hard one has no slope
    assert float(loss(V, True)) != float(loss(V, False))


def test_soft_coverage_measures_the_projected_area():
    """Summed soft coverage of a large polygon is its screen area (to a fraction of a pixel per row of
    outline), and its gradient is the area's (shoelace) gradient; the hard mask is off by more."""
    V, F, cam = quad_scene()
    cam = Camera.look_at((0.05, 0.02, 3.0), fov_deg=30, width=96, height=80)
    flat = torch.zeros(9, 3, dtype=torch.float64)
    flat[0] = 2 * math.sqrt(math.pi)
    v = V.clone().requires_grad_()
    soft = render_shaded(v, F, cam, flat)[1].sum()
    hard = render_shaded(v, F, cam, flat, antialias=False)[1].sum()

    def area(x: torch.Tensor) -> torch.Tensor:
        uv = cam.project(cam.world_to_camera(x))
        return 0.5 * (uv[:, 0] * uv.roll(-1, 0)[:, 1] - uv.roll(-1, 0)[:, 0] * uv[:, 1]).sum().abs()

    true_area = area(v.detach())
    assert abs(float(soft.detach() - true_area)) < 0.2 * abs(float(hard - true_area)) + 1.0
    grad, = torch.autograd.grad(soft, v)
    true_grad, = torch.autograd.grad(area(v), v)
    cosine = torch.nn.functional.cosine_similarity(grad.reshape(1, -1), true_grad.reshape(1, -1))
    assert float(cosine) > 0.99
    np.testing.assert_allclose(grad.norm().item(), true_grad.norm().item(), rtol=0.05)


def test_edge_neighbours_and_antialias_of_an_interior_edge():
    V, F, cam = quad_scene()
    nb = edge_neighbours(F)
    # face 0 = (0, 1, 2): edge opposite corner 1 is (2, 0), shared with face 1 = (0, 2, 3) opposite its corner 2
    assert nb.tolist() == [[-1, 1, -1], [-1, -1, 0]]
    r = rasterize(V, F, cam)
    ids = torch.where(r.mask, r.face_index.double(), -1.0)[..., None]
    blended = antialias(ids, r, V, F, cam, neighbours=nb)
    inside = r.mask & torch.roll(r.mask, 1, 0) & torch.roll(r.mask, -1, 0) & torch.roll(r.mask, 1, 1) \
        & torch.roll(r.mask, -1, 1)
    assert torch.equal(blended[inside], ids[inside])  # the diagonal between the two faces is no silhouette
    assert (blended != ids).any()


def ict_skin():
    from morphable.data.linear import ICT_SKIN_VERTICES
    from morphable.io import read_obj

    mesh = read_obj(require(ICT_FOLDER) / "generic_neutral_mesh.obj")
    landmarks = json.loads((ICT_FOLDER / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    keep = (mesh.faces < ICT_SKIN_VERTICES).all(axis=1)
    return mesh.vertices[:ICT_SKIN_VERTICES], mesh.faces[keep], np.array(landmarks)


def drawn_vertex_pixels(r, F: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """For each vertex, the ``(u, v)`` of the pixel whose visible triangle contains it with the largest
    barycentric weight (NaN where no pixel's triangle contains it)."""
    fi, bary = r.face_index.numpy(), r.bary.numpy()
    out = np.full((len(vertices), 2), np.nan)
    for n, vertex in enumerate(vertices):
        corner = F[np.maximum(fi, 0)] == vertex  # (H, W, 3)
        weight = np.where((fi >= 0)[..., None] & corner, bary, -1).max(axis=-1)
        if weight.max() > 0:
            i, j = np.unravel_index(np.argmax(weight), weight.shape)
            out[n] = j, i
    return out


def test_ict_landmarks_project_where_the_rasteriser_draws_them():
    V, F, landmarks = ict_skin()
    centre = V.mean(axis=0)
    front = Camera.look_at(centre + [0.0, 0.0, 60.0], centre, fov_deg=28, width=320, height=320)
    yaw = math.radians(25)
    eye = centre + 60.0 * np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    turned = Camera.look_at(eye, centre, fov_deg=28, width=320, height=320)
    projected = {}
    for name, cam in (("front", front), ("turned", turned)):
        r = rasterize(torch.from_numpy(V).float(), F, cam)
        drawn = drawn_vertex_pixels(r, F, landmarks)
        uv = cam.project(cam.world_to_camera(torch.from_numpy(V[landmarks]))).numpy()
        seen = ~np.isnan(drawn[:, 0])  # hidden: eyelids curling into the eye holes, inner lips, far jaw
        assert seen.sum() >= (55 if name == "front" else 50)
        error = np.linalg.norm(drawn[seen] - uv[seen], axis=1)
        assert error.max() <= 2.0 and np.median(error) <= 0.75
        projected[name] = (uv, drawn, seen)
    (uv0, _, _), (uv1, drawn1, seen1) = projected["front"], projected["turned"]
    # the rotated camera moves the landmarks as predicted (tens of pixels sideways)
    shift = uv1 - uv0
    assert np.abs(shift[:, 0]).mean() > 10
    assert np.median(np.linalg.norm(drawn1[seen1] - uv0[seen1], axis=1)) > 10  # negative control: unturned misses


def test_silhouette_alone_recovers_a_shift_of_the_ict_skin():
    """Fitting a translation to a target mask: the soft mask's gradients find the 4 mm / -3 mm shift
    (1.7 / -1.3 pixels) to 0.3 mm; the hard mask has no gradient at all (negative control)."""
    V, F, _ = ict_skin()
    verts = torch.from_numpy(V).float()
    centre = V.mean(axis=0)
    cam = Camera.look_at(centre + [0.0, 0.0, 60.0], centre, fov_deg=25, width=112, height=112)
    nb = edge_neighbours(F)
    white = torch.zeros(9, 3)
    white[0] = 2 * math.sqrt(math.pi)
    truth = torch.tensor([0.4, -0.3, 0.0])
    target = render_shaded(verts + truth, F, cam, white, neighbours=nb)[1]
    shift = torch.zeros(3, requires_grad=True)
    optimiser = torch.optim.Adam([shift], lr=0.05)
    for _ in range(40):
        loss = (render_shaded(verts + shift, F, cam, white, neighbours=nb)[1] - target).square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert torch.allclose(shift[:2].detach(), truth[:2], atol=0.03)
    hard = render_shaded(verts + shift.detach().requires_grad_(), F, cam, white, antialias=False)[1]
    assert not hard.requires_grad
