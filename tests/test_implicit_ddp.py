"""The auto-decoder code table under DDP: two gloo processes on CPU keep one table, equal to the checkpoint,
one DDP step with batches [0, 1] | [2, 3] equals one single-process step with batch [0, 1, 2, 3], and the
sharded validation equals the single-process validation of the same weights."""

import csv
from pathlib import Path

import pytest
import torch
import trimesh
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate

from gloo import run_gloo
from morphable.cli import main
from morphable.config import PRESETS
from morphable.data.sdf import SdfDataset, SubsampleCounts
from morphable.implicit.latent import renormalise_codes
from morphable.implicit.method import ImplicitMethod
from morphable.io import load_weights, write_ply
from morphable.train import LAST_CHECKPOINT, LoopConfig, fit, init_distributed, load_checkpoint

RADII = (0.5, 0.6, 0.7, 0.8)
EPOCHS = 1  # one epoch: each rank trains two shapes that the other rank never sees
VAL_SEED = 7


def _config(data):
    config = PRESETS["npm-small"]()
    config.data.path = str(data)
    config.train.epochs = EPOCHS
    config.model.max_norm = 0.05  # below the init norms (~0.1): the look-up renormalisation is exercised
    return config


def _dataset(config, seed=None):
    m = config.model
    return SdfDataset(config.data.path, SubsampleCounts(m.surface_face, m.surface_nonface, m.ball),
                      seed=config.seed if seed is None else seed)


def _validation(config):
    """Other points of the training shapes, drawn once."""
    data = _dataset(config, seed=VAL_SEED)
    data.set_epoch(0)
    return data


def _job(rank, root):
    root = Path(root)
    config = _config(root / "sdf")
    dataset = _dataset(config)
    cpu = torch.device("cpu")
    dist_info = init_distributed(cpu)
    # the shared loop, batch 2 per rank, checkpoints written by rank 0
    method = ImplicitMethod(config, len(dataset), cpu)
    fit(method, dataset, _validation(config), LoopConfig(epochs=EPOCHS, batch_size=2, seed=config.seed,
                                                         progress=False), root / "run", cpu, dist_info=dist_info)
    state = {"codes": method.codes.weight.detach().clone()}
    # one hand-made step: rank r trains shapes 2r, 2r + 1
    step = ImplicitMethod(config, len(dataset), cpu)
    step.forward_networks["sdf"] = DistributedDataParallel(step.network)
    dataset.set_epoch(0)
    step.training_step(default_collate([dataset[2 * rank], dataset[2 * rank + 1]]), 0)
    state["step_codes"] = step.codes.weight.detach().clone()
    state["step_network"] = torch.cat([p.detach().flatten() for p in step.network.parameters()])
    state["step_grad"] = torch.cat([p.grad.flatten() for p in step.network.parameters()])
    torch.save(state, root / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "meshes").mkdir()
    for i, r in enumerate(RADII):
        sphere = trimesh.creation.icosphere(subdivisions=2, radius=r)
        write_ply(root / "meshes" / f"s{i}.ply", sphere.vertices, sphere.faces)
    assert main(["data", "sdf", str(root / "meshes"), "--out", str(root / "sdf"), "--unit", "m", "--n-surface", "1000",
                 "--n-near", "1000", "--n-ball", "500"]) == 0
    (root / "run").mkdir()
    run_gloo(_job, 2, str(root))
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return root, ranks


def test_every_rank_and_the_checkpoint_hold_all_trained_codes(ddp_results):
    from torch.utils.data.distributed import DistributedSampler

    root, ranks = ddp_results
    config = _config(root / "sdf")
    assert torch.equal(ranks[0]["codes"], ranks[1]["codes"])
    assert torch.equal(load_weights(root / "run" / "last.safetensors")[0]["method_extra.codes"], ranks[0]["codes"])
    # shapes that rank 0 never trained (the loop's DistributedSampler order) moved away from their init
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(range(4), 2, rank, shuffle=True, seed=config.seed)
        shapes = set()
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            shapes |= set(sampler)
        seen.append(shapes)
    only_rank1 = sorted(seen[1] - seen[0])
    assert len(only_rank1) == 2
    init, _ = renormalise_codes(ImplicitMethod(config, 4, torch.device("cpu")).codes.weight, config.model.max_norm)
    moved = (ranks[0]["codes"] - init).norm(dim=1)
    assert (moved[only_rank1] > 1e-3).all(), moved
    # every shape was trained by someone, and rank 0's table has them all
    assert (moved > 1e-3).all(), moved


def test_a_ddp_step_equals_a_single_process_step_on_the_union_batch(ddp_results):
    root, ranks = ddp_results
    config = _config(root / "sdf")
    dataset = _dataset(config)
    dataset.set_epoch(0)
    single = ImplicitMethod(config, 4, torch.device("cpu"))
    init, _ = renormalise_codes(single.codes.weight, config.model.max_norm)
    single.training_step(default_collate([dataset[i] for i in range(4)]), 0)
    codes = single.codes.weight.detach()
    network = torch.cat([p.detach().flatten() for p in single.network.parameters()])
    grad = torch.cat([p.grad.flatten() for p in single.network.parameters()])
    for state in ranks:
        torch.testing.assert_close(state["step_codes"], codes, rtol=1e-5, atol=1e-6)
        # DDP's averaged gradient is the gradient of the union batch's mean loss
        torch.testing.assert_close(state["step_grad"], grad, rtol=1e-4, atol=1e-7)
        # Adam's first step lr g / (|g| + eps) amplifies rounding in near-zero gradients: 1 % of lr (1e-3)
        torch.testing.assert_close(state["step_network"], network, rtol=0, atol=1e-5)
    assert torch.equal(ranks[0]["step_codes"], ranks[1]["step_codes"])
    assert (codes - init).norm(dim=1).min() > 1e-3  # all four codes took the step


def test_sharded_validation_is_the_mean_over_all_validation_shapes(ddp_results):
    """Ranks validate shapes {0, 2} and {1, 3}; the logged losses are the means over the four shapes."""
    root, _ = ddp_results
    config = _config(root / "sdf")
    with open(root / "run" / "log.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    method = ImplicitMethod(config, 4, torch.device("cpu"))
    load_checkpoint(root / "run" / LAST_CHECKPOINT, method, torch.device("cpu"))
    val = _validation(config)
    per_shape = [method.validation_step(default_collate([val[i]])) for i in range(4)]
    assert {k[len("val_"):] for k in row if k.startswith("val_")} == set(per_shape[0])
    for key in per_shape[0]:
        expected = sum(losses[key] for losses in per_shape) / 4
        assert float(row[f"val_{key}"]) == pytest.approx(expected, rel=1e-5), key
    # the validation draws differ from the training draws of epoch 0
    train = _dataset(config)
    train.set_epoch(0)
    assert not torch.equal(train[0]["surface_points"], val[0]["surface_points"])
