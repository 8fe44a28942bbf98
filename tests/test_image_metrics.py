"""Image metrics (2D landmark NME, 3D NME after ICP, point-to-plane distance) and the ICP / Umeyama
alignment, against naive loops, analytic cases and invariances."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import ICT_FOLDER, require
from mesh_fixtures import bumpy_sphere, ict_skin, sheet
from morphable.errors import MorphableError
from morphable.mesh.icp import SimilarityTransform, icp, umeyama
from morphable.metrics import align_prediction, landmark_nme, nme_3d, point_to_plane_distance

ROTATION = Rotation.from_euler("xyz", [12.0, -18.0, 7.0], degrees=True).as_matrix()
TRUE = SimilarityTransform(1.3, ROTATION, np.array([1.5, -2.0, 3.0]))


def ict_eye_corners() -> tuple[int, int]:
    """ICT-FaceKit vertices of the iBUG outer eye corners 36 and 45 (on the skin)."""
    with open(require(ICT_FOLDER / "vertex_indices.json")) as f:
        landmarks = json.load(f)["idx_to_landmark_verts"]
    return landmarks[36], landmarks[45]


# ---------------------------------------------------------------- closed form and ICP

def test_umeyama_recovers_an_exact_similarity_and_a_proper_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    for scale, truth in ((True, TRUE), (False, SimilarityTransform(1.0, ROTATION, TRUE.translation))):
        got = umeyama(x, truth.apply(x), scale=scale)
        assert abs(got.scale - truth.scale) < 1e-12
        np.testing.assert_allclose(got.rotation, truth.rotation, atol=1e-12)
        np.testing.assert_allclose(got.translation, truth.translation, atol=1e-12)
    mirrored = umeyama(x, x * [-1.0, 1.0, 1.0])
    assert np.linalg.det(mirrored.rotation) == pytest.approx(1.0)


def test_umeyama_weights_ignore_zero_weight_outliers():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    y = TRUE.apply(x)
    y[:5] += 10.0
    weights = np.r_[np.zeros(5), np.ones(35)]
    got = umeyama(x, y, scale=True, weights=weights)
    np.testing.assert_allclose(got.matrix, TRUE.matrix, atol=1e-12)
    assert np.abs(umeyama(x, y, scale=True).matrix - TRUE.matrix).max() > 0.1  # negative control


@pytest.mark.parametrize("scale", [False, True])
def test_icp_recovers_a_known_transform_from_centroids(scale):
    v, _ = ict_skin()
    truth = TRUE if scale else SimilarityTransform(1.0, ROTATION, TRUE.translation)
    result = icp(v, truth.apply(v), scale=scale)
    assert result.converged and result.rms < 1e-9
    assert abs(result.transform.scale - truth.scale) < 1e-6
    np.testing.assert_allclose(result.transform.rotation, truth.rotation, atol=1e-6)
    np.testing.assert_allclose(result.transform.translation, truth.translation, atol=1e-6)


def test_icp_from_landmarks_recovers_a_large_rotation_that_centroids_miss():
    v, _ = ict_skin()
    truth = SimilarityTransform(0.8, Rotation.from_euler("y", 150, degrees=True).as_matrix(), TRUE.translation)
    target = truth.apply(v)
    marks = [*ict_eye_corners(), 0, 3000, 8000]
    result = icp(v, target, scale=True, init="landmarks", source_landmarks=v[marks], target_landmarks=target[marks])
    np.testing.assert_allclose(result.transform.matrix, truth.matrix, atol=1e-6)
    assert icp(v, target, scale=True).rms > 1e-3  # negative control: a local minimum


def test_icp_reject_distance_discards_outliers():
    v, _ = bumpy_sphere(3)
    truth = SimilarityTransform(1.0, ROTATION, TRUE.translation)
    source = np.concatenate([v, v[:40] * 3.0])  # 40 points the target does not have
    marks = {"init": "landmarks", "source_landmarks": v[:10], "target_landmarks": truth.apply(v[:10])}
    with_rejection = icp(source, truth.apply(v), reject_distance=0.2, **marks)
    np.testing.assert_allclose(with_rejection.transform.matrix, truth.matrix, atol=1e-6)
    without = icp(source, truth.apply(v), **marks)
    assert np.abs(without.transform.matrix - truth.matrix).max() > 1e-3


def test_alignment_errors_are_one_line():
    v, _ = bumpy_sphere(1)
    with pytest.raises(MorphableError, match="NaN"):
        icp(v, np.full_like(v, np.nan))
    with pytest.raises(MorphableError, match="shape"):
        umeyama(v, v[:-1])
    for solve in (lambda x: umeyama(x, v[:4]), lambda x: icp(x, v, scale=True)):
        with pytest.raises(MorphableError, match="coincide"):
            solve(np.zeros((4, 3)))
    with pytest.raises(MorphableError, match="needs source_landmarks"):
        icp(v, v, init="landmarks")
    with pytest.raises(MorphableError, match="got 2 and 2"):
        icp(v, v, init="landmarks", source_landmarks=v[:2], target_landmarks=v[:2])
    with pytest.raises(MorphableError, match="unknown alignment"):
        align_prediction(v, v, alignment="affine")
    with pytest.raises(MorphableError, match="3 predicted landmarks for 4"):
        align_prediction(v, v, init="landmarks", pred_landmarks=np.arange(3), gt_landmarks=np.arange(4))
    with pytest.raises(MorphableError, match="indices must be in"):
        align_prediction(v, v, init="landmarks", pred_landmarks=np.arange(3) + len(v), gt_landmarks=np.arange(3))


# ---------------------------------------------------------------- 2D landmark NME

def naive_landmark_nme(pred, gt, normalisation, visible):
    out = []
    for n in range(len(gt)):
        if normalisation == "inter_ocular":
            d = math.dist(gt[n][36], gt[n][45])
        else:
            xs, ys = [p[0] for p in gt[n]], [p[1] for p in gt[n]]
            d = math.sqrt((max(xs) - min(xs)) * (max(ys) - min(ys)))
        errors = [math.dist(pred[n][i], gt[n][i]) for i in range(68) if visible[n][i]]
        out.append(sum(errors) / len(errors) / d)
    return out


@pytest.mark.parametrize("normalisation", ["inter_ocular", "bbox"])
def test_landmark_nme_matches_a_naive_loop(normalisation):
    rng = np.random.default_rng(2)
    gt = rng.uniform(0, 224, size=(7, 68, 2))
    pred = gt + rng.normal(scale=3.0, size=gt.shape)
    visible = rng.random((7, 68)) > 0.3
    got = landmark_nme(pred, gt, normalisation, visible)
    expected = naive_landmark_nme(pred, gt, normalisation, visible)
    np.testing.assert_allclose(got.per_image, expected, rtol=1e-12)
    assert got.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert landmark_nme(pred, gt, normalisation).mean != pytest.approx(got.mean, rel=1e-6)  # visibility counts


def test_landmark_nme_analytic_offset_and_single_image():
    gt = np.zeros((68, 2))
    gt[:, 0] = np.linspace(0, 80, 68)
    gt[:, 1] = np.linspace(0, 20, 68) ** 2 / 20  # box 80 x 20 -> sqrt(w h) = 40
    pred = gt + [3.0, 4.0]  # every error is 5 px
    io = np.linalg.norm(gt[36] - gt[45])
    assert landmark_nme(pred, gt).per_image == pytest.approx([5.0 / io], rel=1e-12)
    assert landmark_nme(pred, gt, "bbox").mean == pytest.approx(5.0 / 40.0, rel=1e-12)
    assert landmark_nme(gt, gt).mean == 0.0


def test_landmark_nme_errors():
    gt = np.random.default_rng(3).uniform(size=(2, 68, 2))
    with pytest.raises(MorphableError, match="differ in shape"):
        landmark_nme(gt[:1], gt)
    with pytest.raises(MorphableError, match="NaN"):
        landmark_nme(np.where(gt > 0.5, np.nan, gt), gt)
    with pytest.raises(MorphableError, match="needs the 68"):
        landmark_nme(gt[:, :5], gt[:, :5])
    with pytest.raises(MorphableError, match="image 1 has no visible"):
        landmark_nme(gt, gt, visible=np.array([[True] * 68, [False] * 68]))
    with pytest.raises(MorphableError, match="unknown normalisation"):
        landmark_nme(gt, gt, "pupils")
    flat = gt.copy()
    flat[1, :, 1] = 0.5
    with pytest.raises(MorphableError, match="image 1: the bbox normaliser"):
        landmark_nme(flat, flat, "bbox")


# ---------------------------------------------------------------- 3D NME

def naive_nme(pred, gt, eye_a, eye_b):
    total = 0.0
    for q in gt:
        total += min(math.dist(p, q) for p in pred)
    return total / len(gt) / math.dist(eye_a, eye_b)


def perturbed_ict(n_gt=150, n_pred=400):
    """A subset of the ICT skin (GT, with the eye corners kept) and a noisy, partial copy of it (prediction)."""
    v, _ = ict_skin()
    eyes = ict_eye_corners()
    rng = np.random.default_rng(4)
    keep = np.r_[list(eyes), rng.choice(len(v), n_gt - 2, replace=False)]
    pred = v[rng.choice(len(v), n_pred, replace=False)] + rng.normal(scale=0.05, size=(n_pred, 3))
    return pred, v[keep], np.array([0, 1])


def test_nme_3d_matches_a_naive_double_loop():
    pred, gt, eyes = perturbed_ict()
    got = nme_3d(pred, gt, eyes, alignment="none")
    assert got.nme == pytest.approx(naive_nme(pred, gt, gt[0], gt[1]), rel=1e-12)
    assert got.inter_ocular == pytest.approx(2 * 4.45898, rel=1e-5)
    aligned = nme_3d(TRUE.apply(pred), gt, gt[:2], alignment="similarity")  # eye corners as coordinates
    assert aligned.nme == pytest.approx(naive_nme(aligned.transform.apply(TRUE.apply(pred)), gt, gt[0], gt[1]),
                                        rel=1e-12)


def test_nme_3d_is_invariant_to_the_transform_it_aligns_away():
    v, _ = ict_skin()
    eyes = np.array(ict_eye_corners())
    rng = np.random.default_rng(5)
    pred = v + rng.normal(scale=0.03, size=v.shape)
    reference = nme_3d(pred, v, eyes, alignment="none").nme
    rigid = SimilarityTransform(1.0, ROTATION, TRUE.translation)
    assert nme_3d(rigid.apply(pred), v, eyes).nme == pytest.approx(reference, rel=1e-3)
    assert nme_3d(TRUE.apply(pred), v, eyes, alignment="similarity").nme == pytest.approx(reference, rel=1e-3)
    assert nme_3d(TRUE.apply(pred), v, eyes).nme > 5 * reference  # rigid cannot undo the scale
    marks = np.r_[eyes, 0, 3000, 8000]
    from_landmarks = nme_3d(TRUE.apply(pred), v, eyes, alignment="similarity", init="landmarks",
                            pred_landmarks=marks, gt_landmarks=marks)
    assert from_landmarks.nme == pytest.approx(reference, rel=1e-3)


def test_nme_3d_errors():
    pred, gt, _ = perturbed_ict(20, 30)
    with pytest.raises(MorphableError, match="must name 2 points"):
        nme_3d(pred, gt, np.array([0, 1, 2]))
    with pytest.raises(MorphableError, match="coincide"):
        nme_3d(pred, gt, np.array([3, 3]))
    with pytest.raises(MorphableError, match="shape"):
        nme_3d(pred[:, :2], gt, np.array([0, 1]))


# ---------------------------------------------------------------- point-to-plane

def naive_vertex_normals(v, f):
    acc = [[0.0, 0.0, 0.0] for _ in v]
    for a, b, c in f:
        n = np.cross(v[b] - v[a], v[c] - v[a])
        for k in (a, b, c):
            acc[k] = [acc[k][i] + n[i] for i in range(3)]
    return [np.array(n) / math.sqrt(sum(x * x for x in n)) for n in acc]


def naive_segment_distance(q, a, b):
    t = min(max(np.dot(q - a, b - a) / np.dot(b - a, b - a), 0.0), 1.0)
    return math.dist(q, a + t * (b - a))


def naive_triangle_distance(q, a, b, c):
    """Distance to a triangle: to its plane when the projection falls inside, else to the nearest edge."""
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n)
    p = q - np.dot(q - a, n) * n
    inside = all(np.dot(np.cross(e1 - e0, p - e0), n) >= 0 for e0, e1 in ((a, b), (b, c), (c, a)))
    if inside:
        return abs(np.dot(q - a, n))
    return min(naive_segment_distance(q, a, b), naive_segment_distance(q, b, c), naive_segment_distance(q, c, a))


def test_point_to_plane_of_a_plane_offset_by_d_is_d():
    v, f = sheet(8)
    rng = np.random.default_rng(6)
    d = 0.37
    gt = np.c_[rng.uniform(-0.9, 0.9, size=(50, 2)), np.full(50, d)]
    for method in ("vertex_plane", "triangle"):
        got = point_to_plane_distance(v, f, gt, alignment="none", method=method)
        np.testing.assert_allclose(got.distances_mm, d, rtol=1e-12)
        assert got.median_mm == pytest.approx(d, rel=1e-12)
    assert point_to_plane_distance(v, f, gt, unit="cm", alignment="none").mean_mm == pytest.approx(10 * d, rel=1e-12)
    outside = np.array([[1.5, 0.0, 0.5]])  # beyond the sheet's edge x = 1: the edge is nearest
    assert point_to_plane_distance(v, f, outside, alignment="none", method="triangle").mean_mm == pytest.approx(
        math.sqrt(0.5), rel=1e-12)
    assert point_to_plane_distance(v, f, outside, alignment="none").mean_mm == pytest.approx(0.5, rel=1e-12)


def test_point_to_plane_matches_naive_loops_on_a_small_mesh():
    v, f = bumpy_sphere(1)
    rng = np.random.default_rng(7)
    gt = v[rng.choice(len(v), 30)] * rng.uniform(0.9, 1.1, size=(30, 1)) + rng.normal(scale=0.02, size=(30, 3))
    normals = naive_vertex_normals(v, f)
    nearest = [min(range(len(v)), key=lambda j: math.dist(v[j], q)) for q in gt]
    expected_plane = [abs(np.dot(q - v[j], normals[j])) for q, j in zip(gt, nearest)]
    expected_triangle = [min(naive_triangle_distance(q, *v[face]) for face in f) for q in gt]
    got = point_to_plane_distance(v, f, gt, unit="m", alignment="none")
    np.testing.assert_allclose(got.distances_mm, 1000 * np.array(expected_plane), rtol=1e-9)
    assert got.median_mm == pytest.approx(1000 * np.median(expected_plane), rel=1e-9)
    tri = point_to_plane_distance(v, f, gt, unit="m", alignment="none", method="triangle")
    np.testing.assert_allclose(tri.distances_mm, 1000 * np.array(expected_triangle), rtol=1e-9)


def test_point_to_plane_after_alignment_and_unused_vertices():
    v, f = bumpy_sphere(3)
    rng = np.random.default_rng(8)
    gt = v + rng.normal(scale=0.01, size=v.shape)
    reference = point_to_plane_distance(v, f, gt, alignment="none")
    marks = np.arange(0, len(v), 50)
    moved = point_to_plane_distance(TRUE.apply(v), f, gt, alignment="similarity", init="landmarks",
                                    pred_landmarks=marks, gt_landmarks=marks)
    assert moved.mean_mm == pytest.approx(reference.mean_mm, rel=1e-2)  # ICP fits some of the noise
    np.testing.assert_allclose(moved.transform.matrix @ TRUE.matrix, np.eye(4), atol=2e-3)
    stray = np.r_[v, [[0.0, 0.0, 0.0]]]  # a vertex in no face (zero normal) is never the nearest point
    centre = point_to_plane_distance(stray, f, np.zeros((1, 3)), alignment="none")
    assert centre.mean_mm > 0.5


def test_point_to_plane_errors():
    v, f = sheet(2)
    with pytest.raises(MorphableError, match="index vertices"):
        point_to_plane_distance(v, f + len(v), v, alignment="none")
    with pytest.raises(MorphableError, match="integers of shape"):
        point_to_plane_distance(v, f.astype(float), v, alignment="none")
    with pytest.raises(MorphableError, match="unknown unit"):
        point_to_plane_distance(v, f, v, unit="furlong", alignment="none")
    with pytest.raises(MorphableError, match="unknown method"):
        point_to_plane_distance(v, f, v, method="normal", alignment="none")
    with pytest.raises(MorphableError, match="NaN"):
        point_to_plane_distance(v, f, np.full((3, 3), np.inf), alignment="none")


# ---------------------------------------------------------------- docs/images.md

def test_camera_example_of_the_docs_runs_and_says_what_it_prints():
    text = (Path(__file__).resolve().parents[1] / "docs" / "images.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "cam.opengl" in b]
    scope: dict = {}
    exec(block, scope)
    np.testing.assert_allclose(scope["cam"].K.numpy()[[0, 1, 0, 1], [0, 1, 2, 2]], [417.99, 417.99, 111.5, 111.5],
                               atol=5e-3)
    np.testing.assert_allclose(scope["uv"].numpy(), [[119.86, 94.78]], atol=5e-3)
    expected_view = np.eye(4)
    expected_view[2, 3] = -50.0
    np.testing.assert_allclose(scope["view"].numpy(), expected_view, atol=1e-12)
