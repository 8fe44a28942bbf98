"""Run configurations: torch-free dataclasses, one model config per method, and the PRESETS dict.

``PRESETS`` is the only registry: the CLI turns its keys into ``morphable train PRESET`` choices.
A config round-trips through JSON (``to_dict`` / ``config_from_dict``) and is stored in every run
folder as ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from morphable.errors import MorphableError


@dataclass
class DataConfig:
    """Where the registered meshes are and how they are split (see ``data.registered.make_split``)."""

    path: str = ""
    unit: str | None = None
    template: str | None = None
    protocol: str = "interpolation"
    fold: str | None = None
    val_fraction: float = 0.05


@dataclass
class TrainConfig:
    """Optimisation settings shared by all trainable methods."""

    epochs: int = 300
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 0.99
    weight_decay: float = 0.0
    momentum: float = 0.9
    device: str = "auto"


@dataclass
class PCAConfig:
    """PCA baseline: ``latent`` principal components."""

    latent: int = 8


MODEL_CONFIGS: dict[str, type] = {"pca": PCAConfig}


@dataclass
class ExperimentConfig:
    """Everything needed to reproduce a run."""

    method: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(d: dict, source: str = "config.json") -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from its dict form; unknown keys are an error."""
    try:
        method = d["method"]
        model_cls = MODEL_CONFIGS[method]
        return ExperimentConfig(
            method=method,
            model=model_cls(**d.get("model", {})),
            data=DataConfig(**d.get("data", {})),
            train=TrainConfig(**d.get("train", {})),
            seed=int(d.get("seed", 0)),
        )
    except KeyError as exc:
        raise MorphableError(f"{source}: unknown or missing method {exc}") from None
    except TypeError as exc:
        raise MorphableError(f"{source}: does not match this version's config ({exc})") from None


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "pca": lambda: ExperimentConfig(method="pca", model=PCAConfig(latent=8)),
}
