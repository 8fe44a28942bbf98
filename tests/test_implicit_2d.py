"""2D objectives of the implicit models (thesis 4.2.3-4.2.4): the pi-GAN discriminator, R1 against finite
differences, the discriminator step separating real from blurred normal maps (and failing when the labels are
swapped), the generator's 2D terms, the stage schedule as data, and an exact resume across a stage boundary.

Ground-truth maps here are rasterised from the two spheres of ``sdf_dir`` (in its normalised frame), so these
tests do not depend on ``morphable data sdf``'s own maps."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SPHERE_RADII
from morphable.config import PRESETS
from morphable.data.sdf import SdfDataset, SubsampleCounts
from morphable.errors import MorphableError
from morphable.implicit.discriminator import NormalMapDiscriminator, channels_first, width
from morphable.implicit.experiment import NormalMapViews
from morphable.implicit.method import ImplicitMethod, loss_weights
from morphable.implicit.stages import PLANE_REGULARISERS, TWO_D, parse_stages, stage_index, thesis_schedule
from morphable.io import load_weights
from morphable.render.camera import fibonacci_views
from morphable.render.raster import rasterize
from morphable.train import BEST_CHECKPOINT, LAST_CHECKPOINT, LoopConfig, fit

CPU = torch.device("cpu")
MAP, RENDER, VIEWS = 16, 8, 6


def tiny_config(stages=(), epochs=4):
    """The CPU full model shrunk: 8 x 8 renders of 16 x 16 maps, one view a step, a narrow discriminator."""
    config = PRESETS["ablation-full"]()
    model = config.model
    model.latent, model.surface_face, model.surface_nonface, model.ball = 8, 32, 16, 16
    model.channels, model.hidden, model.base_channels = 4, 16, 8
    model.views_per_step, model.render_resolution, model.discriminator_width_divisor = 1, RENDER, 16
    model.r1_every = 2
    model.stages = [dict(s) for s in stages]
    config.train.epochs, config.train.batch_size = epochs, 2
    return config


def sphere_maps(radius, n_views=VIEWS, size=MAP, blur=False):
    """Rasterised camera-frame normal maps of a sphere centred at the origin: (normals, mask, K, pose)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    cameras = fibonacci_views(n_views, 2.6, fov_deg=40.0, width=size, height=size)
    renders = [rasterize(sphere.vertices, sphere.faces, c) for c in cameras]
    normals = torch.stack([r.normals for r in renders]).float()
    return (normals.numpy(), torch.stack([r.mask for r in renders]).numpy(),
            torch.stack([c.K for c in cameras]).numpy(), torch.stack([c.pose for c in cameras]).numpy())


@pytest.fixture(scope="module")
def views(sdf_dir):
    """The two spheres of ``sdf_dir`` with their rasterised maps, in the dataset's order and frame."""
    data = SdfDataset(sdf_dir, SubsampleCounts(32, 16, 16), seed=0)
    scale = data.similarities[0].scale
    return data, [sphere_maps(SPHERE_RADII[name] * scale) for name in data.names]


def test_discriminator_size_and_pigan_widths():
    assert [width(r) for r in (256, 128, 64, 32, 16, 8)] == [32, 64, 128, 256, 400, 400]
    small = NormalMapDiscriminator(32, width_divisor=6)
    assert 0.30e6 < sum(p.numel() for p in small.parameters()) < 0.34e6  # DESIGN.md: about 0.32 M
    assert len(small.blocks) == 4  # 32 -> 16 -> 8 -> 4 -> 2, then the 2 x 2 convolution
    assert small(torch.zeros(3, 3, 32, 32)).shape == (3,)
    with pytest.raises(ValueError):
        NormalMapDiscriminator(24)


def test_discriminator_samples_are_independent_and_see_position(float64_default):
    """No batch statistics (R1 needs per-sample gradients); CoordConv makes a shifted map a different input."""
    disc = NormalMapDiscriminator(8, width_divisor=16)
    x = torch.randn(4, 3, 8, 8)
    together = disc(x)
    alone = torch.stack([disc(x[i:i + 1])[0] for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)
    constant = torch.ones(1, 3, 8, 8)  # translation-invariant convolutions alone could not tell these apart
    spot_a, spot_b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    spot_a[..., 2, 2], spot_b[..., 2, 5] = 1.0, 1.0
    with torch.no_grad():
        assert abs(float(disc(spot_a) - disc(spot_b))) > 1e-6 and torch.isfinite(disc(constant)).all()


def test_r1_of_the_discriminator_matches_central_differences(float64_default):
    """``r1_penalty(D(x), x, 2 lambda)`` = ``lambda mean_b |grad_x D(x_b)|^2`` (eq. 4.10, lambda 5) against
    central differences of D over every input value, in float64."""
    from morphable.train.adversarial import r1_penalty

    disc = NormalMapDiscriminator(4, width_divisor=32)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    real = x.clone().requires_grad_(True)
    penalty = r1_penalty(disc(real), real, gamma=2 * 5.0)
    h, grads = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for j in range(x[0].numel()):
            step = torch.zeros_like(x).reshape(2, -1)
            step[:, j] = h
            step = step.reshape_as(x)
            grads.reshape(2, -1)[:, j] = (disc(x + step) - disc(x - step)) / (2 * h)
    expected = 5.0 * grads.square().flatten(1).sum(1).mean()
    assert float(penalty.detach()) == pytest.approx(float(expected), rel=1e-7)
    assert float(expected) > 1e-3  # a real gradient, not a trivial zero


def blurred(maps):
    """3 x 3 box blur of (N, 3, H, W) maps (replicated borders)."""
    return F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _sphere_batch(radii, views_slice):
    maps = [sphere_maps(r, n_views=12, size=RENDER) for r in radii]
    normals = np.concatenate([m[0][views_slice] * m[1][views_slice][..., None] for m in maps])
    return channels_first(torch.as_tensor(normals))


@pytest.mark.parametrize("swapped", [False, True])
def test_discriminator_step_separates_real_from_blurred_maps(swapped):
    """The method's discriminator step trained on sharp (real) vs blurred (fake) sphere maps: held-out sharp
    maps score high and blurred ones low. With the labels swapped (a loss wired backwards) the same check
    must fail, so the test tells the two wirings apart. Without R1 (tested above): lambda 5 on 8 x 8 maps holds
    a discriminator this small near 0.5 for hundreds of steps."""
    config = tiny_config()
    config.model.lr_discriminator, config.model.r1_lambda = 0.1, 0.0
    method = ImplicitMethod(config, 2, CPU)
    train_real = _sphere_batch([0.45, 0.6, 0.75], slice(0, 8))
    test_real = _sphere_batch([0.5, 0.7], slice(8, 12))
    real, fake = (blurred(train_real), train_real) if swapped else (train_real, blurred(train_real))
    for step in range(100):
        method._discriminator_step(fake, real, step)
    with torch.no_grad():
        p_real = torch.sigmoid(method.discriminator(test_real)).mean()
        p_blur = torch.sigmoid(method.discriminator(blurred(test_real))).mean()
    separated = bool(p_real > 0.8 and p_blur < 0.2)
    assert separated != swapped, (float(p_real), float(p_blur))


def test_discriminator_step_logs_adversarial_loss_and_lazy_r1():
    config = tiny_config()
    method = ImplicitMethod(config, 2, CPU)
    real = _sphere_batch([0.5], slice(0, 4))
    fake = blurred(real)
    with torch.no_grad():
        expected = F.softplus(method.discriminator(fake)).mean() + F.softplus(-method.discriminator(real)).mean()
    on = method._discriminator_step(fake, real, step=4)   # r1_every 2: steps 0, 2, 4 ... carry R1 x 2
    off = method._discriminator_step(fake, real, step=5)
    assert on["discriminator"] == pytest.approx(float(expected), rel=1e-6)
    assert on["r1"] > 0 and off["r1"] == 0.0


def test_two_d_step_renders_trains_and_leaves_the_discriminator_to_its_own_step(views, sdf_dir):
    data, maps = views
    config = tiny_config()
    method = ImplicitMethod(config, len(data), CPU)
    method.on_epoch_start(0)
    dataset = NormalMapViews(data, maps, views=1, seed=0)
    dataset.set_epoch(0)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["view_normals"].shape == (2, 1, MAP, MAP, 3) and batch["view_pose"].shape == (2, 1, 4, 4)
    disc_before = [p.detach().clone() for p in method.discriminator.parameters()]
    beta_before = float(method.network.density.beta.detach())
    losses = method.training_step(batch, step=1)  # odd step: no R1
    assert {"normal_map", "generator", "discriminator", "r1", "surface", "loss"} <= set(losses)
    weights = method.weights
    generator_total = sum(getattr(weights, k) * v for k, v in losses.items()
                          if k not in ("loss", "discriminator", "r1"))
    assert losses["loss"] == pytest.approx(generator_total, rel=1e-5)
    codes = method.codes(batch["index"])
    rendered, target = method.render_views(batch, 1, codes, method.network(codes, torch.zeros(2, 1, 3))[1])
    assert rendered.shape == target.shape == (2, 1, RENDER, RENDER, 3)
    full = batch["view_normals"]  # the target is every other ground-truth pixel, from one of 4 offsets
    assert sum(torch.equal(target, full[:, :, oy::2, ox::2]) for oy in (0, 1) for ox in (0, 1)) == 1
    assert float(method.network.density.beta.detach()) != beta_before  # beta trains with the network
    moved = [not torch.equal(a, b.detach()) for a, b in zip(disc_before, method.discriminator.parameters())]
    assert all(moved)  # the discriminator took its step


def test_normal_map_loss_is_small_for_the_true_sphere_field(views):
    """The rendered maps of an exact sphere SDF agree with the rasterised ground truth: the 2D target and the
    renderer share one camera convention (a flipped rendering is far off)."""
    from morphable.implicit.losses import normal_map_loss
    from morphable.render.camera import Camera
    from morphable.render.volume import LaplaceDensity, render_views

    data, maps = views
    radius = SPHERE_RADII[data.names[0]] * data.similarities[0].scale
    normals, mask, K, pose = maps[0]
    cameras = [Camera.from_matrices(K[i], pose[i], MAP, MAP) for i in range(2)]
    density = LaplaceDensity(beta_init=1e-3)
    rendering = render_views(lambda p: p.norm(dim=-1) - radius, cameras, density, near=0.0, far=4.0, bound=1.0,
                             create_graph=False)
    rendered = rendering.normals.detach()  # beta is learnable: the maps carry its graph
    target = torch.as_tensor(normals[:2] * mask[:2, ..., None])[None]
    assert float(normal_map_loss(rendered, target)) < 0.05
    assert float(normal_map_loss(-rendered, target)) > 0.5


def test_stages_are_data_and_switch_objectives_by_epoch():
    config = tiny_config(thesis_schedule(3, 5), epochs=7)
    method = ImplicitMethod(config, 2, CPU)
    seen = []
    method.announce = seen.append
    active = {}
    for epoch in range(7):
        method.on_epoch_start(epoch)
        active[epoch] = (method.stage, method.two_d_active(),
                         {name for name in PLANE_REGULARISERS if getattr(method.weights, name)})
    assert active == {0: (0, True, set(PLANE_REGULARISERS)), 1: (0, True, set(PLANE_REGULARISERS)),
                      2: (0, True, set(PLANE_REGULARISERS)), 3: (1, False, set(PLANE_REGULARISERS)),
                      4: (1, False, set(PLANE_REGULARISERS)), 5: (2, False, set()), 6: (2, False, set())}
    assert all(getattr(method.weights, name) == 0 for name in TWO_D)
    assert method.weights.surface == method.base_weights.surface == 20.0  # 3D terms stay (Table 4.1)
    assert seen == ["stage 0 of 0-2 from epoch 1: off nothing",
                    "stage 1 of 0-2 from epoch 4: off normal_map, generator, discriminator",
                    "stage 2 of 0-2 from epoch 6: off normal_map, generator, discriminator, density, triplane, "
                    "total_variation"]
    assert [stage_index(parse_stages(thesis_schedule(5000, 8000)), e) for e in (0, 4999, 5000, 7999, 8000, 14999)] \
        == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("stages,problem", [
    ([{"start": 1, "off": []}], "must be 0"),
    ([{"start": 0, "off": []}, {"start": 0, "off": []}], "must increase"),
    ([{"start": 0, "off": "generator"}], "list of loss names"),
    ([{"start": 0}], "must be {'start'"),
    ([{"start": -1, "off": []}], "an integer >= 0"),
])
def test_bad_stage_schedules_are_one_line(stages, problem):
    with pytest.raises(MorphableError, match=problem):
        parse_stages(stages)


def test_unknown_loss_in_a_stage_is_refused_before_training():
    config = tiny_config([{"start": 0, "off": ["gan"]}])
    with pytest.raises(MorphableError, match=r"stages\[0\]\.off: unknown losses \['gan'\]"):
        loss_weights(config)


def test_presets_of_the_ablation():
    """Sec. 6.3.1 at the CPU size: equal epochs, stages only in the full model, the 2D terms only where the
    thesis has them, TP_2D_reg without 3D supervision."""
    names = ["ablation-npm", "ablation-tp3d", "ablation-tp3d-reg", "ablation-tp2d-reg", "ablation-full"]
    configs = {name: PRESETS[name]() for name in names}
    assert len({c.train.epochs for c in configs.values()}) == 1
    assert [bool(c.model.stages) for c in configs.values()] == [False, False, False, False, True]
    assert [c.model.views_per_step > 0 for c in configs.values()] == [False, False, False, True, True]
    weights = {name: loss_weights(c) for name, c in configs.items()}
    assert weights["ablation-tp3d"].density == weights["ablation-tp3d"].triplane == 0
    assert weights["ablation-tp3d-reg"].density == 1e-5 and weights["ablation-tp3d-reg"].surface == 2.0
    tp2d = weights["ablation-tp2d-reg"]
    assert tp2d.surface == tp2d.normal == tp2d.eikonal == tp2d.non_surface == 0
    assert (tp2d.normal_map, tp2d.generator, tp2d.discriminator) == (2.0, 1.0, 1.0)
    assert dataclasses.asdict(weights["ablation-full"]) == dataclasses.asdict(loss_weights(PRESETS["triplane-full"]()))
    paper = PRESETS["triplane-full"]()
    assert (paper.model.render_resolution, paper.train.batch_size, paper.train.lr, paper.model.lr_latent,
            paper.model.lr_discriminator, paper.train.epochs) == (64, 4, 5e-5, 1e-3, 2e-4, 15000)
    assert [s["start"] for s in paper.model.stages] == [0, 5000, 8000]


def _rows(run):
    with open(run / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _train(views, out, epochs, stop=None, resume=False, seed_method=0):
    data, maps = views
    config = tiny_config(thesis_schedule(2, 3), epochs=epochs)
    config.seed = seed_method
    method = ImplicitMethod(config, len(data), CPU)
    out.mkdir(exist_ok=True)
    config.seed = 0
    method.config = config
    fit(method, NormalMapViews(data, maps, views=1, seed=0), None,
        LoopConfig(epochs=stop or epochs, batch_size=2, seed=0, progress=False), out, CPU, resume=resume)
    return method


def test_resume_across_a_stage_boundary_is_bit_identical(views, tmp_path):
    """Stopped at the end of stage 0 (epoch 2, the last epoch with the discriminator) and resumed from a
    differently initialised method: every tensor of both checkpoints and the log equal the uninterrupted run's."""
    _train(views, tmp_path / "full", 4)
    _train(views, tmp_path / "part", 4, stop=2)
    assert load_weights(tmp_path / "part" / LAST_CHECKPOINT)[1]["stage"] == "0"
    resumed = _train(views, tmp_path / "part", 4, resume=True, seed_method=7)
    assert resumed.stage == 2
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        full, part = load_weights(tmp_path / "full" / name), load_weights(tmp_path / "part" / name)
        assert full[0].keys() == part[0].keys()
        assert any(k.startswith("networks.discriminator.") for k in full[0])
        optimizers = dict(json.loads(full[1]["structure"])["optimizers"]["__dict__"])
        assert set(optimizers) == {"sdf", "codes", "discriminator"}  # SGD's state (its learning rate) is saved
        for key in full[0]:
            assert torch.equal(full[0][key], part[0][key]), key
        assert full[1] == part[1]
    rows = _rows(tmp_path / "full")
    assert rows == _rows(tmp_path / "part")
    assert [r["stage"] for r in rows] == ["0", "0", "1", "2"]
    assert [r["train_generator"] != "" for r in rows] == [True, True, False, False]
    assert [r.get("train_density", "") != "" for r in rows] == [True, True, True, False]


def test_loss_plot_marks_the_stage_boundaries(tmp_path, monkeypatch):
    """``plots/losses.png`` draws a dashed line in every panel where log.csv's stage changes."""
    import morphable.viz as viz
    from morphable.train.loop import append_log

    for epoch, stage in enumerate([0, 0, 1, 2, 2], start=1):
        append_log(tmp_path / "log.csv", {"epoch": epoch, "train_loss": 1.0 / epoch, "lr_sdf": 1e-3, "stage": stage})
    figures = []
    monkeypatch.setattr(viz, "save_figure", lambda fig, path: figures.append(fig))
    viz.loss_curves(tmp_path / "log.csv", tmp_path / "losses.png")
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert len(panels) == 2  # loss and learning rate
    for ax in panels:
        dashed = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert dashed == [2.5, 3.5]


def test_generator_term_rewards_maps_the_discriminator_calls_real(views):
    """``L_g = mean softplus(-D(N))`` (eq. 4.9): with a discriminator that scores every map 3 (real), the
    generator's term is softplus(-3) = 0.0486; wired backwards it would be softplus(3) = 3.05."""
    data, maps = views
    config = tiny_config()
    config.model.loss_weights = {"discriminator": 0.0}  # no discriminator step: the stub is not trained
    method = ImplicitMethod(config, len(data), CPU)
    method.on_epoch_start(0)
    method.forward_networks["discriminator"] = lambda x: torch.full((len(x),), 3.0)
    dataset = NormalMapViews(data, maps, views=1, seed=0)
    losses = method.training_step(torch.utils.data.default_collate([dataset[0], dataset[1]]), step=0)
    assert losses["generator"] == pytest.approx(float(F.softplus(torch.tensor(-3.0))), rel=1e-6)
    assert "discriminator" not in losses
