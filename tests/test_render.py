"""Camera and rasteriser checks: analytic depth of a plane and a sphere, a naive ray-casting loop,
back-projection, an independent OpenGL-convention pipeline, Fibonacci views, gradients."""

import numpy as np
import pytest
import torch
import trimesh

from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals
from morphable.render import (Camera, backproject, depth_map, depth_point_cloud, fibonacci_views, interpolate,
                              intrinsics_from_opengl_projection, mask, normal_map, opencv_from_opengl_pose,
                              opengl_from_opencv_pose, opengl_projection, rasterize)


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
    np.testing.assert_allclose(r32.depth.numpy()[mask], depth[mask], rtol=3e-6)  # float32 screen coordinates


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


@pytest.mark.parametrize("as_tensor", [False, True])
def test_vertex_normals_area_weighted_reference(as_tensor):
    rng = np.random.default_rng(0)
    m = trimesh.creation.icosphere(1)
    V = np.asarray(m.vertices) + 0.05 * rng.standard_normal((len(m.vertices), 3))
    F = np.asarray(m.faces)
    expected = np.zeros_like(V)
    for f in F:  # naive loop: sum of (unnormalised) face cross products
        expected[f] += np.cross(V[f[1]] - V[f[0]], V[f[2]] - V[f[0]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    normals = vertex_normals(torch.from_numpy(V), torch.from_numpy(F)) if as_tensor else vertex_normals(V, F)
    assert isinstance(normals, torch.Tensor) == as_tensor
    np.testing.assert_allclose(np.asarray(normals), expected, atol=1e-12)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A random rigid world-to-camera ``(4, 4)`` matrix."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q * np.sign(np.linalg.det(q)), rng.standard_normal(3)
    return pose


def test_opengl_pose_round_trip_and_axes():
    rng = np.random.default_rng(1)
    cv = np.stack([random_pose(rng) for _ in range(3)])
    gl = opengl_from_opencv_pose(cv).numpy()
    np.testing.assert_array_equal(opencv_from_opengl_pose(gl).numpy(), cv)
    points = np.c_[rng.standard_normal((5, 3)), np.ones(5)]
    x_cv, x_gl = points @ cv[0].T, points @ gl[0].T
    np.testing.assert_array_equal(x_gl[:, :3], x_cv[:, :3] * [1, -1, -1])  # x right, y up, looking down -z
    # camera-to-world matrices convert by the same axis flip on the other side: C_gl = inverse(M_gl)
    c2w_gl = opengl_from_opencv_pose(np.linalg.inv(cv), camera_to_world=True).numpy()
    np.testing.assert_allclose(c2w_gl, np.linalg.inv(gl), atol=1e-12)
    np.testing.assert_array_equal(opencv_from_opengl_pose(c2w_gl, camera_to_world=True).numpy(), np.linalg.inv(cv))


def test_opengl_projection_round_trip_and_depth_range():
    K = np.array([[70.0, 0.0, 29.3], [0.0, 64.0, 21.7], [0.0, 0.0, 1.0]])
    W, H, near, far = 64, 48, 0.1, 10.0
    P = opengl_projection(K, W, H, near, far).numpy()
    for scale in (1.0, 2.5):  # clip coordinates are homogeneous
        K_back, n_back, f_back = intrinsics_from_opengl_projection(scale * P, W, H)
        np.testing.assert_allclose(K_back.numpy(), K, rtol=1e-13)
        assert np.isclose(n_back, near, rtol=1e-12) and np.isclose(f_back, far, rtol=1e-12)
    # a camera point at depth z lands in window (u + 1/2, H - 1/2 - v) with z_ndc -1 at near, +1 at far
    xc = np.array([[0.3, -0.2, near], [-0.5, 0.4, far], [0.1, 0.1, 2.0]])
    uv = xc[:, :2] / xc[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    clip = np.c_[xc * [1, -1, -1], np.ones(3)] @ P.T
    ndc = clip[:, :3] / clip[:, 3:]
    np.testing.assert_allclose((ndc[:, 0] + 1) * W / 2, uv[:, 0] + 0.5, rtol=1e-12)
    np.testing.assert_allclose((ndc[:, 1] + 1) * H / 2, H - 0.5 - uv[:, 1], rtol=1e-12)
    np.testing.assert_allclose(ndc[:2, 2], [-1.0, 1.0], atol=1e-12)
    camera = Camera.from_matrices(K, random_pose(np.random.default_rng(2)), W, H)
    back = Camera.from_opengl(*camera.opengl(near, far), W, H)
    assert (back.fx, back.fy, back.width, back.height) == (camera.fx, camera.fy, W, H)
    assert np.allclose([back.cx, back.cy], [camera.cx, camera.cy], rtol=1e-13)
    assert torch.equal(back.pose, camera.pose) and torch.equal(camera.K, torch.from_numpy(K))
    orthographic = np.diag([1.0, 1.0, -0.2, 1.0])
    with pytest.raises(MorphableError, match="perspective"):
        intrinsics_from_opengl_projection(orthographic, W, H)
    with pytest.raises(MorphableError, match="near < far"):
        opengl_projection(K, W, H, 1.0, 0.5)


def opengl_face_ids(V: np.ndarray, F: np.ndarray, view: np.ndarray, projection: np.ndarray, width: int,
                    height: int) -> tuple[np.ndarray, np.ndarray]:
    """An OpenGL-convention pipeline written from the GL rules alone: ``clip = P V X``, perspective divide,
    viewport, pixel centres at ``+1/2`` with row 0 at the bottom, coverage by window-space barycentrics and
    a test on NDC depth (affine in window space). Returns the face id and NDC depth, ``(H, W)`` each."""
    clip = np.c_[V, np.ones(len(V))] @ (projection @ view).T
    ndc = clip[:, :3] / clip[:, 3:]
    win = np.stack([(ndc[:, 0] + 1) * width / 2, (ndc[:, 1] + 1) * height / 2], axis=1)
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    best, ids = np.full((height, width), np.inf), np.full((height, width), -1)
    for k, (a, b, c) in enumerate(F):
        if (clip[[a, b, c], 3] <= 0).any():
            continue
        (x0, y0), (x1, y1), (x2, y2) = win[a], win[b], win[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
        w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
        w2 = 1 - w0 - w1
        z = w0 * ndc[a, 2] + w1 * ndc[b, 2] + w2 * ndc[c, 2]
        closer = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < best)
        best[closer], ids[closer] = z[closer], k
    return ids, best


def off_centre_sphere() -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.icosphere(3, radius=0.45)
    bumps = 1 + 0.05 * np.random.default_rng(4).random((len(m.vertices), 1))
    return np.asarray(m.vertices) * bumps + [0.35, -0.2, 0.1], np.asarray(m.faces)


def chiral_tripod() -> tuple[np.ndarray, np.ndarray]:
    """Three bars of different lengths along +x, +y, +z from one corner: no mirror symmetry."""
    bars = []
    for axis, length in enumerate((0.9, 0.6, 0.35)):
        extents = np.full(3, 0.15)
        extents[axis] = length
        centre = np.zeros(3)
        centre[axis] = length / 2
        bars.append(trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(centre)))
    m = trimesh.util.concatenate(bars)
    return 1.4 * np.asarray(m.vertices), np.asarray(m.faces)


@pytest.mark.parametrize("scene", [off_centre_sphere, chiral_tripod])
def test_opengl_pipeline_sees_the_same_pixels(scene):
    V, F = scene()
    K = np.array([[70.0, 0.0, 29.3], [0.0, 64.0, 21.7], [0.0, 0.0, 1.0]])
    W, H, near, far = 64, 48, 0.1, 10.0
    camera = Camera.from_matrices(K, Camera.look_at((0.6, 0.45, 2.4), (0.15, 0.05, 0.0)).pose, W, H)
    r = rasterize(V, F, camera)
    view, projection = (m.numpy() for m in camera.opengl(near, far))
    ids_gl, ndc_z = opengl_face_ids(V, F, view, projection, W, H)
    ids, seen = ids_gl[::-1], r.mask.numpy()
    assert 300 < seen.sum() < 0.8 * W * H
    np.testing.assert_array_equal(r.face_index.numpy(), ids)
    z_cam = 2 * far * near / ((far + near) - ndc_z[::-1][seen] * (far - near))
    np.testing.assert_allclose(r.depth.numpy()[seen], z_cam, rtol=1e-9)
    # negative controls: a mirrored camera x axis, or GL rows left unflipped, see different pixels
    mirrored, _ = opengl_face_ids(V, F, np.diag([-1.0, 1, 1, 1]) @ view, projection, W, H)
    for wrong in (mirrored[::-1], ids_gl):
        differ = (wrong != ids) & ((wrong >= 0) | seen)
        assert differ.sum() > 0.2 * seen.sum()


@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_fibonacci_views_look_at_the_target(n):
    target, radius = np.array([0.3, -0.2, 0.5]), 2.5
    cams = fibonacci_views(n, radius, tuple(target), width=40, height=30)
    assert len(cams) == n
    directions = []
    for cam in cams:
        R = cam.R.numpy()
        assert np.isfinite(R).all() and np.isfinite(cam.t.numpy()).all()
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1.0)
        centre = cam.center.numpy()
        assert np.isclose(np.linalg.norm(centre - target), radius, rtol=1e-12)
        uv = cam.project(cam.world_to_camera(torch.from_numpy(target)[None]))
        np.testing.assert_allclose(uv.numpy(), [[19.5, 14.5]], atol=1e-9)
        # the up vector never runs parallel to the view: world y or z is well inside the image plane
        assert max(np.abs(R[:2, 1]).max(), np.abs(R[:2, 2]).max()) > 0.4
        directions.append((centre - target) / radius)
    d = np.array(directions)
    if n == 500:
        assert np.abs(d[:, 1]).max() > 0.99  # views close to both poles
        gaps = np.linalg.norm(d[:, None] - d[None], axis=-1) + 3 * np.eye(n)
        assert gaps.min(axis=1).min() > 0.5 * np.sqrt(4 * np.pi / n)  # evenly spread, no duplicates
        np.testing.assert_allclose(d.mean(axis=0), 0.0, atol=0.01)
    with pytest.raises(MorphableError):
        fibonacci_views(0, radius)


def test_interpolate_and_maps_agree_with_rasterize():
    m = trimesh.creation.icosphere(3, radius=0.6)
    V, F = np.asarray(m.vertices) * [1.0, 1.2, 0.8], np.asarray(m.faces)
    cam = Camera.look_at((0.4, 0.3, 2.0), fov_deg=40, width=48, height=40)
    r = rasterize(V, F, cam)
    surface = interpolate(torch.from_numpy(V), F, r.face_index, r.bary)
    points, pixels = backproject(r.depth, cam)
    np.testing.assert_allclose(surface[pixels[:, 0], pixels[:, 1]].numpy(), points.numpy(), atol=1e-12)
    assert (surface[~r.mask] == 0).all()
    n_world = interpolate(vertex_normals(torch.from_numpy(V), F), F, r.face_index, r.bary)
    n_world = torch.nn.functional.normalize(n_world, dim=-1)
    n_cam = normal_map(V, F, cam)
    np.testing.assert_allclose(n_cam[r.mask].numpy(), (n_world @ cam.R.T)[r.mask].numpy(), atol=1e-12)
    assert (n_cam[~r.mask] == 0).all()
    assert (n_cam[r.mask][:, 2] < 0).double().mean() > 0.95  # the visible side faces the camera (camera looks along +z)
    assert torch.equal(depth_map(V, F, cam), r.depth) and torch.equal(mask(V, F, cam), r.mask)
    assert torch.equal(normal_map(V, F, cam, smooth=False), rasterize(V, F, cam, smooth=False).normals)


def test_rasterize_and_interpolate_gradients():
    cam = Camera.look_at((0.1, 0.2, 3.0), fov_deg=20, width=6, height=5)
    V = torch.tensor([[-4.0, -4.0, 0.1], [4.0, -3.0, -0.2], [0.5, 4.0, 0.3]], dtype=torch.float64, requires_grad=True)
    F = torch.tensor([[0, 1, 2]])
    assert rasterize(V.detach(), F, cam).mask.all()  # every pixel inside: small steps change no coverage

    def maps(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r = rasterize(v, F, cam, smooth=False)
        return r.depth, r.bary, r.normals

    assert torch.autograd.gradcheck(maps, (V,))
    attributes = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    face_index = torch.tensor([[0, -1], [0, 0]])
    bary = torch.rand(2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: interpolate(a, F, face_index, b), (attributes, bary))
