"""Ground-truth normal maps: no back face on the mask of open ICT heads, agreement with the volume renderer
in the stored camera convention, the dataset layout written by ``data sdf``, strict reading."""

import json

import numpy as np
import pytest
import torch
import trimesh
from mesh_fixtures import ict_skin

from conftest import ICT_NPZ, require
from morphable.cli import main
from morphable.data import sdf
from morphable.data.normal_maps import (NormalMaps, NormalMapSettings, read_normal_maps, render_normal_maps,
                                        view_cameras, write_normal_maps)
from morphable.errors import MorphableError
from morphable.render import LaplaceDensity, fibonacci_views, rasterize, render_views


def _ict_heads() -> list[tuple[np.ndarray, np.ndarray]]:
    """The ICT neutral skin and one identity two standard units along the first modes, normalised."""
    V, F = ict_skin()
    with np.load(require(ICT_NPZ)) as data:
        modes = data["identity_modes"][:3, :len(V)].astype(np.float64)
    heads = []
    for vertices in (V, V + 2.0 * modes.sum(axis=0)):
        prepared = sdf.prepare_mesh("ict", vertices, F, np.ones(len(vertices), bool), warn=False)
        heads.append((sdf.Similarity.fit([prepared.vertices]).apply(prepared.vertices), prepared.faces))
    return heads


def test_ict_maps_show_no_back_face_through_the_holes():
    cameras = view_cameras(NormalMapSettings(views=24, resolution=32), sdf.DEFAULT_RADIUS)
    for vertices, faces in _ict_heads():
        maps = render_normal_maps(vertices, faces, cameras)
        seen_back, kept, covered = 0, 0, 0
        for k, camera in enumerate(cameras):
            raster = rasterize(vertices, faces, camera)
            view = (camera.rays() * raster.depth[..., None]).numpy()  # camera-frame surface points
            facing = (raster.normals.numpy() * view).sum(-1)
            seen_back += int((raster.mask.numpy() & (facing >= 0)).sum())
            m = maps.mask[k]
            assert (m <= raster.mask.numpy()).all()
            assert ((maps.normals[k][m] * view[m]).sum(-1) < 0).all()  # n . v < 0 everywhere on the mask
            kept, covered = kept + int(m.sum()), covered + int(raster.mask.sum())
        assert seen_back > 100  # the open neck, mouth and eyes do show back faces from some views
        assert kept >= 0.8 * covered
        np.testing.assert_allclose(np.linalg.norm(maps.normals[maps.mask], axis=-1), 1.0, atol=1e-5)
        assert (maps.normals[~maps.mask] == 0).all()


def test_maps_agree_with_volume_rendering_in_the_stored_cameras(tmp_path):
    centre = np.array([0.1, -0.2, 0.05])
    sphere = trimesh.creation.icosphere(5, radius=0.5)
    maps = render_normal_maps(np.asarray(sphere.vertices) + centre, sphere.faces,
                              view_cameras(NormalMapSettings(views=3, resolution=24), 0.9))
    write_normal_maps(tmp_path / "s_normals.npz", maps)
    read = read_normal_maps(tmp_path / "s_normals.npz")
    c = torch.as_tensor(centre, dtype=torch.float32)
    with torch.no_grad():
        volume = render_views(lambda p: (p - c).norm(dim=-1) - 0.5, read.cameras, LaplaceDensity(),
                              create_graph=False)
    for k in range(3):
        m = torch.as_tensor(read.mask[k])
        cos = (volume.normals[0, k][m] * torch.as_tensor(read.normals[k])[m]).sum(-1)
        assert float(cos.mean()) >= 0.99
        assert float(volume.opacity[0, k][m].mean()) >= 0.99


def _two_spheres() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    meshes = []
    for name, r in (("big", 8.0), ("small", 5.0)):
        s = trimesh.creation.icosphere(3, radius=r)
        meshes.append((name, np.asarray(s.vertices), np.asarray(s.faces), np.ones(len(s.vertices), bool)))
    return meshes


def test_dataset_stores_maps_beside_the_samples(tmp_path):
    settings = NormalMapSettings(views=5, resolution=12)
    out = sdf.write_sdf_dataset(_two_spheres(), tmp_path / "d", "cm", n_surface=200, n_near=200, n_ball=100,
                                normal_maps=settings, progress=False)
    info = json.loads((out / sdf.DATASET_JSON).read_text())
    assert [s["normal_maps"] for s in info["shapes"]] == ["big_normals.npz", "small_normals.npz"]
    assert info["settings"]["normal_maps"] == {"views": 5, "resolution": 12, "radius": pytest.approx(2.6 * 0.9),
                                               "fov_deg": 46.0}
    dataset = sdf.SdfDataset(out)
    maps = dataset.normal_maps(1)
    assert maps.normals.shape == (5, 12, 12, 3) and maps.mask.shape == (5, 12, 12) and maps.normals.dtype == np.float32
    expected = fibonacci_views(5, 2.6 * 0.9, fov_deg=46.0, width=12, height=12)
    np.testing.assert_allclose(maps.poses, np.stack([c.pose.numpy() for c in expected]), atol=1e-12)
    np.testing.assert_allclose(maps.K, expected[0].K.numpy())
    # the shared normalisation makes the small sphere 5/8 of the big one: its maps cover less
    assert dataset.normal_maps(0).mask.sum() > maps.mask.sum() > 0
    plain = sdf.write_sdf_dataset(_two_spheres(), tmp_path / "p", "cm", n_surface=200, n_near=200, n_ball=100,
                                  progress=False)
    with pytest.raises(MorphableError, match="no normal maps"):
        sdf.SdfDataset(plain).normal_maps(0)


def test_cli_options(tmp_path):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    s = trimesh.creation.icosphere(2, radius=0.3)
    s.export(meshes / "a.ply")
    common = ["data", "sdf", str(meshes), "--unit", "m", "--n-surface", "100", "--n-near", "100", "--n-ball", "50"]
    assert main(common + ["--out", str(tmp_path / "o"), "--views", "3", "--map-resolution", "8",
                          "--view-radius", "3.0"]) == 0
    maps = read_normal_maps(tmp_path / "o" / "a_normals.npz")
    assert maps.normals.shape == (3, 8, 8, 3)
    assert np.allclose([float(c.center.norm()) for c in maps.cameras], 3.0)
    assert main(common + ["--out", str(tmp_path / "none"), "--views", "0"]) == 0
    assert not (tmp_path / "none" / "a_normals.npz").exists()
    assert main(common + ["--out", str(tmp_path / "bad"), "--view-radius", "0.5"]) == 2
    assert not (tmp_path / "bad").exists()


def _saved(tmp_path, **changes) -> str:
    maps = render_normal_maps(*(np.asarray(a) for a in (trimesh.creation.icosphere(2, radius=0.5).vertices,
                                                        trimesh.creation.icosphere(2, radius=0.5).faces)),
                              view_cameras(NormalMapSettings(views=2, resolution=8), 0.9))
    arrays = {"normals": maps.normals.astype(np.float16), "mask": maps.mask, "K": maps.K, "poses": maps.poses}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "x_normals.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("change, message", [
    ({"mask": None}, "missing mask"),
    ({"mask": np.zeros((2, 8, 7), bool)}, "'mask' must be bool"),
    ({"normals": np.full((2, 8, 8, 3), np.nan, np.float32)}, "NaN"),
    ({"normals": np.ones((2, 8, 8, 3), np.float32)}, "unit length"),
    ({"poses": np.tile(np.diag([1.0, 1.0, -1.0, 1.0]), (2, 1, 1))}, "rigid"),
    ({"K": np.array([[10.0, 1.0, 3.5], [0.0, 10.0, 3.5], [0.0, 0.0, 1.0]])}, "intrinsics"),
    ({"poses": np.zeros((3, 4, 4))}, "'poses'"),
])
def test_reader_rejects_broken_files(tmp_path, change, message):
    path = _saved(tmp_path, **change)
    with pytest.raises(MorphableError, match=message) as info:
        read_normal_maps(path)
    assert "x_normals.npz" in str(info.value)


def test_reader_round_trip(tmp_path):
    maps = read_normal_maps(_saved(tmp_path))
    assert isinstance(maps, NormalMaps) and len(maps.cameras) == 2
    assert maps.mask.any() and maps.cameras[0].width == 8
