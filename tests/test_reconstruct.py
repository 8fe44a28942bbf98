"""``morphable reconstruct``: the crop -> volume -> mesh -> photo chain, its pictures, and the CLI's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from morphable.data.voxels import VolumeSpec, VoxelSamples, volume_between
from morphable.image.model import VRNPrediction


@pytest.fixture(scope="module")
def photos(tiny_photos):
    from morphable.data.photos import PhotoDataset

    return PhotoDataset(tiny_photos)


class GroundTruthVolumes:
    """A stand-in for a trained VRN model that predicts each photo's voxelised ground truth (so the test
    checks the geometry of the pipeline, not a network's accuracy)."""

    variant, chunk = "plain", 8

    def __init__(self, dataset, indices, spec):
        self.spec, self.samples = spec, VoxelSamples(dataset, indices, spec)

    def target(self, k: int) -> np.ndarray:
        item = self.samples[k]
        return volume_between(torch.from_numpy(item["front"]), torch.from_numpy(item["back"]), self.spec.depth).numpy()

    def predict(self, crops) -> VRNPrediction:
        assert len(crops) == len(self.samples)
        return VRNPrediction(np.stack([self.target(k) for k in range(len(crops))]), None)


def test_a_reconstructed_mesh_projects_onto_the_face_it_came_from(photos):
    """The ground-truth volume's mesh, mapped back to the photo, covers the pixels where the target volume
    has a surface (the crop's footprint mapped to the photo) with IoU >= 0.8, lies on the rendered head, and
    has the ground truth's depth at the visible landmarks."""
    from morphable.data.voxels import camera_to_volume, crop_to_photo, volume_to_crop
    from morphable.image.align import apply_transform
    from morphable.image.reconstruct import reconstruct_photos
    from morphable.render.overlay import pixel_frame_mask

    spec = VolumeSpec(64, 64)
    indices = [int(i) for i in photos.indices("test")]
    model = GroundTruthVolumes(photos, indices, spec)
    results = reconstruct_photos(model, [photos.image(i) for i in indices],
                                 [photos.annotations["landmarks_2d"][i] for i in indices])
    for k, (i, result) in enumerate(zip(indices, results)):
        photo = photos.image(i)
        H, W = photo.shape[:2]
        covered = pixel_frame_mask(result.vertices, result.faces, W, H)
        jj, ii = np.meshgrid(np.arange(W), np.arange(H))
        crop = np.rint(apply_transform(result.crop_matrix, np.stack([jj.ravel(), ii.ravel()], 1))).astype(int)
        inside = ((crop >= 0) & (crop < spec.size)).all(1)
        footprint = np.zeros(H * W, dtype=bool)
        footprint[inside] = model.target(k).any(axis=0)[crop[inside, 1], crop[inside, 0]]
        footprint = footprint.reshape(H, W)
        iou = (covered & footprint).sum() / (covered | footprint).sum()
        assert iou >= 0.8, (i, iou)
        assert (covered & photos.mask(i)).sum() >= 0.95 * covered.sum()  # it lies on the rendered head
        # depth: at each visible landmark's pixel the mesh's nearest surface is the landmark's own depth in the
        # photo frame (camera -> volume -> crop -> photo maps of the ground truth)
        a = photos.annotations
        z_ref = float(a["landmarks_3d"][i][:, 2].mean())
        expected = crop_to_photo(volume_to_crop(camera_to_volume(a["landmarks_3d"][i], a["K"][i], result.crop_matrix,
                                                                 z_ref, spec), spec), result.crop_matrix)
        gaps = []
        for j in np.flatnonzero(a["landmark_visible"][i]):
            near = np.linalg.norm(result.vertices[:, :2] - expected[j, :2], axis=1) < 1.0
            if near.any():
                gaps.append(abs(result.vertices[near, 2].min() - expected[j, 2]))
        assert len(gaps) > 20 and np.median(gaps) < 1.5, (i, np.median(gaps))
        assert result.colours.shape == (len(result.vertices), 3) and result.colours.dtype == np.uint8


def test_overlay_and_slices_pictures(photos):
    from morphable.image.reconstruct import reconstruct_photos, slices_picture
    from morphable.render.overlay import overlay_mesh, pixel_frame_mask

    spec = VolumeSpec(64, 64)
    i = int(photos.indices("test")[0])
    model = GroundTruthVolumes(photos, [i], spec)
    photo = photos.image(i)
    result = reconstruct_photos(model, [photo], [photos.annotations["landmarks_2d"][i]])[0]
    picture = overlay_mesh(photo, result.vertices, result.faces, alpha=1.0, colour=(1.0, 1.0, 1.0))
    covered = pixel_frame_mask(result.vertices, result.faces, photo.shape[1], photo.shape[0])
    np.testing.assert_array_equal(picture[~covered], photo[~covered])
    grey = picture[covered].astype(float)
    assert np.allclose(grey[:, 0], grey[:, 1]) and grey.mean() > 0.5 * 255  # outward normals face the light
    sheet = slices_picture(result.volume)
    assert sheet.shape == (3 * 64, 6 * 64) and sheet.dtype == np.uint8 and sheet.max() == 255


def test_an_empty_volume_is_reported_for_that_photo_only(photos):
    from morphable.errors import MorphableError
    from morphable.image.reconstruct import reconstruct_photos

    spec = VolumeSpec(64, 64)
    indices = [int(i) for i in photos.indices("test")[:2]]
    model = GroundTruthVolumes(photos, indices, spec)
    full = model.predict

    def first_empty(crops):
        prediction = full(crops)
        prediction.volume[0] = 0.0
        return prediction

    model.predict = first_empty
    results = reconstruct_photos(model, [photos.image(i) for i in indices],
                                 [photos.annotations["landmarks_2d"][i] for i in indices])
    assert isinstance(results[0], MorphableError) and "empty" in str(results[0])
    assert not isinstance(results[1], MorphableError)


@pytest.fixture(scope="module")
def guided_run(tiny_photos, tmp_path_factory):
    from morphable.config import PRESETS
    from morphable.experiment import train

    config = PRESETS["vrn-guided-cpu"]()
    config.model.size, config.model.depth, config.model.features, config.model.landmark_features = 32, 32, 16, 8
    config.train.epochs, config.train.lr = 2, 2e-3
    config.data.path = str(tiny_photos)
    run = tmp_path_factory.mktemp("vrn") / "run"
    train(config, run, progress=False)
    return run


def _landmark_folder(photos, indices, root):
    from PIL import Image

    images, marks = root / "images", root / "landmarks"
    images.mkdir(parents=True)
    for i in indices:
        stem = f"photo{i}"
        Image.fromarray(photos.image(i)).save(images / f"{stem}.png")
        (marks / stem).mkdir(parents=True)
        (marks / stem / "landmarks.json").write_text(
            json.dumps({"landmarks": photos.annotations["landmarks_2d"][i].tolist()}))
    return images, marks


def test_reconstruct_cli_writes_meshes_pictures_and_landmarks(guided_run, photos, tmp_path, capsys):
    from morphable.cli import main
    from morphable.io import read_mesh

    indices = [int(i) for i in photos.indices("test")]
    images, marks = _landmark_folder(photos, indices, tmp_path)
    (marks / f"photo{indices[-1]}" / "landmarks.json").unlink()  # one photo without landmarks: reported, skipped
    out = tmp_path / "out"
    assert main(["reconstruct", str(guided_run), str(images), "--landmarks-from", str(marks), "--out", str(out),
                 "--batch", "2"]) == 0
    captured = capsys.readouterr()
    assert f"photo{indices[-1]}" in captured.err and "not found" in captured.err
    assert f"{len(indices) - 1} of {len(indices)} photo(s) reconstructed" in captured.out
    for i in indices[:-1]:
        folder = out / f"photo{i}"
        mesh = read_mesh(folder / "mesh.ply")
        assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        for name in ("overlay.png", "slices.png", "reconstruction.json"):
            assert (folder / name).is_file()
        predicted = np.asarray(json.loads((folder / "landmarks.json").read_text())["landmarks"])
        assert predicted.shape == (68, 2) and np.isfinite(predicted).all()
    assert not (out / f"photo{indices[-1]}").exists()


def test_reconstruct_cli_refuses_bad_input_in_one_line(guided_run, photos, tmp_path, capsys):
    from morphable.cli import main

    i = int(photos.indices("test")[0])
    images, marks = _landmark_folder(photos, [i], tmp_path)
    (marks / f"photo{i}" / "landmarks.json").write_text(json.dumps({"landmarks": [[0, 0]] * 5}))
    out = tmp_path / "out"
    assert main(["reconstruct", str(guided_run), str(images), "--landmarks-from", str(marks), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "68 finite (x, y) pairs" in err and "could be reconstructed" in err
    assert not out.exists()  # nothing half-written
    not_a_run = tmp_path / "missing"
    assert main(["reconstruct", str(not_a_run), str(images), "--landmarks-from", str(marks), "--out", str(out)]) == 2
    assert str(not_a_run) in capsys.readouterr().err
