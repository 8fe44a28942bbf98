"""Auto-decoder training of the expression deformation field over a frozen identity model (thesis 4.3.3).

:class:`ExpressionMethod` implements :class:`morphable.train.TrainableMethod` on batches of
:class:`~morphable.data.deformation.DeformationDataset` items. It holds

* ``networks["deformation"]``: the field ``F_ex(x, z_ex, z_id)`` (:class:`~morphable.implicit.deformation.
  DeformationField`), trained with ``TrainConfig.optimizer`` (optimiser ``deformation``);
* one expression code per sample of the data (posed frames and each subject's neutral) in a
  :class:`~morphable.implicit.deepsdf.LatentTable` without max-norm, trained with SparseAdam at ``lr_latent``
  (optimiser ``codes``);
* the identity codes ``(S, d_id)`` of the data's subjects, copied from the identity run and frozen (checkpointed
  as ``method_extra.identity_codes`` so that a run can tell when its identity run has changed).

A step on B samples with P pairs each minimises eq. 4.21 (:func:`~morphable.implicit.deformation.
deformation_losses`, means over the pairs):

    L = w_corr mean_face |x_n + F_ex(x_n) - x_p|^2 + w_pen mean_nonface |F_ex(x_n)|^2 + w_code mean_b |z_ex|^2

Validation: the same objectives on a fixed draw of pairs of every sample (seed ``seed + 1``); the checkpoint
kept is the epoch with the lowest validation loss. It trains in one process (the code table is outside DDP and
its gradients are not synchronised, unlike :class:`~morphable.implicit.method.ImplicitMethod`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from morphable.config import ExperimentConfig
from morphable.errors import MorphableError
from morphable.implicit.deepsdf import LatentTable
from morphable.implicit.deformation import DeformationField, DeformationWeights, deformation_losses
from morphable.train import SchedulerSpec, Selection, make_optimizer, step_decay


def check_width(model, identity_dim: int) -> None:
    """The field's skip layer takes ``[z_ex, z_id, x]``: ``model.hidden`` must exceed ``latent + d_id + 3``."""
    if model.hidden <= model.latent + identity_dim + 3:
        raise MorphableError(f"model.hidden {model.hidden} must exceed latent {model.latent} + the identity "
                             f"code size {identity_dim} + 3 (the skip layer's input)")


class ExpressionMethod:
    """The expression field and code table of an expression run.

    Args:
        config: an experiment config with method ``expression``.
        identity_codes: ``(S, d_id)`` the identity codes of the data's subjects, in the data's subject order.
        n_samples: rows of the expression code table (samples of the deformation data).
        device: where everything lives.
    """

    def __init__(self, config: ExperimentConfig, identity_codes: torch.Tensor, n_samples: int,
                 device: torch.device) -> None:
        torch.manual_seed(config.seed)
        model = config.model
        identity_dim = identity_codes.shape[1]
        check_width(model, identity_dim)
        self.config, self.device = config, device
        self.field = DeformationField(model.latent, identity_dim, model.hidden, model.n_layers, model.beta).to(device)
        self.networks = {"deformation": self.field}
        self.forward_networks = dict(self.networks)
        self.codes = LatentTable(n_samples, model.latent, max_norm=None).to(device)
        self.identity_codes = identity_codes.detach().to(device=device, dtype=torch.float32).clone()
        self.weights = DeformationWeights(model.correspondence, model.penalty, model.code)
        self.stage = 0
        self.selection = Selection("min", "loss")
        train = config.train
        self._optimizers = {"deformation": make_optimizer(train, self.field.parameters()),
                            "codes": torch.optim.SparseAdam(list(self.codes.parameters()), lr=model.lr_latent)}
        self._schedulers = {name: step_decay(optimiser, train.lr_decay, model.decay_interval)
                            for name, optimiser in self._optimizers.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def schedulers(self) -> dict[str, SchedulerSpec]:
        return self._schedulers

    def on_epoch_start(self, epoch: int) -> None:
        if isinstance(self.forward_networks["deformation"], DistributedDataParallel):
            raise MorphableError("expression runs train in one process only, not under torchrun")

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 4.21 of a batch: ``correspondence``, ``penalty``, ``code`` and their weighted sum ``loss`` (a graph),
        and ``face_rmse`` (root mean squared face-pair error, normalised units, no graph)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        expression = self.codes(batch["index"])
        identity = self.identity_codes[batch["subject"]]
        out = deformation_losses(self.forward_networks["deformation"], expression, identity, batch["neutral"],
                                 batch["posed"], batch["face"], self.weights)
        out["face_rmse"] = out["correspondence"].detach().sqrt()
        return out

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        for optimiser in self._optimizers.values():
            optimiser.zero_grad(set_to_none=True)
        losses = self.losses(batch)
        losses["loss"].backward()
        if self.config.model.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.field.parameters(), self.config.model.grad_clip)
        for optimiser in self._optimizers.values():
            optimiser.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in self.losses(batch).items()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes.weight.detach(), "identity_codes": self.identity_codes}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, current in (("codes", self.codes.weight), ("identity_codes", self.identity_codes)):
            if name not in state or tuple(state[name].shape) != tuple(current.shape):
                found = tuple(state[name].shape) if name in state else "no"
                raise MorphableError(f"checkpoint has {found} {name}, the model {tuple(current.shape)}")
        with torch.no_grad():
            self.codes.weight.copy_(state["codes"].to(self.device))
            self.identity_codes.copy_(state["identity_codes"].to(self.device))
