"""The shared training loop: checkpoints round-trip, resume equals an uninterrupted run, DDP on gloo, the
learning-rate decay, validation of dict batches and the log's columns. (Two networks and stages:
``test_train_gan.py``.)"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.config import TrainConfig
from morphable.train import (LoopConfig, SchedulerSpec, Selection, fit, flatten_state, load_checkpoint,
                             make_optimizer, save_checkpoint, step_decay, unflatten_state)
from morphable.train.loop import append_log, batch_length, epoch_seed, truncate_log


class RegressionMethod:
    """A small real method for the loop: least-squares regression with SGD + momentum and LR decay."""

    def __init__(self, seed=0, width=8):
        torch.manual_seed(seed)
        self.network = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
        self.networks = {"net": self.network}
        self.forward_networks = dict(self.networks)
        self.stage = 0
        self.selection = Selection("min", "loss")
        self._opt = torch.optim.SGD(self.network.parameters(), lr=0.05, momentum=0.9)
        self._sched = SchedulerSpec(torch.optim.lr_scheduler.ExponentialLR(self._opt, 0.9))

    def optimizers(self):
        return {"net": self._opt}

    def schedulers(self):
        return {"net": self._sched}

    def on_epoch_start(self, epoch):
        pass

    def training_step(self, batch, step):
        x, y = batch[:, :3], batch[:, 3:]
        loss = ((self.forward_networks["net"](x) - y) ** 2).mean()
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
    assert rows[0] == "epoch,train_loss,val_loss,lr_net,stage,seconds" and len(rows) == 7
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert losses[-1] < 0.5 * losses[0]
    val = [float(r.split(",")[2]) for r in rows[1:]]
    assert summary["best_epoch"] == 1 + min(range(6), key=val.__getitem__) and summary["selected_by"] == "min val_loss"
    assert summary["best_value"] == min(val)
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
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
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


def test_checkpoint_with_other_network_names_is_refused(tmp_path):
    method = RegressionMethod()
    save_checkpoint(tmp_path / "c.safetensors", method, 1, {})
    renamed = RegressionMethod()
    renamed.networks = {"other": renamed.network}
    with pytest.raises(MorphableError, match=r"checkpoint has networks \['net'\], the model \['other'\]"):
        load_checkpoint(tmp_path / "c.safetensors", renamed, torch.device("cpu"))


def test_step_decay_is_exponential_lr_per_epoch_and_a_step_every_k_epochs():
    def rates(make, epochs=300):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=8e-3)
        sched = make(opt)
        out = []
        for _ in range(epochs):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        return out

    # the autoencoders' old ExponentialLR and the shared decay give the same floats (seeded runs unchanged)
    exponential = rates(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.99))
    assert rates(lambda o: step_decay(o, 0.99).scheduler) == exponential
    every3 = rates(lambda o: step_decay(o, 0.75, every=3).scheduler, 10)
    expected = [8e-3 * 0.75 ** ((e + 1) // 3) for e in range(10)]
    assert every3 == pytest.approx(expected, rel=1e-12)
    assert step_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0.5).interval == "epoch"
    with pytest.raises(MorphableError, match="at least 1 epoch"):
        step_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0.5, every=0)


def test_make_optimizer_follows_the_config_and_refuses_unknown_names():
    params = [nn.Parameter(torch.zeros(2))]
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD),
                      ("rmsprop", torch.optim.RMSprop)):
        opt = make_optimizer(TrainConfig(optimizer=name, lr=0.25, weight_decay=0.5, momentum=0.7), params)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.25 and opt.param_groups[0]["weight_decay"] == 0.5
    assert make_optimizer(TrainConfig(optimizer="sgd", momentum=0.7), params).param_groups[0]["momentum"] == 0.7
    with pytest.raises(MorphableError, match="train.optimizer must be one of sgd, adam, adamw, rmsprop; got 'lbfgs'"):
        TrainConfig(optimizer="lbfgs")
    edited = TrainConfig()
    edited.optimizer = "lbfgs"  # set after construction: make_optimizer still refuses it
    with pytest.raises(MorphableError, match=r"unknown optimizer 'lbfgs' \(choose one of sgd, adam, adamw, rmsprop\)"):
        make_optimizer(edited, params)
    with pytest.raises(MorphableError, match="interval 'batch'"):
        SchedulerSpec(None, "batch")
    with pytest.raises(MorphableError, match="selection mode 'best'"):
        Selection("best")


class DictData(torch.utils.data.Dataset):
    """Items as dicts (like ``SdfDataset``): ``{"x": (3,), "y": (1,)}``."""

    def __init__(self, n):
        self.rows = _data(n)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"x": self.rows[i, :3], "y": self.rows[i, 3:]}


class DictRegression(RegressionMethod):
    """RegressionMethod on dict batches; validation returns the batch's mean squared error."""

    def training_step(self, batch, step):
        return super().training_step(torch.cat([batch["x"], batch["y"]], dim=1), step)

    def validation_step(self, batch):
        return super().validation_step(torch.cat([batch["x"], batch["y"]], dim=1))


def test_validation_of_dict_batches_is_the_per_sample_mean(tmp_path):
    """13 validation samples in batches of 8 + 5: the logged value is the mean over samples, not batches."""
    method = DictRegression()
    fit(method, DictData(32), DictData(13), LoopConfig(epochs=1, batch_size=8, progress=False), tmp_path,
        torch.device("cpu"))
    rows = (tmp_path / "log.csv").read_text().splitlines()
    logged = float(rows[1].split(",")[2])
    with torch.no_grad():
        data = _data(13)
        per_sample = ((method.network(data[:, :3]) - data[:, 3:]) ** 2).squeeze(1)
    assert logged == pytest.approx(float(per_sample.double().mean()), rel=1e-6)
    batch_means = (float(per_sample[:8].mean()) + float(per_sample[8:].mean())) / 2
    assert abs(logged - batch_means) > 1e-4 * logged  # the weighting matters for this split
    assert batch_length({"x": torch.zeros(5, 3), "y": torch.zeros(5)}) == 5
    assert batch_length([torch.zeros(4, 2), torch.zeros(4)]) == 4


def test_log_gains_columns_without_shifting_old_rows(tmp_path):
    path = tmp_path / "log.csv"
    append_log(path, {"epoch": 1, "train_loss": 1.0, "lr_g": 0.1, "stage": 0, "seconds": 0.5})
    append_log(path, {"epoch": 2, "train_loss": 0.5, "train_r1": 3.0, "val_loss": 0.7, "lr_g": 0.1, "lr_d": 0.2,
                      "stage": 1, "seconds": 0.5})
    append_log(path, {"epoch": 3, "train_loss": 0.25, "lr_g": 0.1, "stage": 1, "seconds": 0.5})
    lines = path.read_text().splitlines()
    assert lines == ["epoch,train_loss,train_r1,val_loss,lr_g,lr_d,stage,seconds",
                     "1,1.0,,,0.1,,0,0.5", "2,0.5,3.0,0.7,0.1,0.2,1,0.5", "3,0.25,,,0.1,,1,0.5"]


def test_truncate_log_keeps_the_first_epochs_and_their_columns(tmp_path):
    path = tmp_path / "log.csv"
    for epoch in (1, 2, 3):
        append_log(path, {"epoch": epoch, "train_loss": 1.0 / epoch, **({"train_r1": 2.0} if epoch == 3 else {}),
                          "seconds": 0.5})
    truncate_log(path, 2)
    assert path.read_text().splitlines() == ["epoch,train_loss,train_r1,seconds", "1,1.0,,0.5", "2,0.5,,0.5"]
    truncate_log(path, 0)
    assert not path.exists()
    truncate_log(path, 0)  # no file: nothing to do


def test_resume_drops_the_log_rows_after_the_checkpoint(tmp_path):
    """A run killed after epoch 3's row but before its checkpoint (rows are written first) logs epoch 3 once."""
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir(), part.mkdir()
    fit(RegressionMethod(), _data(), None, LoopConfig(epochs=4, batch_size=8, progress=False), full,
        torch.device("cpu"))
    fit(RegressionMethod(), _data(), None, LoopConfig(epochs=2, batch_size=8, progress=False), part,
        torch.device("cpu"))
    rows = (full / "log.csv").read_text().splitlines()
    (part / "log.csv").write_text("\n".join(rows[:4]) + "\n")  # epoch 3's row, from the killed process
    fit(RegressionMethod(), _data(), None, LoopConfig(epochs=4, batch_size=8, progress=False), part,
        torch.device("cpu"), resume=True)
    strip = lambda lines: [line.rsplit(",", 1)[0] for line in lines]  # noqa: E731  (seconds aside)
    assert strip((part / "log.csv").read_text().splitlines()) == strip(rows)


def test_tensorboard_events_of_a_resumed_run_are_purged_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package cannot be installed here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    config = lambda epochs: LoopConfig(epochs=epochs, batch_size=8, progress=False, tensorboard=True)  # noqa: E731
    fit(RegressionMethod(), _data(), None, config(3), tmp_path, torch.device("cpu"))
    append_log(tmp_path / "log.csv", {"epoch": 4, "train_loss": 9.0})  # a killed epoch 4, logged and not saved
    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    writer.add_scalar("train_loss", 9.0, 4)
    writer.close()
    fit(RegressionMethod(), _data(), None, config(5), tmp_path, torch.device("cpu"), resume=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    logged = [float(line.split(",")[1]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    events = acc.Scalars("train_loss")
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and 9.0 not in logged
    assert [e.value for e in events] == pytest.approx(logged, rel=1e-6)
    assert sorted(acc.Tags()["scalars"]) == ["lr_net", "stage", "train_loss"]


def test_epoch_seeds_differ_by_seed_epoch_and_rank():
    seeds = {epoch_seed(s, e, r) for s in range(3) for e in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4 and all(0 <= s < 2 ** 63 for s in seeds)
    assert epoch_seed(1, 2, 3) == epoch_seed(1, 2, 3)
