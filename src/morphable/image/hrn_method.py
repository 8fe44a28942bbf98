"""HRN training (:mod:`morphable.image.hrn`) as a :class:`~morphable.train.TrainableMethod`, in two stages.

**Stage 0** (``coarse_epochs``; the paper starts from a pre-trained coarse model, which the issue allows us to
pre-train here): the coarse regressor, supervised on the photos' stored coefficients ``c*`` and landmarks,

    L_0 = mean ((c - c*) / sigma)^2 + LANDMARK_PRETRAIN L_lan(q(c), q*)

(``sigma``: the targets' deviations, :class:`~morphable.image.hrn.CoarseRegressor`),

and the identity embedding of the perceptual loss (:mod:`morphable.image.perceptual`: a cosine-softmax
classifier over the training identities, cross-entropy), both from the crops, at ``pretrain_lr_scale`` times
the rate.

**Stage 1** (HRN; supplement eq. 1-2, weights :data:`~morphable.image.hrn_losses.HRN_WEIGHTS` unless
``config.model.weights`` overrides them), alternating per step:

* self-supervised (even steps): with ``R_1`` the render of ``M_1`` (coarse + deformation) and ``R_2`` of ``M_1``
  shaded by the displacement map,

      L = l_1 (L_photo(R_1) + L_photo(R_2)) + l_2 (L_per(R_1) + L_per(R_2)) + l_3 L_lan(M_1) + l_4 L_tv(Mmap)
          + l_5 L_reg(Dmap) + l_6 L_con(C_1) + l_7 (L_G(D_mid(Mmap)) + L_G(D_high(Dmap)))

  (``L_tv``, ``L_reg`` on maps in :data:`HRN_UNIT_CM` units), then each PatchGAN takes one non-saturating
  step on the masked ground-truth map (real) against the masked prediction (fake), both divided by the map's
  bound so that the discriminators see values in [-1, 1] (pix2pix's image range), with lazy R1 (``r1_gamma`` every ``r1_every`` steps; instance-normalised
  discriminators, so R1's per-sample gradients are exact). The identity embedding is frozen.
* supervised (odd steps, when ``supervised``): ``l_8 (L_mid + L_high)``, the L1 distances of both maps to
  their targets (:mod:`morphable.image.hrn_targets`) over the tile's texels, updating the U-Nets only.

The coarse regressor keeps training in stage 1 at ``coarse_lr_scale`` times the rate (0 freezes it). The
run keeps its last epoch (a GAN's losses do not rank epochs); validation reports, every epoch, the coarse
landmark error and the model-frame vertex errors of the coarse and mid meshes over the face (mm).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from morphable.image.hrn import HRNGenerators, HRNGeometry, hrn_forward, model_frame
from morphable.image.hrn_losses import (HRN_WEIGHTS, contour_loss, displacement_regulariser, landmark_loss,
                                        photometric_loss, supervised_map_loss, total_variation)
from morphable.image.perceptual import COSINE_SCALE, IdentityEmbedding, perceptual_loss
from morphable.train.adversarial import discriminator_loss, generator_loss, r1_penalty, r1_scale
from morphable.train.optim import make_optimizer
from morphable.train.protocol import SchedulerSpec, Selection

LANDMARK_PRETRAIN = 1e-3
"""Weight of the landmark term in stage 0 (per squared crop pixel, beside a unit coefficient MSE)."""

HRN_UNIT_CM = 10.0
"""The length unit the supplement's weights of ``L_tv``, ``L_reg`` and the supervised L1 terms apply to:
Deep3DFaceRecon's BFM, whose faces (about 2 units wide at distance 10 before a focal of 1015 px on 224-px
crops) are in decimetres. The maps enter those terms in this unit, so the weights keep their balance against
the photometric term whatever the face model's unit."""


class IdentityClassifier(nn.Module):
    """The cosine-softmax class centres ``w (classes, dim)`` of the identity embedding's training."""

    def __init__(self, classes: int, dim: int) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(classes, dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Unit ``embedding (B, dim)`` -> logits ``s <e, w_y / |w_y|>`` ``(B, classes)``."""
        return COSINE_SCALE * embedding @ nn.functional.normalize(self.centres, dim=-1).T


class HRNMethod:
    """HRN on one :class:`~morphable.image.hrn_setup.HRNSetup` (module docstring)."""

    selection = Selection("last")

    def __init__(self, config, device: torch.device | str, setup) -> None:
        from morphable.image.unet import PatchDiscriminator

        m = config.model
        torch.manual_seed(config.seed)
        self.config, self.device, self.setup = config, torch.device(device), setup
        self.weights = {**HRN_WEIGHTS, **m.weights}
        face = setup.coarse_face(m.size, m.fill)
        cm = setup.face["cm"]
        self.geometry = HRNGeometry(face, setup.tile, m.mid_size, m.high_size).to(self.device)
        self.face = self.geometry.face
        generators = HRNGenerators(setup.coefficient_mean, setup.coefficient_std, m.mid_size, m.high_size, m.mid_range_mm * cm / 10,
                                   m.high_range_mm * cm / 10, coarse_depth=m.coarse_depth, coarse_width=m.coarse_width,
                                   generator_width=m.generator_width)
        self.generators = generators.to(self.device)
        self.class_of = {int(j): k for k, j in enumerate(setup.identities)}
        networks = {"coarse": generators.coarse, "mid": generators.mid, "high": generators.high,
                    "identity": IdentityEmbedding(m.identity_dim, 18, m.identity_width),
                    "classifier": IdentityClassifier(len(setup.identities), m.identity_dim),
                    "disc_mid": PatchDiscriminator(3, m.discriminator_width, m.discriminator_layers, "instance"),
                    "disc_high": PatchDiscriminator(1, m.discriminator_width, m.discriminator_layers, "instance")}
        self.networks = {name: net.to(self.device) for name, net in networks.items()}
        self.forward_networks = dict(self.networks)
        region = torch.as_tensor(setup.tile.weights >= 1)
        self.face_region = region.to(self.device)
        self.to_hrn_unit = 1.0 / (HRN_UNIT_CM * cm)  # model units -> decimetres
        self.map_ranges = (generators.mid_range, generators.high_range)
        self.stage = 0
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None
        self._d_steps = 0

    # ------------------------------------------------------------------ the loop's contract
    def _scaled(self, scale: float):
        return dataclasses.replace(self.config.train, lr=self.config.train.lr * scale)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._optimizers is None:
            n, m = self.networks, self.config.model
            train = self.config.train
            pretrain = self._scaled(m.pretrain_lr_scale)
            self._optimizers = {
                "coarse": make_optimizer(pretrain, n["coarse"].parameters()),
                "identity": make_optimizer(pretrain, [*n["identity"].parameters(), *n["classifier"].parameters()]),
                "generators": make_optimizer(train, [*n["mid"].parameters(), *n["high"].parameters()]),
                "discriminators": make_optimizer(self._scaled(m.discriminator_lr_scale),
                                                 [*n["disc_mid"].parameters(), *n["disc_high"].parameters()])}
        return self._optimizers

    def schedulers(self) -> dict[str, SchedulerSpec]:
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        stage = 0 if epoch < self.config.model.coarse_epochs else 1
        if stage == 1 and self.stage == 0:
            coarse = self.optimizers()["coarse"]
            for group in coarse.param_groups:
                group["lr"] = self.config.train.lr * self.config.model.coarse_lr_scale
        self.stage = stage

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"discriminator_steps": torch.tensor(self._d_steps)}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if "discriminator_steps" in state:
            self._d_steps = int(state["discriminator_steps"])

    # ------------------------------------------------------------------ batches and terms
    def _tensors(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device, torch.float32) for k, v in batch.items()
               if torch.is_tensor(v) and v.is_floating_point()}
        out["classes"] = torch.as_tensor([self.class_of.get(int(j), -1) for j in batch["identity"]],
                                         device=self.device)
        return out

    def _stage0(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n = self.forward_networks
        coefficients = n["coarse"](b["image"])
        decoded = self.face(coefficients)
        coarse = self.networks["coarse"]
        mse = (coarse.standardise(coefficients) - coarse.standardise(b["coefficients"])).pow(2).mean()
        lan = landmark_loss(decoded.landmarks, b["landmarks"])
        total = mse + LANDMARK_PRETRAIN * lan
        scalars = {"coefficients": float(mse.detach()), "landmark": float(lan.detach())}
        known = b["classes"] >= 0
        if known.any():
            logits = n["classifier"](n["identity"](b["image"][known]))
            ce = nn.functional.cross_entropy(logits, b["classes"][known])
            total = total + ce
            scalars["identity_ce"] = float(ce.detach())
            scalars["identity_accuracy"] = float((logits.argmax(1) == b["classes"][known]).float().mean())
        scalars["loss"] = float(total.detach())
        return total, scalars

    def _self_supervised(self, b: dict[str, torch.Tensor], levels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The stage-1 terms of the module docstring (unweighted) and their weighted sum."""
        n, w, geo = self.forward_networks, self.weights, self.geometry
        photo = b["image"].permute(0, 2, 3, 1)
        face_mask = b["mask"] * b["valid"]
        r1, c1 = geo.render(levels.coarse, levels.mid_vertices)
        r2, c2 = geo.render(levels.coarse, levels.mid_vertices, levels.high_map)
        identity = n["identity"]
        identity.eval()
        terms = {"photo": photometric_loss(photo, r1, face_mask, c1) + photometric_loss(photo, r2, face_mask, c2),
                 "landmark": landmark_loss(levels.mid_landmarks(self.face), b["landmarks"]),
                 "tv": total_variation(levels.mid_map * self.to_hrn_unit),
                 "reg": displacement_regulariser(levels.high_map * self.to_hrn_unit),
                 "contour": contour_loss(c1 * b["valid"], face_mask)}
        if w["perceptual"] > 0:
            terms["perceptual"] = perceptual_loss(identity, photo, r1, c1) + perceptual_loss(identity, photo, r2, c2)
        if w["adversarial"] > 0 and "mid_target" in b:
            mid_mask, high_mask = geo.texel_mask(geo.mid_size), geo.texel_mask(geo.high_size)
            mid_range, high_range = self.map_ranges
            terms["adversarial"] = (generator_loss(n["disc_mid"](levels.mid_map * mid_mask / mid_range)) +
                                    generator_loss(n["disc_high"](levels.high_map * high_mask / high_range)))
        total = sum(w[k] * v for k, v in terms.items())
        return total, terms

    def _supervised(self, b: dict[str, torch.Tensor], levels) -> dict[str, torch.Tensor]:
        geo = self.geometry
        u = self.to_hrn_unit
        return {"mid_l1": supervised_map_loss(levels.mid_map * u, b["mid_target"] * u, geo.texel_mask(geo.mid_size)),
                "high_l1": supervised_map_loss(levels.high_map * u, b["high_target"] * u,
                                               geo.texel_mask(geo.high_size))}

    def _discriminator_step(self, b: dict[str, torch.Tensor], levels) -> dict[str, float]:
        geo, n, m = self.geometry, self.forward_networks, self.config.model
        optimizer = self.optimizers()["discriminators"]
        optimizer.zero_grad(set_to_none=True)
        scale = r1_scale(self._d_steps, m.r1_every) if m.r1_gamma > 0 else 0
        total, scalars = 0.0, {}
        mid_range, high_range = self.map_ranges
        for name, fake, real, mask, bound in (
                ("mid", levels.mid_map, b["mid_target"], geo.texel_mask(geo.mid_size), mid_range),
                ("high", levels.high_map, b["high_target"], geo.texel_mask(geo.high_size), high_range)):
            real = (real * mask / bound).requires_grad_(scale > 0)
            real_logits = n[f"disc_{name}"](real)
            loss = discriminator_loss(real_logits, n[f"disc_{name}"](fake.detach() * mask / bound))
            if scale:
                loss = loss + scale * r1_penalty(real_logits, real, m.r1_gamma)
            total = total + loss
            scalars[f"d_{name}"] = float(loss.detach())
        total.backward()
        optimizer.step()
        self._d_steps += 1
        return scalars

    def _set_training(self, training: bool) -> None:
        for name, net in self.networks.items():
            net.train(training and (name != "identity" or self.stage == 0))

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        self._set_training(True)
        b = self._tensors(batch)
        opts = self.optimizers()
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        if self.stage == 0:
            total, scalars = self._stage0(b)
            total.backward()
            opts["coarse"].step()
            opts["identity"].step()
            return scalars
        train_coarse = self.config.model.coarse_lr_scale > 0
        supervised = self.config.model.supervised and "mid_target" in b and step % 2 == 1
        if supervised:
            levels = hrn_forward(self.generators, self.geometry, b["image"], train_coarse=False)
            terms = self._supervised(b, levels)
            total = self.weights["supervised"] * (terms["mid_l1"] + terms["high_l1"])
            total.backward()
            opts["generators"].step()
            return {**{k: float(v.detach()) for k, v in terms.items()}, "supervised_loss": float(total.detach())}
        levels = hrn_forward(self.generators, self.geometry, b["image"], train_coarse=train_coarse)
        total, terms = self._self_supervised(b, levels)
        total.backward()
        opts["generators"].step()
        if train_coarse:
            opts["coarse"].step()
        scalars = {**{k: float(v.detach()) for k, v in terms.items()}, "loss": float(total.detach())}
        if "mid_target" in b and self.weights["adversarial"] > 0:
            scalars.update(self._discriminator_step(b, levels))
        return scalars

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self._set_training(False)
        b = self._tensors(batch)
        levels = hrn_forward(self.generators, self.geometry, b["image"])
        scalars = {"landmark_px": float((levels.coarse.landmarks - b["landmarks"]).norm(dim=-1).mean())}
        if "mesh" in b:
            errors = self.vertex_errors_mm(levels, b["mesh"])
            scalars.update({f"{k}_mm": v for k, v in errors.items()})
        if self.stage == 1:
            total, terms = self._self_supervised(b, levels)
            scalars.update({k: float(v) for k, v in terms.items()})
            scalars["loss"] = float(total)
        return scalars

    def vertex_errors_mm(self, levels, mesh: torch.Tensor) -> dict[str, float]:
        """Mean model-frame distance (mm) over the face region of the coarse and mid meshes to the ground-truth
        ``mesh (B, V, 3)`` (model frame, same topology)."""
        from morphable.image.coarse import euler_rotation

        g = self.face.layout.split(levels.coefficients)
        R = euler_rotation(g["rotation"])
        t = self.face.t_ref + g["translation"] * self.face.cm
        out = {}
        for name, vertices in (("coarse", levels.coarse.vertices), ("mid", levels.mid_vertices)):
            d = (model_frame(vertices, R, t) - mesh)[:, self.face_region].norm(dim=-1)
            out[name] = float(d.mean()) * 10.0 / self.face.cm
        return out
