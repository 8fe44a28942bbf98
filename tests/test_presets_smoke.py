"""Every registered-mesh preset trains a few steps on tiny data, writes a run and re-evaluates from its folder.

(The implicit presets train on SDF datasets; their smoke test is in test_implicit_training.py.)
"""

import numpy as np
import pytest
import trimesh

from morphable.config import AUTOENCODER_METHODS, PRESETS

MESH_PRESETS = sorted(p for p in PRESETS if PRESETS[p]().method in ("pca", *AUTOENCODER_METHODS))
from morphable.data.registered import write_coma_layout
from morphable.experiment import evaluate_run, train_experiment


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "faces"
    sphere = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices
    rng = np.random.default_rng(0)
    n = 2 * 3 * 4
    bumps = rng.standard_normal((n, 3)) * 0.05
    v = sphere.vertices[None] * (1 + np.einsum("nk,vk->nv", bumps, sphere.vertices)[..., None])
    write_coma_layout(root, v.astype(np.float32) * 0.1, sphere.faces, [f"s{i // 12}" for i in range(n)],
                      [f"e{(i // 4) % 3}" for i in range(n)], [i % 4 for i in range(n)], "m", progress=False)
    return root


@pytest.mark.parametrize("preset", MESH_PRESETS)
def test_preset_trains_and_evaluates(preset, tiny_dataset, tmp_path):
    config = PRESETS[preset]()
    config.data.path = str(tiny_dataset)
    config.data.val_fraction = 0.1
    if config.method != "pca":
        config.model.factors = [2] * len(config.model.factors)  # the preset's number of poolings, on a tiny mesh
        config.train.epochs = 2
        config.train.batch_size = 8
    metrics = train_experiment(config, tmp_path / "run", progress=False)
    assert np.isfinite(metrics["mean_mm"]) and metrics["mean_mm"] > 0
    assert (tmp_path / "run" / "model.safetensors").exists()
    again = evaluate_run(tmp_path / "run")
    assert np.isclose(again["mean_mm"], metrics["mean_mm"], rtol=1e-5)
