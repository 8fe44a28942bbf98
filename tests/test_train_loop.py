"""The shared training loop: checkpoints round-trip, resume equals an uninterrupted run, DDP on gloo."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.train import LoopConfig, fit, flatten_state, load_checkpoint, save_checkpoint, unflatten_state


class RegressionMethod:
    """A small real method for the loop: least-squares regression with SGD + momentum and LR decay."""

    def __init__(self, seed=0, width=8):
        torch.manual_seed(seed)
        self.network = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
        self.forward_network = self.network
        self._opt = torch.optim.SGD(self.network.parameters(), lr=0.05, momentum=0.9)
        self._sched = torch.optim.lr_scheduler.ExponentialLR(self._opt, 0.9)

    def optimizers(self):
        return [self._opt]

    def schedulers(self):
        return [self._sched]

    def training_step(self, batch, step):
        x, y = batch[:, :3], batch[:, 3:]
        loss = ((self.forward_network(x) - y) ** 2).mean()
        self._opt.zero_grad()
        loss.backward()
        self._opt.step()
        return {"loss": loss.item()}

    def validation_step(self, batch):
        return {"loss": ((self.network(batch[:, :3]) - batch[:, 3:]) ** 2).mean().item()}

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass


def _data(n=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return torch.cat([x, (x[:, :1] * 2 - x[:, 1:2] ** 2)], dim=1)


def test_flatten_state_round_trip():
    state = {"a": torch.ones(2), "b": [1, {"c": torch.zeros(3), "d": float("inf")}], "e": "text"}
    tensors = {}
    structure = flatten_state(state, "s", tensors)
    back = unflatten_state(structure, tensors)
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["b"][1]["c"], state["b"][1]["c"])
    assert back["b"][1]["d"] == math.inf and back["e"] == "text" and back["b"][0] == 1


def test_loss_falls_and_files_are_written(tmp_path):
    method = RegressionMethod()
    summary = fit(method, _data(), _data(16), LoopConfig(epochs=6, batch_size=8, progress=False), tmp_path,
                  torch.device("cpu"))
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,val_loss,lr") and len(rows) == 7
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert losses[-1] < 0.5 * losses[0]
    assert summary["best_epoch"] >= 1
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "last.safetensors").exists()
    lr = float(rows[-1].split(",")[3])
    assert math.isclose(lr, 0.05 * 0.9 ** 6, rel_tol=1e-9)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "part").mkdir()
    full = RegressionMethod()
    fit(full, _data(), None, LoopConfig(epochs=5, batch_size=8, progress=False), tmp_path / "full",
        torch.device("cpu"))
    first = RegressionMethod()
    fit(first, _data(), None, LoopConfig(epochs=2, batch_size=8, progress=False), tmp_path / "part",
        torch.device("cpu"))
    resumed = RegressionMethod(seed=123)  # different init: everything must come from the checkpoint
    fit(resumed, _data(), None, LoopConfig(epochs=5, batch_size=8, progress=False), tmp_path / "part",
        torch.device("cpu"), resume=True)
    for a, b in zip(full.network.parameters(), resumed.network.parameters()):
        assert torch.equal(a, b)
    assert len((tmp_path / "part" / "log.csv").read_text().splitlines()) == 6


def test_checkpoint_of_another_model_is_refused(tmp_path):
    method = RegressionMethod()
    save_checkpoint(tmp_path / "c.safetensors", method, 1, {})
    other = RegressionMethod(width=16)
    with pytest.raises(MorphableError) as info:
        load_checkpoint(tmp_path / "c.safetensors", other, torch.device("cpu"))
    assert "c.safetensors" in str(info.value) and "does not match" in str(info.value)
    with pytest.raises(MorphableError, match="nothing to resume"):
        fit(other, _data(), None, LoopConfig(epochs=1, batch_size=8, progress=False), tmp_path / "x",
            torch.device("cpu"), resume=True)


def test_ddp_with_gloo_matches_single_process_gradient_average(tmp_path):
    """Two CPU processes under torchrun: weights stay identical across ranks after training."""
    script = tmp_path / "ddp_job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train_loop import RegressionMethod, _data
        from morphable.train import LoopConfig, fit, init_distributed
        dist_info = init_distributed(torch.device("cpu"))
        method = RegressionMethod()
        fit(method, _data(), None, LoopConfig(epochs=2, batch_size=8, progress=False), __import__("pathlib").Path({str(tmp_path)!r}),
            torch.device("cpu"), dist_info=dist_info)
        flat = torch.cat([p.detach().flatten() for p in method.network.parameters()])
        torch.save(flat, {str(tmp_path)!r} + f"/rank{{dist_info.rank}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                    str(script)], check=True, env=env, capture_output=True, timeout=120)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0, r1)
    start = torch.cat([p.detach().flatten() for p in RegressionMethod().network.parameters()])
    assert not torch.equal(r0, start)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # only rank 0 writes


def test_divergence_stops_with_a_clear_error(tmp_path):
    method = RegressionMethod()
    method._opt.param_groups[0]["lr"] = 1e6  # explodes to inf/nan within an epoch
    with pytest.raises(MorphableError, match="diverged in epoch 1"):
        fit(method, _data() * 1e3, None, LoopConfig(epochs=3, batch_size=8, progress=False), tmp_path,
            torch.device("cpu"))
