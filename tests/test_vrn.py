"""VRN: voxel targets (analytic volumes, naive loops, alignment under augmentation), volume -> mesh, the
networks (shapes, receptive field, batch invariance, overfitting), heatmaps, and the NME protocol."""

import numpy as np
import pytest
import torch
import trimesh

from morphable.data.voxels import (IBUG_MIRROR, Augmentation, VolumeSpec, VoxelSamples, _column_hits, back_depth,
                                   camera_to_volume, front_depth, gt_face_points, sample_frame, volume_between,
                                   voxelise)
from morphable.errors import MorphableError
from morphable.image.volume_mesh import volume_to_mesh
from morphable.mesh.components import largest_component

SPEC = VolumeSpec(32, 32, 1.0)


def _sphere(radius=9.0, centre=(15.3, 15.7, 16.2), subdivisions=4):
    m = trimesh.creation.icosphere(subdivisions, radius=radius)
    return m.vertices + np.array(centre), m.faces


def test_inside_and_between_fills_match_a_spheres_and_a_boxs_analytic_volume():
    v, f = _sphere()
    inside = voxelise(v, f, SPEC, "inside")
    # voxel centres inside the polyhedron: within one voxel layer of the analytic ball's count
    shell = 4 * np.pi * 9.0 ** 2
    assert abs(inside.sum() - 4 / 3 * np.pi * 9.0 ** 3) < shell
    assert (voxelise(v, f, SPEC, "between") == inside).mean() > 0.999  # a convex mesh: the same solid
    box = trimesh.creation.box(extents=(10.0, 6.0, 8.0))
    bv = box.vertices + np.array([15.5, 12.5, 14.5])  # faces between voxel centres: exact counts
    assert voxelise(bv, box.faces, SPEC, "inside").sum() == 10 * 6 * 8
    assert voxelise(bv, box.faces, SPEC, "between").sum() == 10 * 6 * 8
    with pytest.raises(MorphableError, match="fill"):
        voxelise(bv, box.faces, SPEC, "solid")


def test_front_and_back_depths_equal_a_naive_loop_over_crossings():
    rng = np.random.default_rng(0)
    v, f = _sphere(7.0, (12.2, 14.1, 15.3), 2)
    v = v + rng.normal(0, 0.4, v.shape)  # a bumpy, non-convex surface
    pixel, k = _column_hits(v, f, 32)
    naive_front, naive_back = np.full(32 * 32, np.inf), np.full(32 * 32, -np.inf)
    for p, depth in zip(pixel, k):
        naive_front[p] = min(naive_front[p], depth)
        naive_back[p] = max(naive_back[p], depth)
    front, back = front_depth(v, f, 32).ravel(), back_depth(v, f, 32).ravel()
    seen = np.isfinite(naive_front)
    assert (np.isfinite(front) == seen).mean() > 0.99  # pixel centres on an edge may go either way
    both = seen & np.isfinite(front)
    np.testing.assert_allclose(front[both], naive_front[both], atol=1e-4)
    np.testing.assert_allclose(back[both], naive_back[both], atol=1e-4)


def test_volume_to_mesh_of_a_voxelised_sphere_is_within_one_voxel_of_it():
    v, f = _sphere()
    mesh_v, mesh_f = volume_to_mesh(voxelise(v, f, SPEC, "inside").astype(np.float32), SPEC)
    radius = np.linalg.norm(mesh_v - [15.3, 15.7, 16.2 - SPEC.depth / 2], axis=1)
    assert np.abs(radius - 9.0).max() < 1.0
    normals = trimesh.Trimesh(mesh_v, mesh_f, process=False).face_normals
    outward = (normals * (mesh_v[mesh_f].mean(axis=1) - [15.3, 15.7, 16.2 - SPEC.depth / 2])).sum(axis=1)
    assert (outward > 0).mean() > 0.99  # faces wound outwards in the crop frame
    with pytest.raises(MorphableError, match="empty"):
        volume_to_mesh(np.zeros(SPEC.shape, np.float32), SPEC)


def test_largest_component_removes_an_injected_blob():
    v, f = _sphere()
    blob_v, blob_f = _sphere(2.0, (3.0, 3.0, 3.0), 1)
    vertices = np.concatenate([v, blob_v])
    faces = np.concatenate([f, blob_f + len(v)])
    kept_v, kept_f = largest_component(vertices, faces)
    assert len(kept_v) == len(v) and len(kept_f) == len(f)
    np.testing.assert_allclose(kept_v, v)


def test_ibug_mirror_is_an_involution_that_mirrors_the_template():
    from morphable.image.align import template_landmarks

    assert (IBUG_MIRROR[IBUG_MIRROR] == np.arange(68)).all()
    t = template_landmarks(96, 0.5)
    mirrored = np.column_stack([95 - t[:, 0], t[:, 1]])[IBUG_MIRROR]
    assert np.abs(mirrored - t).max() < 3.0  # the ICT template is nearly symmetric: pairs land on each other
    assert np.abs(np.column_stack([95 - t[:, 0], t[:, 1]]) - t).max() > 20  # without the permutation they do not


@pytest.fixture(scope="module")
def photos(tiny_photos):
    from morphable.data.photos import PhotoDataset

    return PhotoDataset(tiny_photos)


def test_augmentation_keeps_image_target_and_landmarks_aligned(photos):
    spec = VolumeSpec(64, 64)
    indices = photos.indices("train")[:8]
    aug = Augmentation(flip_probability=0.5)
    samples = VoxelSamples(photos, indices, spec, augment=True, seed=5, augmentation=aug)
    flips = 0
    for k, i in enumerate(indices):
        item = samples[k]
        J, flip, _ = aug.sample(np.random.default_rng([5, 0, int(i)]), spec.size)
        flips += flip
        A = J @ sample_frame(photos, int(i), spec)[0]
        points = camera_to_volume(photos.annotations["landmarks_3d"][i], photos.annotations["K"][i], A,
                                  sample_frame(photos, int(i), spec)[1], spec)
        order = IBUG_MIRROR if flip else np.arange(68)
        np.testing.assert_allclose(item["landmarks"], points[order, :2], atol=1e-3)
        visible = item["visible"] & (item["landmarks"] >= 0).all(1) & (item["landmarks"] < 63).all(1)
        gaps = []
        for j in np.nonzero(visible)[0]:
            x, y = np.clip(np.rint(item["landmarks"][j]).astype(int), 1, 62)
            if np.isfinite(item["front"][y - 1:y + 2, x - 1:x + 2]).all():  # off the silhouette
                gaps.append(abs(item["front"][y, x] - points[order][j, 2]))
        # the target's surface lies at the landmarks (rounded pixels on sloped skin; lashes / lids a few in front)
        assert len(gaps) >= 10 and np.median(gaps) < 2.0 and np.mean(np.array(gaps) < 5.0) > 0.8
    assert flips > 0
    again = VoxelSamples(photos, indices, spec, augment=True, seed=5, augmentation=aug)
    np.testing.assert_array_equal(again[3]["image"], samples[3]["image"])
    again.set_epoch(1)
    assert not np.array_equal(again[3]["image"], samples[3]["image"])


def test_gt_face_points_are_on_the_outer_surface_and_the_voxel_floor_is_small(photos):
    from morphable.image.evaluate import nme_in_crop

    spec = VolumeSpec(64, 64)
    i = int(photos.indices("test")[0])
    item = VoxelSamples(photos, [i], spec)[0]
    volume = volume_between(torch.from_numpy(item["front"]), torch.from_numpy(item["back"]), spec.depth).numpy()
    vertices, _ = volume_to_mesh(volume, spec)
    points, eyes = gt_face_points(photos, i, spec)
    assert 0.6 * 6706 < len(points) < 6706
    assert nme_in_crop(vertices, points, eyes) < 0.04


def test_nme_of_a_rigid_motion_is_zero_and_a_sphere_scaling_gives_its_formula():
    from morphable.image.evaluate import nme_in_crop

    rng = np.random.default_rng(1)
    gt = rng.normal(0, 10, (400, 3))
    angle = np.radians(2.0)
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    eyes = gt[:2]
    assert nme_in_crop(gt @ R.T + [0.3, -0.2, 0.1], gt, eyes) < 1e-6
    sphere = trimesh.creation.icosphere(5, radius=1.0).vertices
    eyes = np.array([[-0.5, 0, 0], [0.5, 0, 0]])  # inter-ocular 1
    # a dense sphere of radius 1.1 around a GT sphere of radius 1: every GT point is 0.1 from it
    assert nme_in_crop(1.1 * sphere, sphere, eyes) == pytest.approx(0.1, abs=2e-3)


def test_mean_face_placement_recovers_a_scaled_orthographic_pose():
    from morphable.image.baselines import place_by_landmarks

    rng = np.random.default_rng(2)
    face = rng.normal(0, 5, (300, 3))
    marks = np.arange(68)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    s, t = 1.7, np.array([40.0, 50.0])
    projected = s * face[marks] @ R[:2].T + t
    placed = place_by_landmarks(face, marks, projected)
    expected = np.column_stack([s * face @ R[:2].T + t, s * (face - face[marks].mean(0)) @ R[2]])
    np.testing.assert_allclose(placed, expected, atol=1e-8)


def test_linear_landmark_fit_recovers_an_in_span_shape_and_its_pose():
    """Noise-free landmarks of a shape inside a 10-mode model, under a scaled-orthographic pose: the fit's placed
    mesh matches the true placed mesh far better than the placed mean does, and a large sigma (the prior
    dominates) gives back the mean."""
    from morphable.image.baselines import fit_linear_to_landmarks, place_by_landmarks

    rng = np.random.default_rng(3)
    mean, basis = rng.normal(0, 5, (300, 3)), rng.normal(0, 1, (10, 300, 3))
    marks = rng.choice(300, 68, replace=False)
    truth = mean + np.tensordot(rng.normal(size=10), basis, axes=1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    projected = 1.3 * truth[marks] @ R[:2].T + np.array([30.0, 20.0])
    expected = place_by_landmarks(truth, marks, projected)
    fitted = fit_linear_to_landmarks(mean, basis, marks, projected, sigma=1e-3, iterations=10)
    mean_error = np.abs(place_by_landmarks(mean, marks, projected) - expected).mean()
    assert np.abs(fitted - expected).mean() < 1e-3 * mean_error
    prior_only = fit_linear_to_landmarks(mean, basis, marks, projected, sigma=1e6)
    np.testing.assert_allclose(prior_only, place_by_landmarks(mean, marks, projected), atol=1e-6)


def test_heatmap_peaks_recover_landmarks_to_subpixel_accuracy():
    from morphable.image.heatmaps import gaussian_heatmaps, heatmap_peaks

    rng = np.random.default_rng(3)
    points = torch.from_numpy(rng.uniform(8, 56, (2, 68, 2)))
    maps = gaussian_heatmaps(points, 32, 1.0, 2.0)
    assert maps.shape == (2, 68, 32, 32)
    assert (heatmap_peaks(maps, 2.0) - points).abs().max() < 1e-6  # exact for a Gaussian's log
    i, j = 10, 20
    naive = np.exp(-((j - points[0, 0, 0].item() / 2) ** 2 + (i - points[0, 0, 1].item() / 2) ** 2) / 2)
    assert maps[0, 0, i, j].item() == pytest.approx(naive, rel=1e-9)


def test_residual_module_receptive_field_and_hourglass_shapes():
    from morphable.image.hourglass import Hourglass, ResidualModule
    from morphable.image.vrn import VolumeNetwork, hourglass_levels

    block = ResidualModule(16, 16).eval()
    x = torch.randn(1, 16, 11, 11, generator=torch.Generator().manual_seed(0)).requires_grad_()
    block(x)[0, :, 5, 5].sum().backward()
    reached = x.grad.abs().sum(1)[0] > 0
    assert reached[4:7, 4:7].all() and reached.sum() == 9  # one 3x3 convolution: radius 1, no more
    hourglass = Hourglass(8, 3).eval()
    x = torch.randn(1, 8, 24, 24, generator=torch.Generator().manual_seed(1)).requires_grad_()
    out = hourglass(x)
    assert out.shape == x.shape
    out[0, :, 0, 0].sum().backward()
    assert x.grad.abs().sum(1)[0, -1, -1] > 0  # the 3 x 3 bottom sees the whole 24 x 24 input
    assert hourglass_levels(96) == 3 and hourglass_levels(192) == 4  # bottoms of 6 x 6
    net = VolumeNetwork(3, 16, 2, hourglass_levels(32), 24).eval()
    images = torch.rand(3, 3, 32, 32)
    batched = net(images)
    assert batched.shape == (3, 24, 32, 32)
    single = torch.cat([net(images[k:k + 1]) for k in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["plain", "guided", "multitask"])
def test_a_tiny_vrn_overfits_one_photo(variant, photos):
    from morphable.config import PRESETS
    from morphable.image.method import VRNMethod, volume_iou

    torch.manual_seed(0)
    config = PRESETS["vrn-cpu"]()
    config.model.variant = variant
    config.model.size, config.model.depth, config.model.features, config.model.landmark_features = 32, 32, 16, 8
    config.train.lr = 2e-3
    method = VRNMethod(config, "cpu")
    item = VoxelSamples(photos, photos.indices("train")[:1], method.spec)[0]
    batch = {key: torch.as_tensor(np.asarray(value))[None] for key, value in item.items() if key != "index"}
    first = method.training_step(batch, 0)
    for step in range(1, 120):
        last = method.training_step(batch, step)
    assert last["bce"] < 0.3 * first["bce"]
    if variant != "plain":
        assert last["heatmap"] < first["heatmap"]
    target = volume_between(batch["front"], batch["back"], method.spec.depth)
    method_networks = method.networks
    for net in method_networks.values():
        net.train()  # batch statistics of the one photo (eval-mode statistics lag 120 steps behind)
    with torch.no_grad():
        if variant == "plain":
            logits = method_networks["volume"](batch["image"])
        elif variant == "guided":
            from morphable.image.heatmaps import gaussian_heatmaps

            logits = method_networks["volume"](torch.cat([batch["image"],
                                                          gaussian_heatmaps(batch["landmarks"], 32)], 1))
        else:
            logits = method_networks["multitask"](batch["image"])[0]
    assert volume_iou(logits, target).item() > 0.9


def test_the_learning_rates_follow_the_config_and_drop_at_the_configured_epoch():
    from morphable.config import PRESETS
    from morphable.image.method import VRNMethod

    config = PRESETS["vrn-guided-cpu"]()
    config.model.size, config.model.depth, config.model.features, config.model.landmark_features = 32, 32, 16, 8
    config.model.lr_drop_epoch = 2
    method = VRNMethod(config, "cpu")
    assert list(method.optimizers()) == ["landmarks", "volume"] and config.model.landmark_lr_scale == 2.5
    rates = []
    for _ in range(4):
        rates.append([opt.param_groups[0]["lr"] for opt in method.optimizers().values()])
        for opt in method.optimizers().values():
            opt.step()  # no gradients: a no-op that keeps the scheduler's step order
        for spec in method.schedulers().values():
            spec.scheduler.step()
    before, after = [2.5e-4, 1e-4], [pytest.approx(2.5e-5), pytest.approx(1e-5)]
    assert rates == [before, before, after, after]
    assert type(next(iter(method.optimizers().values()))).__name__ == "RMSprop"


def test_a_vrn_run_is_reproducible_for_its_seed_whatever_the_global_random_state(tiny_photos, tmp_path):
    from safetensors.numpy import load_file

    from morphable.config import PRESETS
    from morphable.experiment import train

    weights = []
    for k, noise in enumerate((3, 11)):
        torch.rand(noise)  # another test, or the user's code, drew random numbers before
        config = PRESETS["vrn-cpu"]()
        config.model.size, config.model.depth, config.model.features = 32, 32, 8
        config.train.epochs, config.data.path = 1, str(tiny_photos)
        train(config, tmp_path / f"run{k}", progress=False)
        weights.append(load_file(str(tmp_path / f"run{k}" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
