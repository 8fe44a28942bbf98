"""Two networks, two optimisers, two stages in the shared loop: a toy GAN on 2-D points.

Stage 0 (epochs before ``SWITCH``): the generator matches the data's mean and covariance while the
discriminator learns real vs fake; stage 1: the non-saturating GAN with lazy R1 (every 2nd step), and the
generator's learning rate is halved at the switch. The generator's scheduler steps per epoch, the
discriminator's per step; the noise comes from torch's global generator, so exact resume needs the
loop's per-epoch seeding, and the switch's learning-rate change needs the checkpointed stage.
"""

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gloo import run_gloo
from morphable.io import load_weights
from morphable.train import (BEST_CHECKPOINT, LAST_CHECKPOINT, LoopConfig, SchedulerSpec, Selection, fit,
                             init_distributed, save_checkpoint, step_decay)
from morphable.train.adversarial import discriminator_loss, generator_loss, r1_penalty, r1_scale

EPOCHS, SWITCH = 6, 3
LR_G, LR_D, DECAY_D = 2 ** -5, 4e-3, 0.95
CPU = torch.device("cpu")


def _points(n, seed):
    """(n, 2) samples of an anisotropic Gaussian centred at (2, -1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([0.5, 0.2]) + torch.tensor([2.0, -1.0])


TRAIN, VAL = _points(64, 1), _points(24, 2)


def moment_distance(a, b):
    """|mean(a) - mean(b)|^2 + |cov(a) - cov(b)|_F^2 of point sets (N, 2)."""
    return (a.mean(0) - b.mean(0)).square().sum() + (torch.cov(a.T) - torch.cov(b.T)).square().sum()


def _mlp(out):
    return nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, out))


class ToyGAN:
    def __init__(self, seed=0, selection=Selection("last")):
        torch.manual_seed(seed)
        self.generator, self.discriminator = _mlp(2), _mlp(1)
        self.networks = {"generator": self.generator, "discriminator": self.discriminator}
        self.forward_networks = dict(self.networks)
        self.stage = 0
        self.selection = selection
        self.noise_sum = 0.0
        self._opts = {"generator": torch.optim.Adam(self.generator.parameters(), LR_G, betas=(0.5, 0.9)),
                      "discriminator": torch.optim.Adam(self.discriminator.parameters(), LR_D, betas=(0.5, 0.9))}
        self._scheds = {"generator": step_decay(self._opts["generator"], 0.5, every=2),
                        "discriminator": SchedulerSpec(
                            torch.optim.lr_scheduler.ExponentialLR(self._opts["discriminator"], DECAY_D), "step")}

    def optimizers(self):
        return self._opts

    def schedulers(self):
        return self._scheds

    def on_epoch_start(self, epoch):
        if self.stage == 0 and epoch >= SWITCH:
            self.stage = 1
            for group in self._opts["generator"].param_groups:
                group["lr"] *= 0.5

    def training_step(self, batch, step):
        gen, disc = self.forward_networks["generator"], self.forward_networks["discriminator"]
        z = torch.randn(len(batch), 2)
        self.noise_sum += float(z.sum())
        with torch.no_grad():
            fake = gen(z)
        scale = r1_scale(step, 2) if self.stage == 1 else 0
        real = batch.clone().requires_grad_(scale > 0)
        logits = disc(torch.cat([real, fake])).squeeze(1)
        loss_d = discriminator_loss(logits[:len(batch)], logits[len(batch):])
        losses = {"d": loss_d.item()}
        if scale:
            r1 = r1_penalty(logits[:len(batch)], real, gamma=1.0)
            loss_d = loss_d + scale * r1
            losses["r1"] = r1.item()
        self._opts["discriminator"].zero_grad()
        loss_d.backward()
        self._opts["discriminator"].step()
        fake = gen(z)
        if self.stage == 0:
            loss_g = moment_distance(fake, batch)
            losses["g_moments"] = loss_g.item()
        else:
            loss_g = generator_loss(disc(fake).squeeze(1))
            losses["g_adv"] = loss_g.item()
        self._opts["generator"].zero_grad()
        loss_g.backward()
        self._opts["generator"].step()
        return losses

    def validation_step(self, batch):
        fake = self.forward_networks["generator"](torch.randn(len(batch), 2))
        d_real = torch.sigmoid(self.forward_networks["discriminator"](batch)).mean()
        return {"loss": moment_distance(fake, batch).item(), "d_real": d_real.item()}

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass


def _train(method, out, epochs, resume=False, dist_info=None, batch_size=16):
    out.mkdir(exist_ok=True)
    return fit(method, TRAIN, VAL, LoopConfig(epochs=epochs, batch_size=batch_size, seed=3, progress=False), out,
               CPU, resume=resume, dist_info=dist_info)


def _rows(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_checkpoint(a, b):
    """Same tensors bit for bit and the same metadata (epoch, stage, optimiser / scheduler structure)."""
    (ta, ma), (tb, mb) = load_weights(a), load_weights(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert ma == mb


def test_stages_learning_rates_and_losses_are_logged(tmp_path):
    _train(ToyGAN(), tmp_path, EPOCHS)
    rows = _rows(tmp_path)
    assert [int(r["stage"]) for r in rows] == [0] * SWITCH + [1] * (EPOCHS - SWITCH)
    steps_per_epoch = len(TRAIN) // 16
    for e, row in enumerate(rows, start=1):
        # generator: x0.5 every 2 epochs, and x0.5 at the switch (powers of two: exact)
        assert float(row["lr_generator"]) == LR_G * 0.5 ** (e // 2) * (0.5 if e > SWITCH else 1.0)
        # discriminator: x0.95 after every step
        assert float(row["lr_discriminator"]) == pytest.approx(LR_D * DECAY_D ** (e * steps_per_epoch), rel=1e-12)
        assert (row["train_g_moments"] != "") == (e <= SWITCH)
        assert (row["train_g_adv"] != "") == (row["train_r1"] != "") == (e > SWITCH)
        assert float(row["val_loss"]) >= 0 and 0 < float(row["val_d_real"]) < 1
    # stage 0 is a real fit: the generator's moments approach the data's
    assert float(rows[SWITCH - 1]["train_g_moments"]) < 0.5 * float(rows[0]["train_g_moments"])


@pytest.mark.parametrize("resume_at", [SWITCH - 1, SWITCH, SWITCH + 1])
def test_resume_before_at_and_after_the_stage_switch_is_bit_identical(tmp_path, resume_at):
    _train(ToyGAN(), tmp_path / "full", EPOCHS)
    _train(ToyGAN(), tmp_path / "part", resume_at)
    assert load_weights(tmp_path / "part" / LAST_CHECKPOINT)[1]["stage"] == str(int(resume_at > SWITCH))
    resumed = ToyGAN(seed=123)  # another init: everything must come from the checkpoint
    _train(resumed, tmp_path / "part", EPOCHS, resume=True)
    assert resumed.stage == 1
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        _assert_same_checkpoint(tmp_path / "full" / name, tmp_path / "part" / name)
    full, part = _rows(tmp_path / "full"), _rows(tmp_path / "part")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in part] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in full]


@pytest.mark.parametrize("mode,key", [("min", "loss"), ("max", "d_real")])
def test_selection_keeps_the_chosen_epoch(tmp_path, mode, key):
    summary = _train(ToyGAN(selection=Selection(mode, key)), tmp_path / "run", EPOCHS)
    values = [float(r[f"val_{key}"]) for r in _rows(tmp_path / "run")]
    chosen = (min if mode == "min" else max)(range(EPOCHS), key=values.__getitem__) + 1
    assert chosen != EPOCHS  # so that the test tells the selection from "last"
    assert summary["best_epoch"] == chosen and summary["best_value"] == values[chosen - 1]
    assert summary["selected_by"] == f"{mode} val_{key}"
    assert load_weights(tmp_path / "run" / BEST_CHECKPOINT)[1]["epoch"] == str(chosen)
    # the weights of that epoch: a run stopped there ends with them
    _train(ToyGAN(), tmp_path / "short", chosen)
    best = load_weights(tmp_path / "run" / BEST_CHECKPOINT)[0]
    short = load_weights(tmp_path / "short" / LAST_CHECKPOINT)[0]
    for name in best:
        if name.startswith("networks."):
            assert torch.equal(best[name], short[name]), name


def test_selection_last_keeps_the_last_epoch(tmp_path):
    summary = _train(ToyGAN(), tmp_path, EPOCHS)
    assert summary["best_epoch"] == EPOCHS and summary["selected_by"] == "last" and summary["best_value"] is None
    _assert_same_checkpoint(tmp_path / BEST_CHECKPOINT, tmp_path / LAST_CHECKPOINT)


def _ddp_job(rank, root):
    """Per rank: a full run, and runs stopped before / after the switch then resumed; each rank dumps its
    own final state (networks and optimisers) to compare the ranks."""
    root = Path(root)
    dist_info = init_distributed(CPU)
    method = ToyGAN()
    _train(method, root / "full", EPOCHS, dist_info=dist_info, batch_size=8)
    save_checkpoint(root / f"full-rank{rank}.safetensors", method, EPOCHS, {"noise": method.noise_sum})
    for stop in (SWITCH - 1, SWITCH + 1):
        _train(ToyGAN(), root / f"part{stop}", stop, dist_info=dist_info, batch_size=8)
        resumed = ToyGAN(seed=123)
        _train(resumed, root / f"part{stop}", EPOCHS, resume=True, dist_info=dist_info, batch_size=8)
        save_checkpoint(root / f"part{stop}-rank{rank}.safetensors", resumed, EPOCHS, {})


def test_ddp_two_gloo_processes_keep_one_model_and_resume_bit_identically(tmp_path):
    run_gloo(_ddp_job, 2, str(tmp_path))
    full = [load_weights(tmp_path / f"full-rank{r}.safetensors") for r in range(2)]
    for key in full[0][0]:  # DDP averages the gradients: both ranks take the same steps
        assert torch.equal(full[0][0][key], full[1][0][key]), key
    noise = [json.loads(meta["extra"])["noise"] for _, meta in full]
    assert noise[0] != noise[1]  # each rank draws its own noise
    written = load_weights(tmp_path / "full" / LAST_CHECKPOINT)[0]
    for key in full[0][0]:  # rank 0 wrote the run's checkpoint
        assert torch.equal(written[key], full[0][0][key]), key
    for stop in (SWITCH - 1, SWITCH + 1):
        for rank in range(2):
            part = load_weights(tmp_path / f"part{stop}-rank{rank}.safetensors")[0]
            assert part.keys() == full[rank][0].keys()
            for key in part:
                assert torch.equal(part[key], full[rank][0][key]), (stop, rank, key)
        _assert_same_checkpoint(tmp_path / f"part{stop}" / LAST_CHECKPOINT, tmp_path / "full" / LAST_CHECKPOINT)
    rows = _rows(tmp_path / "full")
    assert len(rows) == EPOCHS and [int(r["stage"]) for r in rows] == [0] * SWITCH + [1] * (EPOCHS - SWITCH)
