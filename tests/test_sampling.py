"""The surface sampler: area weighting (chi-square), points on their faces, normals, the random stream."""

import numpy as np
import pytest

from mesh_fixtures import icosphere, open_cap
from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals
from morphable.mesh.sampling import sample_surface

# two triangles in the plane z = 0 with areas 1/2 and 3/2
TWO_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [2, 3, 0]], dtype=np.float64)
TWO_F = np.array([[0, 1, 2], [1, 3, 4]])
CHI2_999 = {1: 10.828, 3: 16.266}  # 99.9 % quantiles of the chi-square distribution


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = probabilities * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_faces_are_drawn_by_area_and_points_are_uniform_inside():
    s = sample_surface(TWO_V, TWO_F, 40000, np.random.default_rng(0))
    counts = np.bincount(s.face_ids, minlength=2)
    assert chi_square(counts, np.array([0.25, 0.75])) < CHI2_999[1]
    # inside each triangle: its four midpoint sub-triangles have a quarter of the area each; the corner
    # sub-triangle at corner k holds the points with b_k > 1/2, the middle one those with all b_k < 1/2
    for f in range(2):
        b = s.barycentrics[s.face_ids == f]
        quarter = np.where(b.max(axis=1) > 0.5, b.argmax(axis=1), 3)
        assert chi_square(np.bincount(quarter, minlength=4), np.full(4, 0.25)) < CHI2_999[3]


def test_points_lie_on_their_faces_with_unit_normals():
    v, f = open_cap(2)
    s = sample_surface(v, f, 5000, 1)
    assert s.points.shape == (5000, 3) and s.face_ids.dtype == np.int64
    assert (s.barycentrics >= 0).all()
    np.testing.assert_allclose(s.barycentrics.sum(axis=1), 1.0, atol=1e-12)
    corners = v[f[s.face_ids]]
    np.testing.assert_allclose(s.points, np.einsum("nk,nkd->nd", s.barycentrics, corners), atol=1e-12)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    np.testing.assert_allclose(((s.points - corners[:, 0]) * cross).sum(axis=1), 0.0, atol=1e-12)  # in the plane
    np.testing.assert_allclose(np.linalg.norm(s.normals, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(s.face_normals, cross / np.linalg.norm(cross, axis=1, keepdims=True), atol=1e-12)
    # interpolated normals: the normalised barycentric mix of the area-weighted vertex normals
    mix = np.einsum("nk,nkd->nd", s.barycentrics, vertex_normals(v, f)[f[s.face_ids]])
    np.testing.assert_allclose(s.normals, mix / np.linalg.norm(mix, axis=1, keepdims=True), atol=1e-12)


def test_interpolated_normals_follow_a_sphere_better_than_face_normals():
    v, f = icosphere(2)
    s = sample_surface(v, f, 3000, 2)
    radial = s.points / np.linalg.norm(s.points, axis=1, keepdims=True)
    smooth, flat = (s.normals * radial).sum(axis=1), (s.face_normals * radial).sum(axis=1)
    assert smooth.min() > 0.999 and flat.min() < 0.99 and smooth.mean() > flat.mean()
    # flat mesh: both are the plane's normal; given vertex normals are used as they are
    s = sample_surface(TWO_V, TWO_F, 100, 3, vertex_normals=np.tile([0.0, 0.0, -1.0], (5, 1)))
    np.testing.assert_array_equal(s.normals, np.tile([0.0, 0.0, -1.0], (100, 1)))
    np.testing.assert_allclose(s.face_normals, np.tile([0.0, 0.0, 1.0], (100, 1)))


def test_random_stream_is_three_uniform_draws_per_sample():
    """u0 picks the face by cumulative area, u1 and u2 the barycentrics (the stream the SDF data depends on)."""
    n = 50
    s = sample_surface(TWO_V, TWO_F, n, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    u0, u1, u2 = rng.random(n), rng.random(n), rng.random(n)
    for i in range(n):
        face = 0 if u0[i] * 2.0 < 0.5 else 1  # cumulative areas 0.5, 2.0
        r = np.sqrt(u1[i])
        assert s.face_ids[i] == face
        np.testing.assert_allclose(s.barycentrics[i], [1 - r, r * (1 - u2[i]), r * u2[i]], atol=0)
    # a seed and a generator with that seed give the same samples; the generator advances
    np.testing.assert_array_equal(sample_surface(TWO_V, TWO_F, n, 9).points, s.points)
    rng = np.random.default_rng(9)
    first, second = sample_surface(TWO_V, TWO_F, n, rng), sample_surface(TWO_V, TWO_F, n, rng)
    assert not np.array_equal(first.points, second.points)


def test_empty_requests_and_meshes_without_area():
    rng = np.random.default_rng(0)
    s = sample_surface(TWO_V, TWO_F[:0], 0, rng)
    assert s.points.shape == (0, 3) and s.face_ids.shape == (0,)
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn
    with pytest.raises(MorphableError, match="no area"):
        sample_surface(TWO_V, TWO_F[:0], 10)
    with pytest.raises(MorphableError, match="no area"):
        sample_surface(np.zeros((3, 3)), [[0, 1, 2]], 10)
