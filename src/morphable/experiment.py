"""Train and evaluate models of registered meshes from an :class:`ExperimentConfig`.

``train_experiment`` validates the data before anything is written, creates the run folder, fits
the model on the training split and evaluates it; ``evaluate_run`` re-evaluates a finished run from
its folder alone. Methods plug in through :func:`fit_method` and :func:`load_reconstructor`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from morphable.config import ExperimentConfig, config_from_dict
from morphable.data.registered import RegisteredDataset, Split, load_registered, make_split
from morphable.errors import MorphableError, input_error
from morphable.evaluate import evaluate_reconstructions
from morphable.io import load_weights, save_weights
from morphable.runs import Run

Reconstructor = Callable[[np.ndarray], np.ndarray]


def prepare_data(config: ExperimentConfig) -> tuple[RegisteredDataset, Split]:
    dataset = load_registered(config.data.path, unit=config.data.unit, template=config.data.template)
    split = make_split(dataset, config.data.protocol, config.data.fold, config.data.val_fraction)
    if len(split.train) == 0 or len(split.test) == 0:
        raise input_error(config.data.path, f"the {config.data.protocol} split leaves an empty train or test set "
                                            f"({split.sizes()})")
    config.data.fold = split.fold
    return dataset, split


def fit_method(config: ExperimentConfig, run: Run, dataset: RegisteredDataset, split: Split) -> dict:
    """Fit the configured method on ``split.train`` and save its weights in the run folder."""
    if config.method == "pca":
        from morphable.explicit.pca import PCAModel

        model = PCAModel.fit(dataset.vertices[split.train], config.model.latent, seed=config.seed)
        save_weights(run.weights_path, model.state(), {"method": "pca", "n_vertices": str(dataset.n_vertices)})
        return {"latent": model.latent_size}
    raise input_error("config", f"method '{config.method}' cannot be trained here")


def load_reconstructor(run: Run, config: ExperimentConfig, n_vertices: int) -> Reconstructor:
    """A function ``(N, V, 3) -> (N, V, 3)`` that encodes and decodes with the run's weights."""
    tensors, meta = load_weights(run.weights_path)
    if meta.get("n_vertices") != str(n_vertices):
        raise input_error(run.weights_path, f"checkpoint is for {meta.get('n_vertices')} vertices, "
                                            f"the data has {n_vertices}")
    if config.method == "pca":
        from morphable.explicit.pca import PCAModel

        return PCAModel.from_state(tensors).reconstruct
    raise input_error(run.weights_path, f"method '{config.method}' cannot be evaluated here")


def evaluate_split(run: Run, reconstruct: Reconstructor, dataset: RegisteredDataset, split: Split) -> dict:
    """Metrics on the test (and validation) meshes; writes plots, meshes and ``metrics.json``."""
    results = {}
    for name in ("test", "val"):
        idx = getattr(split, name)
        if len(idx) == 0:
            continue
        part = dataset.subset(idx)
        pred = reconstruct(part.vertices)
        titles = [f"{s}\n{e} {f}".strip() for s, e, f in zip(part.subjects, part.expressions, part.frames)]
        results[name] = evaluate_reconstructions(run, name, pred, part.vertices, dataset.faces, dataset.to_mm,
                                                 part.expressions, titles)
    test = results["test"]
    metrics = {k: test[k] for k in ("mean_mm", "std_mm", "median_mm", "max_mm")}
    metrics.update({"protocol": split.protocol, "fold": split.fold, "split_sizes": split.sizes(),
                    "unit": dataset.unit, "splits": results})
    run.write_metrics(metrics)
    _write_curve_plot(run, test)
    return metrics


def _write_curve_plot(run: Run, test: dict) -> None:
    from morphable.viz import cumulative_error_plot

    name = run.config.get("method", "model")
    curve = test["curve"]
    cumulative_error_plot(run.file("plots", "cumulative_error.png"),
                          {name: (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))})


def train_experiment(config: ExperimentConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Validate the data, create the run, fit, evaluate; returns the metrics."""
    dataset, split = prepare_data(config)
    run = Run.create(out, config.to_dict(), overwrite=overwrite)
    start = time.perf_counter()
    fit_info = fit_method(config, run, dataset, split)
    fit_seconds = time.perf_counter() - start
    metrics = evaluate_split(run, load_reconstructor(run, config, dataset.n_vertices), dataset, split)
    metrics["fit"] = {**fit_info, "seconds": round(fit_seconds, 3)}
    run.write_metrics(metrics)
    return metrics


def evaluate_run(path: str | Path, data: str | None = None) -> dict:
    """Re-evaluate a run from its folder (optionally on another dataset path of the same topology)."""
    run = Run.open(path)
    config = config_from_dict(run.config, str(run.path / "config.json"))
    if data is not None:
        config.data.path = data
    dataset, split = prepare_data(config)
    previous = _previous_metrics(run)
    metrics = evaluate_split(run, load_reconstructor(run, config, dataset.n_vertices), dataset, split)
    if "fit" in previous:
        metrics["fit"] = previous["fit"]
        run.write_metrics(metrics)
    return metrics


def _previous_metrics(run: Run) -> dict:
    """The run's earlier metrics; a missing or broken file is simply replaced."""
    try:
        return run.read_metrics()
    except MorphableError:
        return {}
