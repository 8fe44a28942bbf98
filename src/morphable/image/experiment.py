"""The image family's hooks for the run driver (:mod:`morphable.experiment`) on a ``morphable data photos``
folder (``config.data.path``): VRN here, trained on its train split (augmented), validated on its val split,
scored on its test split (:func:`morphable.image.evaluate.evaluate_vrn`); HRN configs
(:class:`~morphable.config.HRNConfig`) go to :mod:`morphable.image.hrn_experiment`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from morphable.config import ExperimentConfig, HRNConfig
from morphable.errors import MorphableError, input_error
from morphable.runs import Run


@dataclass
class ImageData:
    """The photo dataset and its training / validation samples (:class:`~morphable.data.voxels.VoxelSamples`)."""

    photos: Any
    train: Any
    validation: Any


def _spec(config: ExperimentConfig):
    from morphable.data.voxels import VolumeSpec

    m = config.model
    return VolumeSpec(m.size, m.depth, m.depth_scale, m.fill)


def _photos(config: ExperimentConfig):
    from pathlib import Path

    from morphable.data.photos import DATASET_FILE, PhotoDataset

    if not config.data.path:
        raise MorphableError(f"{config.method} trains on a `morphable data photos` folder: give --data FOLDER")
    root = Path(config.data.path)
    if not (root / DATASET_FILE).is_file():
        raise input_error(root, f"not a synthetic photo dataset (no {DATASET_FILE}; make one with `morphable data "
                                f"photos`)")
    return PhotoDataset(root)


def _hrn(config: ExperimentConfig):
    """The HRN hooks when ``config`` is an HRN run, else None."""
    if isinstance(config.model, HRNConfig):
        from morphable.image import hrn_experiment

        return hrn_experiment
    return None


def prepare_data(config: ExperimentConfig):
    from morphable.data.voxels import VoxelSamples

    photos = _photos(config)
    if _hrn(config):
        return _hrn(config).prepare_data(config, photos)
    train, val = photos.indices("train"), photos.indices("val")
    if not len(train):
        raise input_error(photos.root, "the train split holds no photos")
    spec = _spec(config)
    return ImageData(photos, VoxelSamples(photos, train, spec, augment=config.model.augment, seed=config.seed),
                     VoxelSamples(photos, val, spec) if len(val) else None)


def evaluation_data(config: ExperimentConfig):
    return _photos(config)


def fit(config: ExperimentConfig, run: Run, data: ImageData, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    if _hrn(config):
        return _hrn(config).fit(config, run, data, resume, progress)
    from morphable.train import LoopConfig, fit as fit_loop, init_distributed, parameter_count, select_device

    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    method = config.spec.load()(config, device)
    if progress and dist_info.is_main:
        from morphable.data.photos import describe

        print(f"{config.method}: {describe(data.photos)}; volume {' x '.join(map(str, method.spec.shape))}, "
              f"{parameter_count(method) / 1e6:.2f} M parameters", flush=True)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=min(config.train.batch_size, len(data.train)),
                      seed=config.seed, progress=progress, tensorboard=config.train.tensorboard)
    summary = fit_loop(method, data.train, data.validation, loop, run.path, device, resume=resume,
                       dist_info=dist_info, metadata={"method": config.method})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def evaluate(run: Run, config: ExperimentConfig, data, device: str = "auto", crops=("gt", "detected"),
             detector: str = "auto", limit: int | None = None) -> dict[str, Any]:
    """:func:`~morphable.image.evaluate.evaluate_vrn` on the test split; plots and ``nme.csv`` in ``run/plots``.
    Detected crops need a landmark detector (the ``[landmarks]`` extra); without one they are left out."""
    photos = data if not hasattr(data, "photos") else data.photos
    if _hrn(config):
        return _hrn(config).evaluate(run, config, photos, limit=limit)
    from morphable.image.evaluate import evaluate_vrn
    from morphable.image.landmarks import available_backends

    if "detected" in crops and not available_backends():
        crops = tuple(c for c in crops if c != "detected")
    model = load(run, device)
    return evaluate_vrn(model, photos, run.path / "plots", crops=crops, detector=detector, limit=limit,
                        progress=False)


def summary(metrics: dict[str, Any]) -> str:
    if "levels" in metrics:
        from morphable.image.hrn_experiment import summary as hrn_summary

        return hrn_summary(metrics)
    def fmt(entry: dict | None) -> str:
        return "n/a" if not entry or entry.get("mean") is None else f"{entry['mean']:.4f}"

    line = f"NME (GT crops) {fmt(metrics.get('gt', {}).get('vrn'))}, mean face {fmt(metrics.get('gt', {}).get('mean_face'))}"
    if "detected" in metrics:
        d = metrics["detected"]
        line += f"; detected crops {fmt(d['vrn'])} ({d['failure_rate']:.0%} detector failures)"
    return line


def load(run: Run, device: str = "auto"):
    """The :class:`~morphable.image.model.VRNModel` (or :class:`~morphable.image.hrn_model.HRNModel`) of a run
    folder (best weights, eval mode)."""
    from morphable.image.model import VRNModel
    from morphable.train import load_checkpoint, select_device

    config = run.trained_config("image")
    if _hrn(config):
        return _hrn(config).load(run, device)
    torch_device = select_device(device)
    method = config.spec.load()(config, torch_device)
    load_checkpoint(run.weights_path, method, torch_device, networks_only=True)
    for network in method.networks.values():
        network.eval()
    return VRNModel(method, run)
