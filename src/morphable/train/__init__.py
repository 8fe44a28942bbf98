"""Training: the loop (:mod:`.loop`), its method contract (:mod:`.protocol`), checkpoints
(:mod:`.checkpoint`), devices and processes (:mod:`.distributed`), optimisers and the learning-rate decay
(:mod:`.optim`) and GAN loss pieces (:mod:`.adversarial`, imported from there)."""

from morphable.train.checkpoint import (BEST_CHECKPOINT, LAST_CHECKPOINT, flatten_state, load_checkpoint,
                                        save_checkpoint, unflatten_state)
from morphable.train.distributed import Distributed, init_distributed, select_device
from morphable.train.loop import LOG_FILE, LoopConfig, fit
from morphable.train.optim import make_optimizer, step_decay
from morphable.train.protocol import SchedulerSpec, Selection, TrainableMethod, parameter_count

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "LOG_FILE", "Distributed", "LoopConfig", "SchedulerSpec",
           "Selection", "TrainableMethod", "fit", "flatten_state", "init_distributed", "load_checkpoint",
           "make_optimizer", "parameter_count", "save_checkpoint", "select_device", "step_decay",
           "unflatten_state"]
