"""Synthetic photos (``morphable data photos``): determinism, ground truth checked against independent
references (a Moller-Trumbore ray cast for landmark visibility, a per-row coverage loop for the mask),
projections, identity splits, one-line errors."""

import numpy as np
import pytest

from conftest import ICT_FOLDER, ICT_NPZ, require

RES = 64


@pytest.fixture(scope="module")
def ict_model():
    from morphable.data.photos import load_photo_model

    return load_photo_model(require(ICT_NPZ), require(ICT_FOLDER))[0]


@pytest.fixture(scope="module")
def dataset(ict_model, tmp_path_factory):
    from morphable.data.photos import PhotoDataset, PhotoSettings, write_photo_dataset

    root = tmp_path_factory.mktemp("photos") / "ds"
    write_photo_dataset(ict_model, root, PhotoSettings(count=10, identities=5, resolution=RES, seed=3),
                        progress=False)
    return PhotoDataset(root)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(ict_model, dataset, tmp_path):
    from morphable.data.photos import PhotoSettings, write_photo_dataset

    again = write_photo_dataset(ict_model, tmp_path / "again", PhotoSettings(10, 5, RES, seed=3), progress=False)
    first, second = _files(dataset.root), _files(again)
    assert list(first) == list(second) and len(first) == 3 * 10 + 5 + 4  # images, masks, meshes; textures; 4 files
    assert [k for k in first if first[k] != second[k]] == []
    other = write_photo_dataset(ict_model, tmp_path / "other", PhotoSettings(2, 1, RES, seed=4), progress=False)
    third = _files(other)
    assert all(first[k] != third[k] for k in third if k.parts[0] == "images")  # negative control: another seed


def _ray_cast_visible(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, tolerance: float) -> np.ndarray:
    """Moller-Trumbore from the camera centre (the origin) towards each point ``p`` against every triangle:
    visible when no hit lies more than ``tolerance`` in front of it in depth, ``t z < z - tolerance``."""
    v0, v1, v2 = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    visible = np.empty(len(points), dtype=bool)
    for i, p in enumerate(points):
        pvec = np.cross(p, e2)
        det = (e1 * pvec).sum(axis=1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = -v0
        u = (tvec * pvec).sum(axis=1) * inv
        qvec = np.cross(tvec, e1)
        v = (p * qvec).sum(axis=1) * inv
        t = (e2 * qvec).sum(axis=1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6) & (t * p[2] < p[2] - tolerance)
        visible[i] = not hit.any()
    return visible


def test_landmark_visibility_agrees_with_ray_cast(dataset):
    from morphable.data.photos import OCCLUSION_TOLERANCE_CM

    faces = dataset.faces
    w, h = dataset.resolution
    agree, total, occluded = 0, 0, 0
    for i in range(0, len(dataset), 2):
        lm3 = dataset.annotations["landmarks_3d"][i]
        lm2 = dataset.annotations["landmarks_2d"][i]
        in_image = (lm2[:, 0] >= -0.5) & (lm2[:, 0] < w - 0.5) & (lm2[:, 1] >= -0.5) & (lm2[:, 1] < h - 0.5)
        cast = _ray_cast_visible(lm3, dataset.mesh(i), faces, OCCLUSION_TOLERANCE_CM) & in_image
        stored = dataset.annotations["landmark_visible"][i]
        agree += int((cast == stored).sum())
        total += len(stored)
        occluded += int((~cast).sum())
    assert occluded >= 15  # the poses (yaw up to 90 degrees) hide many landmarks: both classes are tested
    assert agree / total >= 0.99, (agree, total)


def _naive_mask(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixel centres covered by some projected triangle in front of the camera, one image row at a time,
    each row against every triangle whose vertical extent reaches it (no z-buffer)."""
    tri = vertices[faces].astype(np.float64)
    tri = tri[(tri[..., 2] > 1e-6).all(axis=1)]
    uv = tri[..., :2] / tri[..., 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    mask = np.zeros((h, w), dtype=bool)
    cols = np.arange(w, dtype=np.float64)
    for row in range(h):
        sel = uv[(uv[:, :, 1].min(axis=1) <= row) & (uv[:, :, 1].max(axis=1) >= row)]
        for j, u in enumerate(cols):
            a, b, c = sel[:, 0], sel[:, 1], sel[:, 2]
            e0 = (b[:, 0] - a[:, 0]) * (row - a[:, 1]) - (b[:, 1] - a[:, 1]) * (u - a[:, 0])
            e1 = (c[:, 0] - b[:, 0]) * (row - b[:, 1]) - (c[:, 1] - b[:, 1]) * (u - b[:, 0])
            e2 = (a[:, 0] - c[:, 0]) * (row - c[:, 1]) - (a[:, 1] - c[:, 1]) * (u - c[:, 0])
            inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
            mask[row, j] = inside.any()
    return mask


def test_mask_matches_naive_rasterisation_of_stored_mesh(dataset):
    w, h = dataset.resolution
    for i in (0, 7):
        naive = _naive_mask(dataset.mesh(i), dataset.faces, dataset.annotations["K"][i], w, h)
        stored = dataset.mask(i)
        assert naive.sum() > 0.05 * w * h
        iou = (naive & stored).sum() / (naive | stored).sum()
        assert iou >= 0.99, iou


def test_projected_3d_landmarks_and_pose(dataset, ict_model):
    topo = dataset.topology
    for i in range(len(dataset)):
        a = dataset[i]
        mesh = a["mesh"]
        assert np.array_equal(a["landmarks_3d"], mesh[topo["landmarks"]].astype(np.float64))
        projected = a["landmarks_3d"] @ a["K"].T
        assert np.allclose(projected[:, :2] / projected[:, 2:], a["landmarks_2d"], atol=1e-9, rtol=0)
        world = ict_model.vertices(a["shape"], a["expression"])[topo["source_vertex"]]
        camera = world @ a["pose"][:3, :3].T + a["pose"][:3, 3]
        assert np.abs(camera - mesh).max() < 1e-3  # float32 storage of ~100 cm coordinates
        assert a["image"].shape == (RES, RES, 3) and a["mask"].shape == (RES, RES)
    ypr = dataset.annotations["yaw_pitch_roll"]
    assert np.all(np.abs(ypr[:, 0]) <= 90) and np.all(np.abs(ypr[:, 1:]) <= 30)


def test_yaw_turns_the_face_as_documented():
    from morphable.data.photos import rotation_from_euler

    nose = np.array([0.0, 0.0, 1.0])  # out of the face in the model frame
    assert np.allclose(rotation_from_euler(0, 0, 0) @ nose, [0, 0, -1])  # looks into the camera
    assert np.allclose(rotation_from_euler(90, 0, 0) @ nose, [1, 0, 0])  # +yaw: towards the image right
    assert np.allclose(rotation_from_euler(0, 30, 0) @ np.array([0.0, 1.0, 0.0]),
                       [0, -np.cos(np.radians(30)), -np.sin(np.radians(30))])


def test_splits_are_disjoint_by_identity(dataset):
    from morphable.data.photos import identity_splits

    splits = dataset.info["splits"]
    ids = [set(splits[name]["identities"]) for name in ("train", "val", "test")]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(range(5))
    for name, members in zip(("train", "val", "test"), ids):
        assert set(dataset.annotations["identity"][dataset.indices(name)]) <= members
    assert sum(len(dataset.indices(n)) for n in ("train", "val", "test")) == len(dataset)
    big = identity_splits(100, 0)
    assert [len(big[n]) for n in ("train", "val", "test")] == [80, 10, 10]


def test_contact_sheet_and_albedo_textures(dataset):
    from PIL import Image

    with Image.open(dataset.root / "contact_sheet.png") as sheet:
        assert sheet.size == (4 * RES * 4, 3 * (RES * 4 + 14))
    textures = sorted((dataset.root / "albedo").glob("*.png"))
    assert [p.stem for p in textures] == [f"{j:04d}" for j in range(5)]


def test_npz_bytes_do_not_depend_on_time(tmp_path, monkeypatch):
    import time

    from morphable.data.photos import write_npz_deterministic

    arrays = {"a": np.arange(5.0), "b": np.array(["x", "yz"])}
    write_npz_deterministic(tmp_path / "1.npz", arrays)
    monkeypatch.setattr(time, "time", lambda: 2e9)
    write_npz_deterministic(tmp_path / "2.npz", arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with np.load(tmp_path / "1.npz", allow_pickle=False) as data:
        assert np.array_equal(data["a"], arrays["a"]) and list(data["b"]) == ["x", "yz"]


def test_one_line_errors(tmp_path, capsys):
    from morphable.cli import main

    def error(argv, fragment):
        assert main(["data", "photos", "--out", str(tmp_path / "out")] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, err
        assert not (tmp_path / "out").exists()

    npz = str(require(ICT_NPZ))
    error(["--model", npz], "no UVs")
    error(["--model", npz, "--count", "3", "--identities", "4"], "--identities must be in 1..--count")
    error(["--model", npz, "--resolution", "8"], "--resolution")
    error(["--model", str(tmp_path / "missing.npz")], "not found")


def test_boxes_holding_matches_brute_force():
    from morphable.data.photos import _boxes_holding

    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 64, (3000, 2))
    hi = lo + rng.exponential(2.0, (3000, 2))
    hi[:20] += 25  # boxes larger than a cell take the brute-force path
    lo[30:40] = np.inf  # boxes of triangles behind the camera hold nothing
    points = np.concatenate([rng.uniform(0, 64, (60, 2)), lo[:5], hi[20:25]])  # box corners are inside
    point, box = _boxes_holding(points, lo, hi)
    brute = np.nonzero(((lo[None] <= points[:, None]) & (points[:, None] <= hi[None])).all(axis=-1))
    assert sorted(zip(point.tolist(), box.tolist())) == sorted(zip(*(b.tolist() for b in brute)))
    assert len(point) > 100


def test_any_model_with_uvs_and_landmarks(ict_model, tmp_path):
    """A model that is not ICT-FaceKit's full head (its outer skin alone) renders all its faces, textured."""
    from morphable.data.photos import PhotoDataset, PhotoSettings, write_photo_dataset

    skin = ict_model.subset_vertices(11248).truncate(n_shape=10)
    ds = PhotoDataset(write_photo_dataset(skin, tmp_path / "skin", PhotoSettings(2, 1, 48, seed=1), progress=False))
    assert ds.info["vertices"] == 11248 and len(ds.faces) == len(skin.faces)
    assert list(ds.topology["part_names"]) == ["skin"] and ds.topology["textured"].all()
    assert ds.mask(0).sum() > 100 and ds[1]["shape"].shape == (10,)


def test_multiview_sets_share_identity_expression_and_a_head_fixed_light(ict_model, tmp_path):
    from morphable.data.photos import (MULTIVIEW_YAW, PhotoDataset, PhotoSettings, rotation_from_euler,
                                       write_photo_dataset)
    from morphable.errors import MorphableError

    views = 5
    root = write_photo_dataset(ict_model, tmp_path / "mv", PhotoSettings(10, 2, 48, 3, views=views), progress=False)
    ds = PhotoDataset(root)
    a = ds.annotations
    assert ds.info["views"] == views
    np.testing.assert_array_equal(a["view_set"], np.repeat([0, 1], views))
    np.testing.assert_array_equal(a["view"], np.tile(np.arange(views), 2))
    for g in range(2):
        rows = np.arange(g * views, (g + 1) * views)
        assert len(set(a["identity"][rows])) == 1 and np.ptp(a["expression"][rows], axis=0).max() == 0
        np.testing.assert_allclose(np.diff(a["yaw_pitch_roll"][rows, 0]), 2 * MULTIVIEW_YAW / (views - 1))
        assert np.ptp(a["yaw_pitch_roll"][rows, 1:], axis=0).max() == 0
        # the directional part of the light, band 1 = c1 (y, z, x) * strength, turned back into the head frame
        head = [rotation_from_euler(*a["yaw_pitch_roll"][i]).T @ a["sh"][i][[3, 1, 2], 0] for i in rows]
        np.testing.assert_allclose(head, np.repeat(head[:1], views, axis=0), atol=1e-12)
        assert np.ptp(a["sh"][rows, 0, 0]) == 0  # one ambient term
    assert len(set(a["identity"])) == 2 and not np.allclose(a["expression"][0], a["expression"][views])
    with pytest.raises(MorphableError, match="--views must be at least 1 and divide --count"):
        PhotoSettings(10, 2, 48, 3, views=3)
