"""Rasteriser checks: analytic depth of a plane and a sphere, a naive ray-casting loop, back-projection."""

import numpy as np
import pytest
import torch
import trimesh

from morphable.errors import MorphableError
from morphable.mesh.render import Camera, backproject, depth_point_cloud, rasterize, vertex_normals


def world_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and world directions (H, W, 3) of the pixel rays, scaled so that camera z = 1."""
    d_cam = camera.rays().numpy()
    return camera.center.numpy(), d_cam @ camera.R.numpy()


def naive_raycast(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel loop: Moeller-Trumbore against every triangle, nearest hit. Returns depth, face index."""
    origin, dirs = world_rays(camera)
    tri = vertices[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    depth = np.zeros((camera.height, camera.width))
    index = np.full((camera.height, camera.width), -1)
    for i in range(camera.height):
        for j in range(camera.width):
            d = dirs[i, j]
            p = np.cross(d, e2)
            det = (e1 * p).sum(1)
            ok = np.abs(det) > 1e-15
            inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
            s = origin - tri[:, 0]
            u = (s * p).sum(1) * inv
            q = np.cross(s, e1)
            v = (q @ d) * inv
            t = (e2 * q).sum(1) * inv
            hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
            if hit.any():
                k = np.argmin(np.where(hit, t, np.inf))
                depth[i, j], index[i, j] = t[k], k
    return depth, index


def test_look_at_axes_and_projection():
    cam = Camera.look_at((1.0, 2.0, 3.0), (0.1, -0.2, 0.3), fov_deg=40, width=64, height=48)
    R = cam.R.numpy()
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1.0)
    target_cam = cam.world_to_camera(torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64))
    assert np.allclose(cam.project(target_cam).numpy(), [[31.5, 23.5]])
    assert np.allclose(cam.center.numpy(), [1.0, 2.0, 3.0])
    pts = torch.randn(10, 3, dtype=torch.float64)
    assert torch.allclose(cam.camera_to_world(cam.world_to_camera(pts)), pts)
    # world "up" appears up in the image (smaller row), +x to the right for a camera on +z
    front = Camera.look_at((0.0, 0.0, 3.0), width=32, height=32)
    uv = front.project(front.world_to_camera(torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)))
    assert uv[0, 1] < 15.5 and uv[1, 0] > 15.5


def test_plane_depth_matches_ray_intersection():
    verts = np.array([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    cam = Camera.look_at((0.4, -0.3, 2.5), (0.1, 0.1, 0.0), fov_deg=35, width=48, height=40)
    r = rasterize(verts, faces, cam)
    origin, dirs = world_rays(cam)
    t = -origin[2] / dirs[..., 2]  # camera z of the ray's hit with z = 0
    assert r.mask.all()
    np.testing.assert_allclose(r.depth.numpy(), t, rtol=1e-10)
    n_world = r.normals.numpy() @ cam.R.numpy()
    np.testing.assert_allclose(n_world, np.broadcast_to([0, 0, 1.0], n_world.shape), atol=1e-12)


def test_sphere_depth_and_normals_match_analytic():
    radius = 0.8
    m = trimesh.creation.icosphere(5, radius=radius)
    V, F = np.asarray(m.vertices), np.asarray(m.faces)
    cam = Camera.look_at((0.3, 0.4, 2.6), fov_deg=40, width=96, height=96)
    r = rasterize(V, F, cam)
    origin, dirs = world_rays(cam)
    # |o + t d| = radius, nearest root
    a = (dirs ** 2).sum(-1)
    b = 2 * (dirs @ origin)
    c = origin @ origin - radius ** 2
    disc = b ** 2 - 4 * a * c
    hit = disc > 0
    t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
    point = origin + t[..., None] * dirs
    normal = point / radius
    cos_inc = np.abs((normal * dirs).sum(-1)) / np.linalg.norm(dirs, axis=-1)
    tri = V[F]
    plane_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    gap = radius - np.abs((plane_n * tri[:, 0]).sum(1) / np.linalg.norm(plane_n, axis=1)).min()
    good = hit & (cos_inc > 0.5)
    mesh_depth = r.depth.numpy()
    assert r.mask.numpy()[good].all()
    assert not r.mask.numpy()[~hit].any()  # the mesh is inscribed in the sphere
    diff = mesh_depth[good] - t[good]  # z = t because the ray has camera z = 1
    assert diff.min() > -1e-9 and diff.max() < gap / 0.5 + 1e-9
    n_cam_true = normal @ cam.R.numpy().T
    dots = (r.normals.numpy()[good] * n_cam_true[good]).sum(-1)
    assert dots.min() > 0.9995
    norms = np.linalg.norm(r.normals.numpy()[r.mask.numpy()], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)


def test_rasterize_equals_naive_raycasting_with_occlusion():
    rng = np.random.default_rng(3)
    m = trimesh.creation.icosphere(2, radius=0.5)
    V1 = np.asarray(m.vertices) * (1 + 0.1 * rng.random((len(m.vertices), 1)))
    V2 = np.asarray(m.vertices) * 0.4 + [0.3, 0.2, 0.5]  # a second blob partly in front
    V = np.concatenate([V1, V2])
    F = np.concatenate([np.asarray(m.faces), np.asarray(m.faces) + len(V1)])
    cam = Camera.look_at((0.2, 0.1, 2.5), fov_deg=25, width=40, height=30)
    r = rasterize(V, F, cam)
    depth, index = naive_raycast(V, F, cam)
    mask = index >= 0
    assert mask.sum() > 400
    # random vertices: no pixel centre falls exactly on an edge, so coverage and visible faces are unique
    np.testing.assert_array_equal(r.face_index.numpy(), index)
    np.testing.assert_allclose(r.depth.numpy()[mask], depth[mask], rtol=1e-12)
    assert (r.depth.numpy()[~mask] == 0).all()
    assert (index[mask] >= len(m.faces)).any() and (index[mask] < len(m.faces)).any()
    lam = r.bary.numpy()[mask]
    np.testing.assert_allclose(lam.sum(1), 1.0, atol=1e-12)
    assert lam.min() > -1e-12
    # barycentric point = back-projected point
    surf = (lam[..., None] * V[F[index[mask]]]).sum(1)
    pts, _ = backproject(r.depth, cam)
    np.testing.assert_allclose(pts.numpy(), surf, atol=1e-12)
    # float32 input renders the same picture up to float32 precision
    r32 = rasterize(torch.tensor(V, dtype=torch.float32), torch.tensor(F), cam)
    assert (r32.face_index.numpy() == index).mean() > 0.999
    np.testing.assert_allclose(r32.depth.numpy()[mask], depth[mask], rtol=1e-6)


def test_small_budget_gives_same_image():
    m = trimesh.creation.icosphere(3, radius=0.7)
    cam = Camera.look_at((0.0, 0.3, 2.0), width=64, height=64)
    a = rasterize(m.vertices, m.faces, cam)
    b = rasterize(m.vertices, m.faces, cam, budget=64)
    assert torch.equal(a.face_index, b.face_index)
    assert torch.equal(a.depth, b.depth)


def test_backprojected_points_lie_on_mesh():
    igl = pytest.importorskip("igl")

    m = trimesh.creation.icosphere(4, radius=0.6)
    V, F = np.asarray(m.vertices) * [1.0, 1.3, 0.9], np.asarray(m.faces)
    cam = Camera.look_at((0.5, 0.2, 2.2), fov_deg=35, width=80, height=64)
    r = rasterize(V, F, cam)
    points, pixels = backproject(r.depth, cam)
    assert len(points) == int(r.mask.sum())
    sq, tri, _ = igl.point_mesh_squared_distance(points.numpy(), V, F)
    assert np.sqrt(sq).max() < 1e-10
    cam_points, _ = backproject(r.depth, cam, world=False)
    np.testing.assert_allclose(cam_points[:, 2].numpy(), r.depth[pixels[:, 0], pixels[:, 1]].numpy())

    pts, nrm = depth_point_cloud(V, F, cam, n_points=500, seed=7)
    assert pts.shape == (500, 3) and nrm.shape == (500, 3)
    assert len(np.unique(pts.numpy(), axis=0)) == 500
    sq, tri, _ = igl.point_mesh_squared_distance(pts.numpy(), V, F)
    assert np.sqrt(sq).max() < 1e-10
    np.testing.assert_allclose(np.linalg.norm(nrm.numpy(), axis=1), 1.0, atol=1e-12)
    # visible surface faces the camera; interpolated normals agree with the hit face's normal
    assert (((cam.center.numpy() - pts.numpy()) * nrm.numpy()).sum(1) > 0).all()
    tri_v = V[F[tri]]
    face_n = np.cross(tri_v[:, 1] - tri_v[:, 0], tri_v[:, 2] - tri_v[:, 0])
    face_n /= np.linalg.norm(face_n, axis=1, keepdims=True)
    assert (face_n * nrm.numpy()).sum(1).min() > 0.99
    again, _ = depth_point_cloud(V, F, cam, n_points=500, seed=7)
    other, _ = depth_point_cloud(V, F, cam, n_points=500, seed=8)
    assert torch.equal(pts, again) and not torch.equal(pts, other)
    with pytest.raises(MorphableError, match="only"):
        depth_point_cloud(V, F, cam, n_points=80 * 64)


def test_vertex_normals_area_weighted_reference():
    rng = np.random.default_rng(0)
    m = trimesh.creation.icosphere(1)
    V = np.asarray(m.vertices) + 0.05 * rng.standard_normal((len(m.vertices), 3))
    F = np.asarray(m.faces)
    expected = np.zeros_like(V)
    for f in F:  # naive loop: sum of (unnormalised) face cross products
        expected[f] += np.cross(V[f[1]] - V[f[0]], V[f[2]] - V[f[0]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vertex_normals(V, F).numpy(), expected, atol=1e-12)
