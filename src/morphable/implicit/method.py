"""Auto-decoder training of the implicit identity models (NPM, tri-plane) in the shared loop.

:class:`ImplicitMethod` implements :class:`morphable.train.TrainableMethod`. One code per training shape
lives in a :class:`~morphable.implicit.deepsdf.LatentTable`. The network (``networks["sdf"]``) is trained with
``TrainConfig.optimizer`` (AdamW in the presets), the codes with SparseAdam (optimisers ``sdf`` and ``codes``;
thesis 5.2.2: lr 5e-5 / 1e-3, weight decay 0.02, the learning rates multiplied by ``TrainConfig.lr_decay``
= 0.75 every ``decay_interval`` = 1000 / ``decay_interval_latent`` = 2000 epochs, gradient-norm clipping 0.1
for both). Without stages or 2D objectives the epoch with the lowest ``loss`` (validation when there is
validation data) is kept; otherwise the last epoch (a GAN's losses do not measure quality, and a stage switch
changes what ``loss`` sums).

2D objectives (``views_per_step > 0``, thesis 4.2.3): the network also holds the volume renderer's Laplace
density (learnable beta, ``networks["sdf"].density``), and a second network ``networks["discriminator"]``
(:class:`~morphable.implicit.discriminator.NormalMapDiscriminator`) has its own optimiser ``discriminator``
(SGD at ``lr_discriminator``, thesis 2e-4, no momentum, constant rate). A step of a stage with 2D objectives
renders each shape's views once (:meth:`ImplicitMethod.render_views`), then alternates inside the step:

1. discriminator: ``lambda_d [softplus(D(N)) + softplus(-D(N_gt)) + s lambda_R1 |grad D(N_gt)|^2]`` on the
   detached renders ``N`` and the ground truth (eqs. 4.8, 4.10; lambda_R1 = 5 as printed, i.e.
   ``r1_penalty`` with gamma 10; ``s = r1_every`` every ``r1_every``-th step, else 0: lazy R1);
2. network and codes: the 3D objectives ``+ lambda_nmr L1(N, N_gt) + lambda_g softplus(-D(N))`` (eqs. 4.6,
   4.9, 4.15) with the updated discriminator, whose parameters get no gradient from it.

Stages (:mod:`morphable.implicit.stages`): ``on_epoch_start`` sets ``stage`` and the weights of the epoch's
stage (its ``off`` objectives at 0); in a stage without 2D objectives nothing is rendered and the
discriminator rests (its weights and optimiser state are still checkpointed, so a resume is exact).
The 2D objectives run in one process (the renderer evaluates the field outside the DDP wrapper).

One training step on a batch of B shapes (``SdfDataset`` items, collated) with codes ``z_b``:

* all points of a shape go through the network in one call: surface ``x_s`` (S), near-surface (L S) and
  ball points ``x_b`` (N_b), and, when the density weight is non-zero, ``x_b + w`` with
  ``w ~ N(0, 0.01^2 I)`` drawn from a generator seeded by ``(seed, step)``;
* ``L = l_surface |f(x_s)| + l_normal (1 - cos(grad f(x_s), n)) + l_eikonal | |grad f| - 1 |``
  (surface, near and ball points) ``+ l_non_surface exp(-10 |f(x_b)|) + l_density (f(x_b) - f(x_b + w))^2``
  ``+ l_tv TV(planes) + l_triplane |planes| + l_code |z|^2`` (all means, see :mod:`morphable.implicit.losses`),
  and, only when its weight is set (it is not a thesis objective), ``l_space_sdf`` times DeepSDF's clamped L1
  to the ground-truth SDF of the near-surface and ball points.

The non-surface penalty and the density regularisation use the uniform ball points (the thesis'
"free space within the unit sphere"); the near-surface points enter the eikonal term. Their
ground-truth SDF is not a training target of these 3D objectives (NPHM's identity training does not
use it either).

Distributed training (torchrun). The loop wraps only the network in DistributedDataParallel, which averages
the network's gradients over the W ranks: the gradient of ``(1/W) sum_r L_r`` (L_r: the mean loss of rank
r's batch). The code table lives outside DDP, and each rank would update only the rows of its own batch,
so the ranks' tables would drift apart and rank 0 would checkpoint stale codes for shapes trained
elsewhere. Under DDP the code gradient is therefore synchronised every step (:meth:`ImplicitMethod.
training_step`): every rank all-gathers the batch indices ``k`` (padded to the configured batch size)
and the dense gradient rows ``dL_r/dz_k`` (B, Z) of all ranks, and builds the same sparse gradient

    dL/dZ[k] = (1/W) sum_r sum_{positions of k in rank r's batch} dL_r/dz,

the exact gradient of the global loss, before clipping and SparseAdam. Every rank then takes the same
step on the same rows, so the tables (and SparseAdam's moments, which a resume needs) stay identical on
all ranks at every step and checkpoint, and W ranks with batch B train like one process with batch W B.
The max-norm renormalisation of the look-up is applied by every rank to all gathered rows before the
forward pass (the look-up itself then does no renormalisation), for the same reason. Syncing rows by
ownership after each epoch was rejected: it leaves the optimiser moments stale on the other ranks and
is ambiguous for shapes that DistributedSampler's padding gives to two ranks. The cost is two small
all-gathers per step (W B indices, W B Z floats). Single-process training does not take this path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from morphable.config import ExperimentConfig, NPMConfig, TriplaneConfig
from morphable.errors import MorphableError
from morphable.implicit.deepsdf import DeepSDF, LatentTable
from morphable.implicit.discriminator import NormalMapDiscriminator, channels_first
from morphable.implicit.losses import (LossWeights, code_regularisation, density_perturbation,
                                       density_regularisation, eikonal_loss, non_surface_loss, normal_map_loss,
                                       sdf_and_gradient, space_sdf_loss, surface_normal_loss, surface_sdf_loss,
                                       total_variation_loss, triplane_penalty)
from morphable.implicit.stages import TWO_D, describe_stage, parse_stages, stage_index
from morphable.implicit.triplane import TriplaneSDF
from morphable.train import SchedulerSpec, Selection, make_optimizer, step_decay
from morphable.train.adversarial import discriminator_loss, generator_loss, r1_penalty, r1_scale

BETA_MIN = 1e-4
"""Lower bound of the Laplace density's learnable beta (thesis 5.2.2)."""


class ImplicitNetwork(nn.Module):
    """The trainable network behind one module (so DDP wraps it): ``forward(codes, points) -> (sdf, planes)``.

    ``sdf``: (B, N); ``planes``: (B, 3, C, R, R) for the tri-plane model, ``None`` for NPM. With 2D objectives
    ``density`` is the volume renderer's Laplace density (its learnable beta trains with the network).
    """

    def __init__(self, field: DeepSDF | TriplaneSDF, density: nn.Module | None = None) -> None:
        super().__init__()
        self.field = field
        self.density = density

    def forward(self, codes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """codes: (B, Z), points: (B, N, 3) -> sdf (B, N), planes or None (the field's ``sdf_and_planes``)."""
        return self.field.sdf_and_planes(codes, points)

    def bound(self, codes: torch.Tensor, planes: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The SDF of the batch's shapes for the renderer, ``points (B, N, 3) -> (B, N)``: the tri-plane model
        decodes the given planes (B, 3, C, R, R) (generated once a step), NPM evaluates with ``codes`` (B, Z)."""
        if planes is not None:
            return lambda points: self.field.decode(planes, points)
        return lambda points: self.field.sdf_and_planes(codes, points)[0]


def _triplane(model: TriplaneConfig) -> TriplaneSDF:
    return TriplaneSDF(model.latent, model.channels, model.resolution, model.hidden, model.n_layers, model.beta,
                       model.base_channels, radius=model.radius)


def _deepsdf(model: NPMConfig) -> DeepSDF:
    return DeepSDF(model.latent, model.hidden, model.n_layers, beta=model.beta, radius=model.radius)


FIELDS: dict[type, tuple[Callable[[Any], nn.Module], Callable[[], LossWeights]]] = {
    NPMConfig: (_deepsdf, LossWeights.npm),        # NPM / 3D-only weights (ss 2, sn 0.3, eik 0.1, nsp 0.01)
    TriplaneConfig: (_triplane, LossWeights),      # thesis Table 4.1
}
"""Model config class -> (SDF network builder, default loss weights): the implicit family's table."""


def _field_entry(model: Any) -> tuple[Callable[[Any], nn.Module], Callable[[], LossWeights]]:
    try:
        return FIELDS[type(model)]
    except KeyError:
        raise MorphableError(f"not an implicit model config: {type(model).__name__}") from None


def build_field(model: NPMConfig | TriplaneConfig) -> DeepSDF | TriplaneSDF:
    """The SDF network of a model config."""
    return _field_entry(model)[0](model)


def loss_weights(config: ExperimentConfig) -> LossWeights:
    """The model's default weights (:data:`FIELDS`: Table 4.1 for the tri-plane model, :meth:`LossWeights.npm`
    for NPM) with the config's overrides."""
    base = _field_entry(config.model)[1]()
    known = [f.name for f in dataclasses.fields(LossWeights)]
    unknown = set(config.model.loss_weights) - set(known)
    if unknown:
        raise MorphableError(f"unknown loss weights {sorted(unknown)} (known: {', '.join(known)})")
    for k, stage in enumerate(parse_stages(config.model.stages)):
        if set(stage.off) - set(known):
            raise MorphableError(f"model.stages[{k}].off: unknown losses {sorted(set(stage.off) - set(known))} "
                                 f"(known: {', '.join(known)})")
    return dataclasses.replace(base, **config.model.loss_weights)


def clip_sparse_grad_norm_(param: torch.Tensor, max_norm: float) -> float:
    """Scale a (sparse or dense) gradient to norm at most ``max_norm``; returns the norm before clipping."""
    if param.grad is None:
        return 0.0
    if param.grad.is_sparse:
        param.grad = param.grad.coalesce()
        values = param.grad._values()
    else:
        values = param.grad
    norm = float(values.norm())
    if max_norm > 0 and norm > max_norm:
        values.mul_(max_norm / (norm + 1e-6))
    return norm


class ImplicitMethod:
    """NPM or tri-plane identity model with its code table, for :func:`morphable.train.fit`.

    Args:
        config: an experiment config with ``method`` ``npm`` or ``triplane``.
        n_codes: number of training shapes (rows of the code table).
        device: where network and codes live.
    """

    def __init__(self, config: ExperimentConfig, n_codes: int, device: torch.device) -> None:
        torch.manual_seed(config.seed)
        model = config.model
        self.config = config
        self.device = device
        self.base_weights = loss_weights(config)
        self.stages = parse_stages(model.stages)
        self.weights = self.base_weights
        self.two_d = model.views_per_step > 0
        density = None
        if self.two_d:
            from morphable.render.volume import LaplaceDensity

            density = LaplaceDensity(beta_min=BETA_MIN)
        self.network = ImplicitNetwork(build_field(model), density).to(device)
        self.networks: dict[str, nn.Module] = {"sdf": self.network}
        self.stage = 0
        self.announce: Callable[[str], None] | None = None
        self._announced: int | None = None
        # a GAN's losses do not measure quality, and a stage switch changes what "loss" sums
        self.selection = Selection("last") if self.two_d or len(self.stages) > 1 else Selection("min", "loss")
        self.codes = LatentTable(n_codes, model.latent, max_norm=model.max_norm).to(device)
        train = config.train
        self._optimizers = {"sdf": make_optimizer(train, self.network.parameters()),
                            "codes": torch.optim.SparseAdam(list(self.codes.parameters()), lr=model.lr_latent)}
        self._schedulers = {"sdf": step_decay(self._optimizers["sdf"], train.lr_decay, model.decay_interval),
                            "codes": step_decay(self._optimizers["codes"], train.lr_decay, model.decay_interval_latent)}
        if self.two_d:
            self.discriminator = NormalMapDiscriminator(model.render_resolution,
                                                        model.discriminator_width_divisor).to(device)
            self.networks["discriminator"] = self.discriminator
            self._optimizers["discriminator"] = torch.optim.SGD(self.discriminator.parameters(),
                                                                lr=model.lr_discriminator)
        self.forward_networks = dict(self.networks)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def schedulers(self) -> dict[str, SchedulerSpec]:
        return self._schedulers

    def on_epoch_start(self, epoch: int) -> None:
        """Switch to the stage of ``epoch`` (:mod:`morphable.implicit.stages`): its objectives off (weight 0).
        The stage follows from the epoch alone, so a resume at a boundary continues as the uninterrupted run;
        a new stage (and the first epoch of a process) is announced through ``announce`` when it is set."""
        if self.two_d and isinstance(self.forward_networks["sdf"], DistributedDataParallel):
            raise MorphableError("the 2D objectives (views_per_step > 0) train in one process only, not under "
                                 "torchrun")
        self.stage = stage_index(self.stages, epoch)
        self.weights = dataclasses.replace(self.base_weights, **{name: 0.0 for name in self.stages[self.stage].off})
        if self.announce is not None and self._announced != self.stage and len(self.stages) > 1:
            self.announce(describe_stage(self.stages, self.stage))
        self._announced = self.stage

    def two_d_active(self) -> bool:
        """Whether this stage renders views: the model has 2D objectives and one of them is weighted."""
        return self.two_d and any(getattr(self.weights, name) for name in TWO_D)

    def losses(self, batch: dict[str, torch.Tensor], step: int,
               codes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The weighted 3D objectives of a batch (``SdfDataset`` items collated, B shapes).

        ``codes`` (B, Z): the batch's codes; None looks them up in the table by ``index``.
        Returns every active loss (weight non-zero) and ``loss``, their weighted sum (a graph to backward).
        """
        return self._objectives(batch, step, codes)[0]

    def _objectives(self, batch: dict[str, torch.Tensor], step: int, codes: torch.Tensor | None = None
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """:meth:`losses` and the batch's codes (B, Z) and planes (B, 3, C, R, R) or None (NPM)."""
        w = self.weights
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if codes is None:
            codes = self.codes(batch["index"])
        surface, near, ball = batch["surface_points"], batch["near_points"], batch["ball_points"]
        parts = [surface, near, ball]
        if w.density:
            generator = torch.Generator(device=ball.device).manual_seed(self.config.seed * 1_000_003 + step)
            parts.append(density_perturbation(ball, generator=generator))
        n_s, n_n, n_b = surface.shape[1], near.shape[1], ball.shape[1]
        n_geo = n_s + n_n + n_b
        network = self.forward_networks["sdf"]
        (sdf, planes), grad = sdf_and_gradient(lambda p: network(codes, p), torch.cat(parts, dim=1), n_grad=n_geo)
        losses: dict[str, torch.Tensor] = {
            "surface": surface_sdf_loss(sdf[:, :n_s]),
            "normal": surface_normal_loss(grad[:, :n_s], batch["surface_normals"]),
            "eikonal": eikonal_loss(grad[:, :n_geo]),
            "non_surface": non_surface_loss(sdf[:, n_s + n_n:n_geo]),
        }
        if w.space_sdf:
            target = torch.cat([batch["near_sdf"], batch["ball_sdf"]], dim=1).to(sdf.dtype)
            losses["space_sdf"] = space_sdf_loss(sdf[:, n_s:n_geo], target)
        if w.density:
            losses["density"] = density_regularisation(sdf[:, n_s + n_n:n_geo], sdf[:, n_geo:])
        if planes is not None and w.total_variation:
            losses["total_variation"] = total_variation_loss(planes)
        if planes is not None and w.triplane:
            losses["triplane"] = triplane_penalty(planes)
        if w.code:
            losses["code"] = code_regularisation(codes)
        losses = {k: v for k, v in losses.items() if getattr(w, k)}
        losses["loss"] = w.total(losses) if losses else sdf.sum() * 0.0
        return losses, codes, planes

    def render_views(self, batch: dict[str, torch.Tensor], step: int, codes: torch.Tensor,
                     planes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Volume-rendered normal maps of the batch's views and their ground truth, both ``(B, V, h, w, 3)`` in
        the cameras' frames; the rendering is differentiable in the network, the codes and beta.

        Batch keys (:class:`morphable.implicit.experiment.NormalMapViews`): ``view_normals`` (B, V, H, W, 3)
        ground-truth maps (0 off the mask), ``view_K`` (B, V, 3, 3) and ``view_pose`` (B, V, 4, 4) the OpenCV
        cameras. The maps are rendered at ``render_resolution`` = ``h = H / stride``: the pixels
        ``offset + stride k`` of the ground truth, the offset (rows, columns) drawn per step from ``(seed,
        step)``. Rays are clipped to the unit ball, where every shape lies.
        """
        from morphable.render.camera import Camera
        from morphable.render.volume import render_views

        model = self.config.model
        target = batch["view_normals"].to(self.device)
        b, v, height, width, _ = target.shape
        stride = height // model.render_resolution
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        oy, ox = (int(o) for o in torch.randint(stride, (2,), generator=generator))
        cameras = [[Camera.from_matrices(k, pose, width, height) for k, pose in zip(ks, poses)]
                   for ks, poses in zip(batch["view_K"], batch["view_pose"])]
        far = float(max(c.center.norm() for views in cameras for c in views)) + 1.0
        rendering = render_views(self.network.bound(codes, planes), cameras, self.network.density, stride=stride,
                                 offset=(oy, ox), dtype=target.dtype, device=self.device, sampler=model.sampler,
                                 near=0.0, far=far, bound=1.0, create_graph=True)
        return rendering.normals, target[:, :, oy::stride, ox::stride]

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor, step: int) -> dict[str, float]:
        """One SGD step of the discriminator on maps (N, 3, H, W): ``lambda_d (L_adv + s r1_lambda E|grad D|^2)``
        (eqs. 4.8, 4.10) with ``s = r1_scale(step, r1_every)`` (lazy R1). Returns ``discriminator`` (L_adv) and
        ``r1`` (``s E|grad D|^2 r1_lambda``, 0 on the steps lazy R1 skips, so its epoch mean estimates the
        penalty)."""
        model = self.config.model
        scale = r1_scale(step, model.r1_every) if model.r1_lambda else 0
        real = real.detach().requires_grad_(scale > 0)
        disc = self.forward_networks["discriminator"]
        real_logits, fake_logits = disc(real), disc(fake.detach())
        adversarial = discriminator_loss(real_logits, fake_logits)
        penalty = r1_penalty(real_logits, real, gamma=2.0 * model.r1_lambda) * scale if scale else \
            adversarial.new_zeros(())
        optimizer = self._optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        (self.weights.discriminator * (adversarial + penalty)).backward()
        optimizer.step()
        return {"discriminator": float(adversarial.detach()), "r1": float(penalty.detach())}

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One update with gradient clipping; returns the losses as floats.

        3D only: one AdamW + SparseAdam step on the weighted 3D objectives. With the 2D objectives of this
        stage, the views are rendered once; the discriminator takes its step on them (detached) and the real
        maps first, then the network and codes take theirs on ``3D + lambda_nmr L_nmr + lambda_g L_g`` with
        ``L_g`` from the updated discriminator (whose parameters get no gradient from it).

        Under DDP (``forward_networks["sdf"]`` wrapped by the loop) the code gradient is synchronised across
        ranks (see the module docstring and :meth:`_distributed_backward`)."""
        self._optimizers["sdf"].zero_grad(set_to_none=True)
        self._optimizers["codes"].zero_grad(set_to_none=True)
        logged: dict[str, float] = {}
        if isinstance(self.forward_networks["sdf"], DistributedDataParallel):
            losses = self._distributed_backward(batch, step)
        else:
            losses, codes, planes = self._objectives(batch, step)
            if self.two_d_active():
                losses, logged = self._two_d_objectives(batch, step, losses, codes, planes)
            losses["loss"].backward()
        model = self.config.model
        if model.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), model.grad_clip)
        clip_sparse_grad_norm_(self.codes.weight, model.grad_clip_latent)
        self._optimizers["sdf"].step()
        self._optimizers["codes"].step()
        return {**{k: float(v.detach()) for k, v in losses.items()}, **logged}

    def _two_d_objectives(self, batch: dict[str, torch.Tensor], step: int, losses: dict[str, torch.Tensor],
                          codes: torch.Tensor, planes: torch.Tensor | None
                          ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Render, update the discriminator, and add the generator's 2D terms to ``losses`` (``loss`` summed
        again). Returns the losses and the discriminator's logged terms."""
        w = self.weights
        rendered, target = self.render_views(batch, step, codes, planes)
        fake, real = channels_first(rendered), channels_first(target)
        logged = self._discriminator_step(fake, real, step) if w.discriminator else {}
        losses = {k: v for k, v in losses.items() if k != "loss"}
        if w.normal_map:
            losses["normal_map"] = normal_map_loss(rendered, target)
        if w.generator:
            self.discriminator.requires_grad_(False)
            try:
                losses["generator"] = generator_loss(self.forward_networks["discriminator"](fake))
            finally:
                self.discriminator.requires_grad_(True)
        losses["loss"] = w.total(losses)
        return losses, logged

    def _distributed_backward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """Backward of one DDP step with the code gradient of all ranks in ``codes.weight.grad``.

        Rank r's batch indices (B_r <= the configured batch size B, padded with -1 to B) and its code
        gradient rows (B_r, Z) are all-gathered; every rank sets the same sparse gradient (rows of all
        ranks, divided by the world size W, duplicates summed at coalescing). Returns the losses.
        """
        import torch.distributed as dist

        world = dist.get_world_size()
        index = batch["index"].to(self.device)
        capacity = self.config.train.batch_size
        if len(index) > capacity:
            raise ValueError(f"batch of {len(index)} shapes exceeds the configured batch size {capacity}")
        padded = torch.full((capacity,), -1, dtype=torch.long, device=self.device)
        padded[:len(index)] = index
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        all_index = torch.cat(gathered)
        valid = all_index >= 0
        table = self.codes.weight
        max_norm = self.codes.embedding.max_norm
        with torch.no_grad():
            if max_norm is not None:
                torch.embedding_renorm_(table, all_index[valid].unique(), max_norm, self.codes.embedding.norm_type)
        codes = F.embedding(index, table.detach()).requires_grad_(True)
        losses = self.losses(batch, step, codes)
        losses["loss"].backward()
        rows = torch.zeros(capacity, table.shape[1], dtype=table.dtype, device=table.device)
        rows[:len(index)] = codes.grad
        gathered_rows = [torch.empty_like(rows) for _ in range(world)]
        dist.all_gather(gathered_rows, rows)
        values = torch.cat(gathered_rows)[valid] / world
        table.grad = torch.sparse_coo_tensor(all_index[valid][None], values, table.shape, check_invariants=True)
        return losses

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """The same losses without an update (codes are looked up by ``index``, so the validation shapes are
        training shapes, e.g. at other sample points); gradients in the points are needed for the normal and
        eikonal terms, so autograd is on even inside the loop's no_grad. The density noise is that of step 0."""
        with torch.enable_grad():
            return {k: float(v.detach()) for k, v in self.losses(batch, 0).items()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The code table (N, Z)."""
        return {"codes": self.codes.weight.detach()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        codes = state["codes"]
        if codes.shape != self.codes.weight.shape:
            raise MorphableError(f"checkpoint has {tuple(codes.shape)} codes, the model "
                                 f"{tuple(self.codes.weight.shape)}")
        with torch.no_grad():
            self.codes.weight.copy_(codes.to(self.codes.weight))
