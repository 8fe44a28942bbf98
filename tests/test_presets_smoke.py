"""Every preset of every family, with no skip list: each trains a few steps on tiny data through the run
driver (its own code path: sampler, stages, networks, losses, shrunk in size only), is re-evaluated from its
folder, and is built at its full paper size (networks constructed and parameters counted, not trained)."""

import numpy as np
import pytest

from morphable.config import METHODS, PRESETS, NPMConfig
from morphable.experiment import evaluate, train

EXPLICIT = sorted(p for p in PRESETS if PRESETS[p]().family == "explicit")
IMPLICIT = sorted(p for p in PRESETS if PRESETS[p]().family == "implicit" and PRESETS[p]().method != "expression")
EXPRESSION = sorted(p for p in PRESETS if PRESETS[p]().method == "expression")
IMAGE = sorted(p for p in PRESETS if PRESETS[p]().family == "image")
VRN = [p for p in IMAGE if PRESETS[p]().method.startswith("vrn")]
HRN = [p for p in IMAGE if PRESETS[p]().method == "hrn"]


def test_every_preset_is_in_a_family_and_smoke_tested():
    assert set(EXPLICIT) | set(IMPLICIT) | set(EXPRESSION) | set(IMAGE) == set(PRESETS)
    assert set(VRN) | set(HRN) == set(IMAGE)
    assert {PRESETS[p]().method for p in PRESETS} <= set(METHODS)


def shrink(config):
    """The preset at tiny size: fewer epochs and points, narrower networks, the same code path."""
    config.train.epochs = 2
    if config.family == "explicit" and config.spec.training == "loop":
        config.model.factors = [2] * len(config.model.factors)  # the preset's number of poolings, on a tiny mesh
        config.train.batch_size = 8
    if config.method == "expression":
        config.model.latent, config.model.hidden, config.model.n_layers, config.model.pairs = 8, 32, 3, 64
        config.train.batch_size = 2
    elif config.family == "implicit":
        model = config.model
        model.latent, model.surface_face, model.surface_nonface, model.ball = 8, 64, 32, 32
        model.hidden = min(model.hidden, 32)
        if hasattr(model, "resolution"):
            model.resolution, model.channels, model.base_channels = 32, 4, 8
        if model.views_per_step:  # one 8 x 8 view of the fixture's 64 x 64 maps, a narrow discriminator
            model.views_per_step, model.render_resolution, model.discriminator_width_divisor = 1, 8, 16
        if model.stages:  # every stage for one epoch: the switches run too
            config.train.epochs = len(model.stages)
            model.stages = [{**stage, "start": k} for k, stage in enumerate(model.stages)]
        config.train.batch_size = 2
    if config.method.startswith("vrn"):
        model = config.model
        model.size, model.depth, model.features, model.landmark_features = 32, 32, 16, 8
        config.train.batch_size = 8
    if config.method == "hrn":
        from test_hrn import TINY

        from morphable.config import HRNConfig

        config.model = HRNConfig(**{**TINY, "weights": config.model.weights})
        config.train.batch_size = 4
    return config


@pytest.mark.parametrize("preset", EXPLICIT)
def test_explicit_preset_trains_and_evaluates(preset, tiny_faces, tmp_path):
    config = shrink(PRESETS[preset]())
    config.data.path = str(tiny_faces)
    config.data.val_fraction = 0.1
    metrics = train(config, tmp_path / "run", progress=False)
    assert np.isfinite(metrics["mean_mm"]) and 0 < metrics["mean_mm"] < 100  # spheres of radius 100 mm
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "report.md").exists()
    again = evaluate(tmp_path / "run")
    assert np.isclose(again["mean_mm"], metrics["mean_mm"], rtol=1e-5)


@pytest.mark.parametrize("preset", IMPLICIT)
def test_implicit_preset_trains_and_evaluates(preset, sdf_dir, tmp_path):
    config = shrink(PRESETS[preset]())
    config.data.path = str(sdf_dir)
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["n_shapes"] == 2 and np.isfinite(metrics["final"]["loss"])
    expected = list(range(len(config.model.stages))) if config.model.stages else [0] * config.train.epochs
    assert [int(row["stage"]) for row in _rows(tmp_path / "run")] == expected
    assert np.isfinite(metrics["validation"]["loss"])
    assert (tmp_path / "run" / "plots" / "losses.png").exists()
    assert (tmp_path / "run" / "plots" / "training_shapes.png").exists()
    again = evaluate(tmp_path / "run")
    assert again["final"] == metrics["final"]


@pytest.fixture(scope="module")
def deformation_data(tmp_path_factory):
    """Deformation data of 2 synthetic subjects x 1 expression x 3 frames and a 1-epoch npm-small identity run."""
    from morphable.cli import main
    from morphable.data.deformation import write_deformation_dataset
    from morphable.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("expression")
    seq = write_synthetic_dataset(root / "seq", subjects=2, expressions=1, frames=3, seed=0)
    data = write_deformation_dataset(seq, root / "def", pairs=400, n_surface=600, n_near=600, n_ball=300, n_eval=200,
                                     progress=False)
    assert main(["train", "npm-small", "--data", str(data / "identity"), "--out", str(root / "id"), "--epochs", "1",
                 "--quiet"]) == 0
    return data, root / "id"


@pytest.mark.parametrize("preset", EXPRESSION)
def test_expression_preset_trains_and_evaluates(preset, deformation_data, tmp_path, monkeypatch):
    from morphable.implicit import expression_experiment

    monkeypatch.setattr(expression_experiment, "EVAL_RESOLUTION", 48)  # the run's surface metrics at test size
    monkeypatch.setattr(expression_experiment, "EVAL_SAMPLES", 20_000)
    config = shrink(PRESETS[preset]())
    config.data.path, config.model.identity = str(deformation_data[0]), str(deformation_data[1])
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["n_samples"] == 4 and metrics["pairs"]["posed_samples"] == 2  # 2 apexes + 2 neutrals
    assert np.isfinite(metrics["final"]["loss"]) and np.isfinite(metrics["validation"]["loss"])
    assert (tmp_path / "run" / "plots" / "expressions.png").exists()
    again = evaluate(tmp_path / "run")
    assert again["final"] == metrics["final"] and again["pairs"] == metrics["pairs"]


def _rows(run):
    import csv

    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def paper_template():
    """The embedded synthetic template: a 5k-vertex face, the size the explicit presets were published at."""
    from morphable.data.synthetic import template_mesh

    return template_mesh()


def deepsdf_parameters(latent: int, hidden: int, layers: int) -> int:
    """Weights + biases of DeepSDF: input latent + 3, ``layers`` hidden layers of width ``hidden`` and an output
    layer of width 1; the layer before the skip (at ``layers // 2``) outputs ``hidden - (latent + 3)``, so the
    concatenation with the input restores the width."""
    d_in = latent + 3
    sizes = [d_in] + [hidden] * layers + [1]
    skip = layers // 2
    total = 0
    for i in range(layers + 1):
        out = sizes[i + 1] - d_in if i + 1 == skip else sizes[i + 1]
        total += sizes[i] * out + out
    return total


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_builds_at_full_size(preset, paper_template, tmp_path):
    import torch

    config = PRESETS[preset]()
    if config.method == "expression":  # on the codes of the matching identity preset (npm: 512, npm-small: 16)
        from morphable.implicit.expression_method import ExpressionMethod

        identity = PRESETS["npm" if preset == "expression" else "npm-small"]().model.latent
        method = ExpressionMethod(config, torch.zeros(3, identity), 4, torch.device("cpu"))
        count = sum(p.numel() for p in method.field.parameters())
        model = config.model
        assert count == deepsdf_parameters(model.latent + identity, model.hidden, model.n_layers) + 2 * (model.hidden + 1)  # 3 outputs
        assert method.codes.weight.shape == (4, model.latent)
        if preset == "expression":  # the paper size: 8 x 1024 MLP on 200 + 512 codes
            assert count > 5e6
        return
    if config.family == "implicit":
        from morphable.implicit.method import ImplicitMethod

        method = ImplicitMethod(config, n_codes=4, device=torch.device("cpu"))
        count = sum(p.numel() for n in method.networks.values() for p in n.parameters())
        model = config.model
        if isinstance(model, NPMConfig):
            assert count == deepsdf_parameters(model.latent, model.hidden, model.n_layers)
        if preset in ("npm", "triplane"):  # the paper sizes: 8 x 1024 MLP; 256^2 x 32 planes from a 512-d code
            assert count > 5e6
        return
    if config.method == "hrn":
        from morphable.image.hrn import HRNGenerators
        from morphable.image.unet import PatchDiscriminator

        m = config.model
        P = 100 + 53 + m.albedo_components + 33  # ICT-FaceKit light: 100 shape and 53 expression modes
        generators = HRNGenerators(np.zeros(P), np.ones(P), m.mid_size, m.high_size, 1.0, 0.2,
                                   coarse_depth=m.coarse_depth, coarse_width=m.coarse_width,
                                   generator_width=m.generator_width)
        with torch.no_grad():
            assert generators.coarse(torch.zeros(1, 3, m.size, m.size)).shape == (1, P)
            assert generators.mid(torch.zeros(1, 4, m.mid_size, m.mid_size)).shape == (1, 3, m.mid_size, m.mid_size)
            assert generators.high(torch.zeros(1, 7, m.high_size, m.high_size)).shape == (1, 1, m.high_size,
                                                                                          m.high_size)
            logits = PatchDiscriminator(1, m.discriminator_width, m.discriminator_layers, "instance")(
                torch.zeros(1, 1, m.high_size, m.high_size))
        assert logits.shape[-1] == m.high_size // 2 ** m.discriminator_layers - 2
        count = sum(p.numel() for p in generators.parameters())
        assert count > (5e7 if m.size == 224 else 1e6)  # ResNet-50 + two 64-wide U-Nets; the CPU size about 5 M
        return
    if config.family == "image":
        from morphable.image.method import VRNMethod

        method = VRNMethod(config, "cpu")
        count = sum(p.numel() for n in method.networks.values() for p in n.parameters())
        volume_head = method.networks.get("volume", method.networks.get("multitask"))
        head = volume_head.head.up if hasattr(volume_head, "head") else volume_head.volume_head.up
        assert head.out_channels == config.model.depth  # one output channel per depth slice
        assert count > (5e6 if config.model.size == 192 else 3e5)  # two 256-feature hourglasses: about 7 M
        return
    if config.spec.training == "closed-form":
        from morphable.explicit.pca import PCAModel

        vertices, faces = paper_template
        rng = np.random.default_rng(0)
        model = PCAModel.fit(vertices[None] + rng.normal(0, 1e-3, (20, *vertices.shape)), config.model.latent)
        assert model.components.shape == (config.model.latent, len(vertices), 3)
        return
    from morphable.data.registered import Normaliser
    from morphable.explicit.method import template_hierarchy

    vertices, faces = paper_template
    hierarchy = template_hierarchy(vertices, faces, config.model)
    assert hierarchy.sizes[0] == len(vertices) and len(hierarchy.sizes) == len(config.model.factors) + 1
    rng = np.random.default_rng(0)
    train_vertices = (vertices[None] + rng.normal(0, 1e-3, (8, *vertices.shape))).astype(np.float32)
    method = config.spec.load().create(config, hierarchy, Normaliser.fit(train_vertices), torch.device("cpu"),
                                       train_vertices)
    network = method.networks["autoencoder"] if "autoencoder" in method.networks else next(iter(method.networks.values()))
    with torch.no_grad():
        out = network(torch.zeros(2, len(vertices), 3))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, len(vertices), 3)
    assert sum(p.numel() for p in network.parameters()) > 1e4


@pytest.mark.parametrize("preset", HRN)
def test_hrn_preset_trains_and_evaluates(preset, tiny_detail_photos, tmp_path):
    config = shrink(PRESETS[preset]())
    config.data.path = str(tiny_detail_photos)
    metrics = train(config, tmp_path / "run", progress=False)
    assert all(0 < entry["mean"] < 50 for entry in metrics["levels"].values())
    assert (tmp_path / "run" / "plots" / "levels.png").exists()


@pytest.mark.parametrize("preset", VRN)
def test_image_preset_trains_and_evaluates(preset, tiny_photos, tmp_path):
    config = shrink(PRESETS[preset]())
    config.data.path = str(tiny_photos)
    metrics = train(config, tmp_path / "run", progress=False)
    nme = metrics["gt"]["vrn"]["mean"]
    assert metrics["gt"]["vrn"]["count"] == 3 and np.isfinite(nme) and 0 < nme < 2
    assert (tmp_path / "run" / "plots" / "cumulative_nme.png").exists()
    again = evaluate(tmp_path / "run", crops=("gt",))
    assert np.isclose(again["gt"]["vrn"]["mean"], nme, rtol=1e-6)
