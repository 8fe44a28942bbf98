"""The image family's hooks for HRN runs (:mod:`morphable.image.experiment` hands HRN configs here): trained on
a ``morphable data photos`` folder's train split, validated on its val split, scored on its test split
(:func:`morphable.image.hrn_evaluate.evaluate_hrn`). The run folder keeps ``hrn_setup.safetensors``
(:mod:`morphable.image.hrn_setup`), so a trained run needs neither the dataset nor the linear model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from morphable.config import ExperimentConfig
from morphable.errors import input_error
from morphable.runs import Run


@dataclass
class HRNData:
    """The photo dataset, the run's setup and its training / validation samples (:class:`HRNSamples`)."""

    photos: Any
    setup: Any
    train: Any
    validation: Any


def prepare_data(config: ExperimentConfig, photos) -> HRNData:
    from morphable.image.hrn_data import HRNSamples
    from morphable.image.hrn_setup import HRNSetup
    from morphable.image.hrn_targets import DetailTargets

    m = config.model
    train, val = photos.indices("train"), photos.indices("val")
    if not len(train):
        raise input_error(photos.root, "the train split holds no photos")
    setup = HRNSetup.from_dataset(photos, config)
    targets = None
    if "detail" in photos.info:
        targets = DetailTargets(photos.root, setup.tile, m.mid_size, m.high_size, setup.face["cm"])
    face = setup.coarse_face(m.size, m.fill)

    def samples(indices, augment: bool):
        return HRNSamples(photos, indices, face, setup.albedo, m.fill, augment=augment, seed=config.seed,
                          targets=targets)

    training = samples(train, m.augment)
    setup.set_coefficient_statistics(_target_sample(training, config.seed))
    return HRNData(photos, setup, training, samples(val, False) if len(val) else None)


STATISTICS_SAMPLES = 256


def _target_sample(samples, seed: int):
    """The coefficient targets ``(N, P)`` of up to :data:`STATISTICS_SAMPLES` training photos (no jitter)."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    picks = rng.choice(len(samples), min(STATISTICS_SAMPLES, len(samples)), replace=False)
    augment, samples.augment = samples.augment, False
    try:
        return np.stack([samples[int(k)]["coefficients"] for k in picks])
    finally:
        samples.augment = augment


def fit(config: ExperimentConfig, run: Run, data: HRNData, resume: bool = False, progress: bool = True) -> dict:
    from morphable.data.photos import describe
    from morphable.image.hrn_method import HRNMethod
    from morphable.image.hrn_setup import SETUP_FILE
    from morphable.train import LoopConfig, fit as fit_loop, init_distributed, parameter_count, select_device

    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    if dist_info.is_main:
        data.setup.save(run.path / SETUP_FILE)
    method = HRNMethod(config, device, data.setup)
    if progress and dist_info.is_main:
        supervision = "with detail targets" if data.train.targets is not None else \
            "no detail targets (made without --detail): self-supervised only, no GAN"
        print(f"hrn: {describe(data.photos)}; {supervision}; {parameter_count(method) / 1e6:.2f} M parameters",
              flush=True)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=min(config.train.batch_size, len(data.train)),
                      seed=config.seed, progress=progress, tensorboard=config.train.tensorboard)
    summary = fit_loop(method, data.train, data.validation, loop, run.path, device, resume=resume,
                       dist_info=dist_info, metadata={"method": config.method})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def evaluate(run: Run, config: ExperimentConfig, photos, limit: int | None = None, **_: Any) -> dict[str, Any]:
    from morphable.image.hrn_evaluate import evaluate_hrn

    return evaluate_hrn(load(run), photos, run.path / "plots", limit=limit)


def summary(metrics: dict[str, Any]) -> str:
    levels = metrics.get("levels", {})
    return "point-to-plane (mm) " + ", ".join(f"{name} {entry['mean']:.3f}" for name, entry in levels.items())


def load(run: Run, device: str = "auto"):
    """The :class:`~morphable.image.hrn_model.HRNModel` of a run folder (its weights, eval mode)."""
    from morphable.image.hrn_method import HRNMethod
    from morphable.image.hrn_model import HRNModel
    from morphable.image.hrn_setup import SETUP_FILE, HRNSetup
    from morphable.train import load_checkpoint, select_device

    config = run.trained_config("image")
    torch_device = select_device(device)
    method = HRNMethod(config, torch_device, HRNSetup.load(run.path / SETUP_FILE))
    load_checkpoint(run.weights_path, method, torch_device, networks_only=True)
    for network in method.networks.values():
        network.eval()
    return HRNModel(method, run)
