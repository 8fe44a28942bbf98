"""Training checkpoints: one safetensors file with everything a method needs to resume exactly.

Tensors (weights, optimiser moments, extra state) are stored under flattened keys
``networks.<name>.<param>``, ``optimizers.<name>.state...``, ``schedulers.<name>...`` and
``method_extra.<key>``; the non-tensor structure (step counts, hyper-parameters) is JSON in the file's
metadata, beside ``epoch`` (completed epochs), ``stage`` (the method's stage), ``extra`` (JSON of the
loop's own state) and the caller's ``metadata`` strings. Nothing is ever unpickled.

Random numbers need no state here: the loop seeds them per epoch (see :mod:`morphable.train.loop`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from morphable.errors import input_error
from morphable.io import atomic_path
from morphable.runs import LAST_CHECKPOINT  # noqa: F401  (re-exported: the loop's file names live in runs)
from morphable.runs import WEIGHTS_FILE as BEST_CHECKPOINT  # noqa: F401  (the selected epoch is the run's weights)
from morphable.train.protocol import TrainableMethod


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``, collecting it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten_state(v, tensors) for v in obj["__list__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def _states(method: TrainableMethod) -> dict[str, dict[str, Any]]:
    """The method's state dicts by part (``networks``, ``optimizers``, ``schedulers``) and name."""
    return {"networks": {name: net.state_dict() for name, net in method.networks.items()},
            "optimizers": {name: opt.state_dict() for name, opt in method.optimizers().items()},
            "schedulers": {name: spec.scheduler.state_dict() for name, spec in method.schedulers().items()}}


def save_checkpoint(path: Path, method: TrainableMethod, epoch: int, extra: dict[str, Any],
                    metadata: dict[str, str] | None = None) -> None:
    """Write all networks, optimiser and scheduler states, the method's extra state and stage, ``epoch`` and
    ``extra`` (JSON) to one safetensors file (atomically); ``metadata`` strings are stored beside them."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = {part: flatten_state(states, part, tensors) for part, states in _states(method).items()}
    structure["method_extra"] = flatten_state(method.extra_state(), "method_extra", tensors)
    header = {**(metadata or {}), "structure": json.dumps(structure), "epoch": str(epoch),
              "stage": str(method.stage), "extra": json.dumps(extra)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checkpoint(path: Path, method: TrainableMethod, device: torch.device,
                    networks_only: bool = False) -> tuple[int, dict]:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``method`` (tensors read to ``device``);
    returns ``(epoch, extra)``. A checkpoint whose names or shapes do not match the method is refused. With
    ``networks_only`` (inference) the optimiser and scheduler states are left alone, so a method that makes
    its optimisers lazily never makes them."""
    from morphable.io import load_weights

    tensors, metadata = load_weights(path, device=str(device))
    if "structure" not in metadata:
        raise input_error(path, "not a training checkpoint of morphable")
    structure = json.loads(metadata["structure"])
    current = ({"networks": {name: net.state_dict() for name, net in method.networks.items()}} if networks_only
               else _states(method))
    if not {*current, "method_extra"} <= set(structure) or (not networks_only and len(structure) != len(current) + 1):
        raise input_error(path, "checkpoint was written by another version of morphable (no per-name networks)")
    stored = {part: unflatten_state(structure[part], tensors) for part in current}
    for part, states in stored.items():
        if set(states) != set(current[part]):
            raise input_error(path, f"checkpoint has {part} {sorted(states)}, the model {sorted(current[part])}")
    for name, net in method.networks.items():
        try:
            net.load_state_dict(stored["networks"][name])
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            detail = lines[1].strip() if len(lines) > 1 else lines[0]
            raise input_error(path, f"checkpoint does not match the model ({name}: {detail})") from None
    if not networks_only:
        for name, opt in method.optimizers().items():
            opt.load_state_dict(stored["optimizers"][name])
        for name, spec in method.schedulers().items():
            spec.scheduler.load_state_dict(stored["schedulers"][name])
    method.load_extra_state(unflatten_state(structure["method_extra"], tensors))
    method.stage = int(metadata.get("stage", 0))
    return int(metadata["epoch"]), json.loads(metadata.get("extra", "{}"))
