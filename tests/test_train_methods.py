"""The methods in the shared loop. Mesh autoencoders: a run resumed after epoch 2 ends with the weights,
optimiser and scheduler states of an uninterrupted 4-epoch run, bit for bit (CoMA, Deep3DMM's learned
aggregation, SpiralNet++, LWAE with its random permutations), and the log has the decayed learning rate.
Implicit models: the configured optimiser and the shared decay (their training and resume:
``test_implicit_training.py``, ``test_implicit_ddp.py``; two networks: ``test_train_gan.py``)."""

import csv

import numpy as np
import pytest
import torch
import trimesh

from morphable.config import PRESETS, AutoencoderConfig, ExperimentConfig, LWAEConfig, TrainConfig
from morphable.data.registered import Normaliser
from morphable.errors import MorphableError
from morphable.explicit.lwae import LWAEMethod
from morphable.explicit.method import template_hierarchy
from morphable.implicit.method import ImplicitMethod
from morphable.io import load_weights
from morphable.train import BEST_CHECKPOINT, LAST_CHECKPOINT, LoopConfig, fit

CPU = torch.device("cpu")
SMALL = dict(latent=4, encoder_channels=[8, 8], decoder_channels=[8, 8, 8], factors=[2, 2], cheb_k=3)
CONFIGS = {
    "coma": lambda: ExperimentConfig("coma", AutoencoderConfig(**SMALL),
                                     train=TrainConfig(optimizer="sgd", lr=1e-2, lr_decay=0.9, weight_decay=5e-4)),
    "deep3dmm": lambda: ExperimentConfig("deep3dmm-spectral", AutoencoderConfig(**SMALL, pooling="fused"),
                                         train=TrainConfig(optimizer="adam", lr=1e-3, lr_decay=0.9)),
    "spiralnet++": lambda: ExperimentConfig("spiralnet++", AutoencoderConfig(**SMALL, conv="spiral"),
                                            train=TrainConfig(optimizer="adamw", lr=1e-3, lr_decay=0.9)),
    "lwae": lambda: ExperimentConfig("lwae", LWAEConfig(**SMALL, parts=3, locality_weight=1.0, nmf_iterations=50),
                                     train=TrainConfig(optimizer="sgd", lr=1e-2, lr_decay=0.9)),
}


@pytest.fixture(scope="module")
def meshes():
    """16 bumpy spheres (162 vertices), split 12 train / 4 validation."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    bumps = np.random.default_rng(0).standard_normal((16, 3)) * 0.05
    v = sphere.vertices[None] * (1 + np.einsum("nk,vk->nv", bumps, sphere.vertices)[..., None])
    return v.astype(np.float32), np.asarray(sphere.faces)


def _method(name, meshes, train_weights=True):
    vertices, faces = meshes
    config = CONFIGS[name]()
    hierarchy = template_hierarchy(vertices[0], faces, config.model)
    normaliser = Normaliser.fit(vertices[:12])
    return config.spec.load().create(config, hierarchy, normaliser, CPU, vertices[:12] if train_weights else None)


def _train(method, meshes, out, epochs, resume=False):
    vertices, _ = meshes
    normalised = torch.as_tensor(Normaliser.fit(vertices[:12]).apply(vertices))
    fit(method, normalised[:12], normalised[12:], LoopConfig(epochs=epochs, batch_size=5, progress=False), out,
        CPU, resume=resume)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_autoencoder_resume_is_bit_identical(name, meshes, tmp_path):
    for run in ("full", "part"):
        (tmp_path / run).mkdir()
    _train(_method(name, meshes), meshes, tmp_path / "full", 4)
    _train(_method(name, meshes), meshes, tmp_path / "part", 2)
    resumed = _method(name, meshes, train_weights=False)
    with torch.no_grad():  # everything must come from the checkpoint
        for p in resumed.network.parameters():
            p.add_(1.0)
    resumed.mean = torch.zeros_like(resumed.mean)
    _train(resumed, meshes, tmp_path / "part", 4, resume=True)
    assert isinstance(resumed, LWAEMethod) == (name == "lwae")
    torch.testing.assert_close(resumed.mean, torch.as_tensor(Normaliser.fit(meshes[0][:12]).mean), rtol=0, atol=0)
    for checkpoint in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        full, full_meta = load_weights(tmp_path / "full" / checkpoint)
        part, part_meta = load_weights(tmp_path / "part" / checkpoint)
        assert full.keys() == part.keys() and full_meta == part_meta
        assert any(k.startswith("optimizers.autoencoder.state") for k in full)
        for key in full:
            assert torch.equal(full[key], part[key]), key
    with open(tmp_path / "part" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lr = CONFIGS[name]().train.lr
    assert [float(r["lr_autoencoder"]) for r in rows] == pytest.approx([lr * 0.9 ** e for e in range(1, 5)],
                                                                         rel=1e-12)
    assert all(float(r["val_loss"]) > 0 and float(r["val_error"]) > 0 for r in rows)


@pytest.mark.parametrize("name", ["coma", "spiralnet++"])
def test_autoencoder_encode_and_decode_go_in_batches_mesh_by_mesh(name, meshes):
    method = _method(name, meshes)
    vertices = meshes[0]
    calls = []
    network_encode = method.network.encode
    method.network.encode = lambda x: calls.append(len(x)) or network_encode(x)
    codes = method.encode(vertices, batch_size=5)
    assert calls == [5, 5, 5, 1] and codes.shape == (16, 4)
    meshes_out = method.decode(codes, batch_size=7)
    assert meshes_out.shape == vertices.shape
    mean, std = method.mean.numpy(), method.std.numpy()
    with torch.no_grad():  # the naive reference: one mesh at a time, by hand
        for i in range(16):
            z = network_encode(torch.as_tensor((vertices[i:i + 1] - mean) / std, dtype=torch.float32))
            np.testing.assert_allclose(codes[i], z[0].numpy(), rtol=1e-5, atol=1e-6)
            x = method.network.decode(torch.as_tensor(codes[i:i + 1]))[0].numpy() * std + mean
            np.testing.assert_allclose(meshes_out[i], x, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # stepped without training
def test_implicit_method_uses_the_configured_optimizer_and_decay():
    config = PRESETS["npm-small"]()
    config.model.decay_interval, config.model.decay_interval_latent = 2, 3
    method = ImplicitMethod(config, 3, CPU)
    opts, scheds = method.optimizers(), method.schedulers()
    assert type(opts["sdf"]) is torch.optim.AdamW and type(opts["codes"]) is torch.optim.SparseAdam
    assert opts["sdf"].param_groups[0]["weight_decay"] == config.train.weight_decay
    lrs = {"sdf": [], "codes": []}
    for _ in range(6):
        for name, spec in scheds.items():
            assert spec.interval == "epoch"
            spec.scheduler.step()
            lrs[name].append(opts[name].param_groups[0]["lr"])
    d = config.train.lr_decay
    assert lrs["sdf"] == pytest.approx([config.train.lr * d ** (e // 2) for e in range(1, 7)], rel=1e-12)
    assert lrs["codes"] == pytest.approx([config.model.lr_latent * d ** (e // 3) for e in range(1, 7)], rel=1e-12)
    config.train.optimizer, config.train.momentum = "sgd", 0.5
    sgd = ImplicitMethod(config, 3, CPU).optimizers()["sdf"]
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.5
    config.train.optimizer = "lbfgs"
    with pytest.raises(MorphableError, match="unknown optimizer 'lbfgs'"):
        ImplicitMethod(config, 3, CPU)
    config.train.optimizer = "adamw"
    config.model.loss_weights = {"surfce": 1.0}
    with pytest.raises(MorphableError, match=r"unknown loss weights \['surfce'\]"):
        ImplicitMethod(config, 3, CPU)
