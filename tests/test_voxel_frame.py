"""The VRN volume frame (data/voxels.py): camera -> volume -> crop -> photo maps."""

import numpy as np
import pytest

from morphable.data.voxels import VolumeSpec, camera_to_volume, crop_to_photo, similarity_scale, volume_to_crop
from morphable.errors import MorphableError
from morphable.image.align import apply_transform, similarity_transform

K = np.array([[300.0, 0, 80.0], [0, 300.0, 78.0], [0, 0, 1]])


def _crop(scale: float = 0.7, angle: float = 0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    A = np.eye(3)
    A[:2, :2] = scale * np.array([[c, -s], [s, c]])
    A[:2, 2] = [5.0, -3.0]
    return A


def test_xy_is_the_exact_projection_then_the_crop():
    rng = np.random.default_rng(0)
    points = rng.normal(0, 5, (20, 3)) + [0, 0, 60]
    spec, A = VolumeSpec(96, 100), _crop()
    vox = camera_to_volume(points, K, A, 60.0, spec)
    uv = points[:, :2] / points[:, 2:] * 300.0 + [80.0, 78.0]
    np.testing.assert_allclose(vox[:, :2], apply_transform(A, uv), atol=1e-9)
    assert similarity_scale(A) == pytest.approx(0.7)


def test_depth_has_the_same_pixel_scale_as_xy_at_the_reference_depth():
    spec, A = VolumeSpec(96, 100, depth_scale=2.0), _crop(angle=0.0)
    z0, d = 60.0, 1e-4
    base = np.array([[0.0, 0.0, z0]])
    dx = camera_to_volume(base + [d, 0, 0], K, A, z0, spec) - camera_to_volume(base, K, A, z0, spec)
    dz = volume_to_crop(camera_to_volume(base + [0, 0, d], K, A, z0, spec), spec) - \
        volume_to_crop(camera_to_volume(base, K, A, z0, spec), spec)
    assert dz[0, 2] == pytest.approx(dx[0, 0], rel=1e-6)
    assert camera_to_volume(base, K, A, z0, spec)[0, 2] == pytest.approx(50.0)  # Z_0 is the middle slice
    assert dz[0, 2] * 2.0 == pytest.approx(
        (camera_to_volume(base + [0, 0, d], K, A, z0, spec) - camera_to_volume(base, K, A, z0, spec))[0, 2])


def test_crop_to_photo_inverts_the_crop_and_the_depth_scale():
    A = _crop()
    crop = np.array([[10.0, 20.0, 3.0], [40.0, 5.0, -7.0]])
    photo = crop_to_photo(crop, A)
    np.testing.assert_allclose(apply_transform(A, photo[:, :2]), crop[:, :2], atol=1e-9)
    np.testing.assert_allclose(photo[:, 2], crop[:, 2] / 0.7)


def test_crop_matrix_puts_landmarks_on_the_template_at_the_fill():
    from morphable.image.align import template_landmarks

    spec = VolumeSpec(96, 100, fill=0.5)
    points = template_landmarks(200) * 1.3 + [7.0, -2.0]
    np.testing.assert_allclose(apply_transform(spec.crop_matrix(points), points), template_landmarks(96, 0.5),
                               atol=1e-8)
    wide, tight = template_landmarks(96, 0.5), template_landmarks(96)
    assert np.ptp(wide[:, 0]) < np.ptp(tight[:, 0])
    assert similarity_transform(points, wide)[0, 0] > 0


@pytest.mark.parametrize("kwargs", [dict(size=4), dict(depth=1), dict(depth_scale=0.0), dict(fill=1.5)])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(MorphableError):
        VolumeSpec(**kwargs)


def test_points_behind_the_camera_are_refused():
    with pytest.raises(MorphableError, match="in front"):
        camera_to_volume(np.array([[0.0, 0, -1]]), K, np.eye(3), 60.0, VolumeSpec())
