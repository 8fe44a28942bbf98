"""Face detail outside the linear model's span (data/face_detail.py) and the photo generator's --detail."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import ICT_FOLDER, ICT_NPZ, require
from morphable.data.face_detail import DetailSettings, face_vertices
from morphable.errors import MorphableError


@pytest.fixture(scope="module")
def photo_model():
    from morphable.data.photos import load_photo_model, prepare_photo_model

    return prepare_photo_model(load_photo_model(require(ICT_NPZ), require(ICT_FOLDER))[0])


def test_the_mid_band_has_its_rms_stays_on_the_skin_and_no_coefficients_reproduce_it(photo_model):
    from morphable.data.photos import make_identity

    pm = photo_model
    plain = make_identity(pm, 0, 5)
    detailed = make_identity(pm, 0, 5, DetailSettings(mid_mm=1.0))
    mid = detailed.mid.astype(np.float64)
    np.testing.assert_allclose(detailed.vertices - plain.vertices, mid, atol=1e-5)
    assert np.array_equal(plain.texture_srgb, detailed.texture_srgb) and np.array_equal(plain.shape, detailed.shape)
    region = face_vertices(pm.mean, pm.landmarks, pm.skin)
    rms_mm = 10 / pm.cm * np.sqrt((mid[region] ** 2).sum(1).mean())
    assert rms_mm == pytest.approx(1.0, rel=1e-5)
    assert np.abs(mid[~pm.skin]).max() < 1e-6  # eyes and mouth socket do not move
    basis = np.concatenate([pm.shape_basis, pm.expression_basis]).astype(np.float64)  # (K, 3V)
    c, *_ = np.linalg.lstsq(basis.T, mid.reshape(-1), rcond=None)
    explained = np.linalg.norm(basis.T @ c) / np.linalg.norm(mid)
    assert explained < 1e-3, explained  # the model's best fit explains none of it
    assert np.linalg.norm(mid, axis=1).max() > 2 * rms_mm * pm.cm / 10  # bumps, not a uniform offset


def test_the_high_band_has_its_rms_on_the_face_and_is_zero_off_the_chart(photo_model):
    from morphable.data.photos import make_identity

    pm = photo_model
    high = make_identity(pm, 0, 5, DetailSettings(high_mm=0.2)).high.astype(np.float64)
    pmap = pm.position_map
    assert high.shape == pmap.covered.shape
    assert np.abs(high[~pmap.covered]).max() == 0
    centre = pmap.landmarks.mean(axis=0)
    radius = np.linalg.norm(pmap.landmarks - centre, axis=1).max()
    front = pmap.normal[..., 2] > 0.5
    region = pmap.covered & (np.linalg.norm(pmap.position - centre, axis=-1) <= radius) & front
    rms_mm = 10 / pm.cm * np.sqrt((high[region] ** 2).mean())
    assert 0.15 < rms_mm < 0.25  # 0.2 over the face texels of the stated region (its mask is soft at the edge)
    again = make_identity(pm, 0, 5, DetailSettings(high_mm=0.2)).high
    assert np.array_equal(again, make_identity(pm, 0, 5, DetailSettings(high_mm=0.2)).high)  # seeded


def test_photos_with_detail_move_the_mesh_by_the_mid_band_and_change_the_shading(tmp_path, photo_model):
    from morphable.data.photos import PhotoDataset, PhotoSettings, load_photo_model, write_photo_dataset

    model = load_photo_model(require(ICT_NPZ), require(ICT_FOLDER))[0]
    plain = PhotoDataset(write_photo_dataset(model, tmp_path / "plain", PhotoSettings(2, 1, 96, 4), progress=False))
    detail = DetailSettings(1.0, 0.3)
    rich = PhotoDataset(write_photo_dataset(model, tmp_path / "rich", PhotoSettings(2, 1, 96, 4, detail),
                                            progress=False))
    assert rich.info["detail"] == {"mid_mm": 1.0, "high_mm": 0.3} and "detail" not in plain.info
    mid = np.load(rich.root / "detail" / "0000_mid.npy")
    assert np.load(rich.root / "detail" / "0000_high.npy").shape == photo_model.position_map.covered.shape
    for i in range(2):
        R, t = rich.annotations["pose"][i][:3, :3], rich.annotations["pose"][i][:3, 3]
        model_frame_plain = (plain.mesh(i) - plain.annotations["pose"][i][:3, 3]) @ plain.annotations["pose"][i][:3, :3]
        np.testing.assert_allclose(rich.mesh(i), (model_frame_plain + mid) @ R.T + t, atol=2e-3)
        changed = np.abs(rich.image(i).astype(int) - plain.image(i).astype(int)).sum(-1) > 6
        near_face = ndimage.binary_dilation(rich.mask(i) | plain.mask(i), iterations=3)  # blur spreads the face
        assert changed[rich.mask(i)].mean() > 0.02 and not changed[~near_face].any()
    with pytest.raises(MorphableError, match="--detail mid must be in 0..10 mm"):
        DetailSettings(mid_mm=-1)
