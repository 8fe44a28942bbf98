"""HRN's coarse level (image/coarse.py): the rotation against the photo generator's, the reference placement,
decoding against a float64 loop, and a photo re-rendered from its own ground-truth coefficients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ICT_FOLDER, ICT_NPZ, require
from morphable.data.photos import PhotoDataset, load_photo_model, rotation_from_euler


@pytest.fixture(scope="module")
def coarse(tiny_photos):
    from morphable.data.albedo_space import AlbedoSpace, read_albedo_textures
    from morphable.image.coarse import coarse_face_from_photos

    dataset = PhotoDataset(tiny_photos)
    model = load_photo_model(require(ICT_NPZ), require(ICT_FOLDER))[0]
    ids = list(range(json.loads((tiny_photos / "dataset.json").read_text())["identities"]))
    space = AlbedoSpace.fit(read_albedo_textures(tiny_photos / "albedo", ids, 256), len(ids) - 1)
    return dataset, coarse_face_from_photos(dataset, model, space, size=64, fill=0.65), space


def test_the_rotation_is_the_photo_generators():
    from morphable.image.coarse import euler_rotation

    angles = np.random.default_rng(0).uniform(-90, 90, (5, 3))
    ours = euler_rotation(torch.from_numpy(np.radians(angles))).numpy()
    for a, R in zip(angles, ours):
        np.testing.assert_allclose(R, rotation_from_euler(*a), atol=1e-12)


def rms_spread(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def test_zero_coefficients_put_the_mean_face_on_the_crop_template(coarse):
    from morphable.image.align import template_landmarks

    _, face, _ = coarse
    decoded = face(torch.zeros(1, face.layout.size))
    marks, template = decoded.landmarks[0].double().numpy(), template_landmarks(64, 0.65)
    np.testing.assert_allclose(marks.mean(axis=0), template.mean(axis=0), atol=0.3)  # perspective: not exact
    assert abs(rms_spread(marks) / rms_spread(template) - 1) < 0.03
    image, mask = face.render(decoded, antialias=False)
    assert image.shape == (1, 64, 64, 3) and 0.2 < mask.mean() < 0.9


def test_decoding_equals_a_float64_loop_and_every_group_gets_a_gradient(coarse):
    from morphable.image.coarse import euler_rotation

    _, face, _ = coarse
    layout = face.layout
    torch.manual_seed(0)
    c = (0.3 * torch.randn(2, layout.size)).requires_grad_(True)
    decoded = face(c)
    g = {k: v.detach().double() for k, v in layout.split(c).items()}
    basis = face.basis.double().view(-1, len(face.mean), 3)
    for b in range(2):
        shape = face.mean.double().clone()
        for k in range(len(basis)):
            shape += torch.cat([g["identity"][b], g["expression"][b]])[k] * basis[k]
        R = euler_rotation(g["rotation"][b:b + 1])[0]
        expected = shape @ R.T + face.t_ref.double() + g["translation"][b] * face.cm
        torch.testing.assert_close(decoded.vertices[b].double(), expected, atol=2e-4, rtol=1e-5)
    image, mask = face.render(decoded)
    (image * mask[..., None]).sum().backward()
    for name, s in layout.slices.items():
        assert c.grad[:, s].abs().sum() > 0, name


def test_a_photo_re_rendered_from_its_ground_truth_coefficients_matches_it(coarse):
    _, face, space = coarse
    dataset = coarse[0]
    a = dataset.annotations
    clean = [i for i in range(len(dataset.ids)) if a["blur_sigma"][i] == 0][:3]
    assert clean
    from morphable.data.albedo_space import read_albedo_textures

    for i in clean:
        R, t = a["pose"][i][:3, :3], a["pose"][i][:3, 3]
        textures = read_albedo_textures(dataset.root / "albedo", [int(a["identity"][i])], 256)
        coefficients = np.concatenate([a["shape"][i], a["expression"][i], space.project(textures)[0],
                                       np.radians(a["yaw_pitch_roll"][i]), np.zeros(3),
                                       (a["sh"][i] - face.light_ref.double().numpy()).ravel()])
        decoded = face(torch.from_numpy(coefficients)[None].float())
        shape = face.shape(torch.from_numpy(a["shape"][i])[None].float(), torch.from_numpy(a["expression"][i])[None].float())
        vertices = shape @ torch.from_numpy(R).float().T + torch.from_numpy(t).float()  # the photo's own pose
        np.testing.assert_allclose(vertices[0].numpy(), dataset.mesh(i), atol=2e-3)  # cm: the generator's mesh
        image, mask = face.render(decoded, vertices, dataset.camera(i), antialias=False)
        photo = dataset.image(i).astype(np.float64) / 255
        both = mask[0].numpy() > 0.5
        assert (both == dataset.mask(i)).mean() > 0.995
        error = np.abs(image[0].detach().numpy() - photo)[both]
        # E|noise| = 0.8 sigma; what is left is 8-bit rounding and the albedo space's box filter (the light
        # alone wrong gives 0.05-0.13)
        assert error.mean() < 0.8 * a["noise_sigma"][i] + 0.005, (error.mean(), a["noise_sigma"][i])


def test_euler_angles_round_trip():
    from morphable.image.coarse import euler_from_rotation, euler_rotation

    angles = np.random.default_rng(3).uniform(-1.5, 1.5, (6, 3))
    for a in angles:
        R = euler_rotation(torch.from_numpy(a)[None])[0].numpy()
        np.testing.assert_allclose(euler_from_rotation(R), a, atol=1e-10)


def test_the_crop_pose_target_puts_the_landmarks_where_the_crop_shows_them(coarse):
    """GT shape and expression with :meth:`CoarseFace.crop_pose` reproject the photo's landmarks into the crop
    (weak perspective: sub-pixel on average at every yaw, 64-px crops)."""
    from morphable.image.align import apply_transform, similarity_transform, template_landmarks

    dataset, face, _ = coarse
    a = dataset.annotations
    landmark_ids = face.landmark_ids.numpy()
    errors = []
    for i in range(8):
        A = similarity_transform(a["landmarks_2d"][i], template_landmarks(64, 0.65))
        alpha, beta = torch.from_numpy(a["shape"][i])[None].float(), torch.from_numpy(a["expression"][i])[None].float()
        shape = face.shape(alpha, beta)[0].double().numpy()
        pose = face.crop_pose(a["pose"][i][:3, :3], a["pose"][i][:3, 3], a["K"][i], A, shape[landmark_ids])
        coefficients = np.zeros(face.layout.size)
        s = face.layout.slices
        coefficients[s["identity"]], coefficients[s["expression"]] = a["shape"][i], a["expression"][i]
        coefficients[s["rotation"]], coefficients[s["translation"]] = pose[:3], pose[3:]
        decoded = face(torch.from_numpy(coefficients)[None].float())
        expected = apply_transform(A, a["landmarks_2d"][i])
        errors.append(np.linalg.norm(decoded.landmarks[0].double().numpy() - expected, axis=1).mean())
    assert max(errors) < 1.0 and np.mean(errors) < 0.5, errors


@pytest.mark.parametrize("augment", [False, True])
def test_hrn_samples_decode_to_their_own_crop(coarse, augment):
    """A sample's target coefficients, decoded and rendered, land on its crop: landmarks sub-pixel on average,
    the render's silhouette on the face mask, the colours close (the albedo space is exact for training
    identities; weak perspective and the crop's resampling remain)."""
    from morphable.data.voxels import Augmentation
    from morphable.image.hrn_data import HRNSamples

    dataset, face, space = coarse
    samples = HRNSamples(dataset, np.arange(6), face, space, fill=0.65, augment=augment,
                         augmentation=Augmentation(colour=(1.0, 1.0)))
    for k in range(len(samples)):
        item = samples[k]
        decoded = face(torch.from_numpy(item["coefficients"])[None])
        error = np.linalg.norm(decoded.landmarks[0].numpy() - item["landmarks"], axis=1).mean()
        assert error < 1.0, (k, error)
        image, coverage = face.render(decoded, antialias=False)
        inside = item["valid"] > 0.99
        covered, mask = (coverage[0].numpy() > 0.5) & inside, (item["mask"] > 0.5) & inside
        assert (covered & mask).sum() / (covered | mask).sum() > 0.9
        both = covered & mask
        assert np.abs(image[0].detach().numpy()[both] - item["image"].transpose(1, 2, 0)[both]).mean() < 0.09
