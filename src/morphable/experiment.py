"""Train and evaluate models of registered meshes from an :class:`ExperimentConfig`.

``train_experiment`` validates the data before anything is written, creates the run folder, fits
the model on the training split and evaluates it; ``evaluate_run`` re-evaluates a finished run from
its folder alone. Methods plug in through :func:`fit_method` and :func:`load_codec`.
"""

from __future__ import annotations

import time
from pathlib import Path
import numpy as np

from morphable.config import AUTOENCODER_METHODS, ExperimentConfig, config_from_dict
from morphable.data.registered import RegisteredDataset, Split, load_registered, make_split, protocol_folds
from morphable.errors import MorphableError, input_error
from morphable.evaluate import evaluate_reconstructions
from morphable.io import load_weights, save_weights
from morphable.runs import Run, process_rank

def prepare_data(config: ExperimentConfig) -> tuple[RegisteredDataset, Split]:
    dataset = load_registered(config.data.path, unit=config.data.unit, template=config.data.template)
    split = make_split(dataset, config.data.protocol, config.data.fold, config.data.val_fraction)
    if len(split.train) == 0 or len(split.test) == 0:
        raise input_error(config.data.path, f"the {config.data.protocol} split leaves an empty train or test set "
                                            f"({split.sizes()})")
    config.data.fold = split.fold
    return dataset, split


def fit_method(config: ExperimentConfig, run: Run, dataset: RegisteredDataset, split: Split,
               resume: bool = False, progress: bool = True) -> dict:
    """Fit the configured method on ``split.train`` and save its weights in the run folder."""
    if config.method in AUTOENCODER_METHODS:
        return _fit_autoencoder(config, run, dataset, split, resume, progress)
    if config.method == "pca":
        from morphable.explicit.pca import PCAModel

        model = PCAModel.fit(dataset.vertices[split.train], config.model.latent, seed=config.seed)
        save_weights(run.weights_path, model.state(), {"method": "pca", "n_vertices": str(dataset.n_vertices)})
        return {"latent": model.latent_size}
    raise input_error("config", f"method '{config.method}' cannot be trained here")


def load_codec(run: Run, config: ExperimentConfig, n_vertices: int):
    """The trained model of a run: an object with ``encode``, ``decode`` and ``reconstruct`` on ``(N, V, 3)``
    meshes in the data's unit. Learned aggregation matrices are frozen into sparse pooling."""
    tensors, meta = load_weights(run.weights_path)
    if meta.get("n_vertices") != str(n_vertices):
        raise input_error(run.weights_path, f"checkpoint is for {meta.get('n_vertices')} vertices, "
                                            f"the data has {n_vertices}")
    if config.method == "pca":
        from morphable.explicit.pca import PCAModel

        return PCAModel.from_state(tensors)
    if config.method in AUTOENCODER_METHODS:
        return load_autoencoder(run, config, template_of(run))
    raise input_error(run.weights_path, f"method '{config.method}' cannot be evaluated here")


def _fit_autoencoder(config: ExperimentConfig, run: Run, dataset: RegisteredDataset, split: Split,
                     resume: bool, progress: bool) -> dict:
    import torch

    from morphable.data.registered import Normaliser
    from morphable.explicit.method import template_hierarchy
    from morphable.train import LoopConfig, fit, init_distributed, parameter_count, select_device

    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    train = dataset.vertices[split.train]
    normaliser = Normaliser.fit(train)
    hierarchy = template_hierarchy(dataset.vertices[split.train[0]], dataset.faces, config.model.factors)
    method = autoencoder_method(config, hierarchy, normaliser, device, train)
    train_data = torch.as_tensor(normaliser.apply(train), dtype=torch.float32)
    val_data = torch.as_tensor(normaliser.apply(dataset.vertices[split.val]), dtype=torch.float32)
    if dist_info.is_main:
        np.save(run.file("template_vertices.npy"), dataset.vertices[split.train[0]])
        np.save(run.file("template_faces.npy"), dataset.faces)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=config.train.batch_size, seed=config.seed,
                      progress=progress)
    summary = fit(method, train_data, val_data if len(val_data) else None, loop, run.path, device, resume=resume,
                  dist_info=dist_info, metadata={"method": config.method, "n_vertices": str(dataset.n_vertices)})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def autoencoder_method(config: ExperimentConfig, hierarchy, normaliser, device, train: np.ndarray | None = None):
    """The training/inference method of an autoencoder config; LWAE computes its local weights from the train
    meshes ``train (N, V, 3)`` (``None``: they come from a checkpoint)."""
    if config.method == "lwae":
        from morphable.explicit.lwae import lwae_method

        return lwae_method(config, hierarchy, normaliser, device, train)
    from morphable.explicit.method import AutoencoderMethod

    return AutoencoderMethod(config, hierarchy, normaliser, device)


def template_of(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The template (vertices, faces) a run's hierarchy was built from."""
    try:
        return (np.load(run.path / "template_vertices.npy", allow_pickle=False),
                np.load(run.path / "template_faces.npy", allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise input_error(run.path, f"run has no readable template ({exc})") from None


def load_autoencoder(run: Run, config: ExperimentConfig, template: tuple[np.ndarray, np.ndarray]):
    """Rebuild a trained autoencoder method from a run folder (best weights and normaliser)."""
    from morphable.data.registered import Normaliser
    from morphable.explicit.method import template_hierarchy
    from morphable.train import load_checkpoint, select_device

    device = select_device(config.train.device)
    hierarchy = template_hierarchy(template[0], template[1], config.model.factors)
    n = len(template[0])
    placeholder = Normaliser(np.zeros((n, 3), np.float32), np.ones((n, 3), np.float32))
    method = autoencoder_method(config, hierarchy, placeholder, device)
    load_checkpoint(run.weights_path, method, device)
    return method


def freeze_aggregations(network) -> int:
    """Replace every learned aggregation by a fixed sparse :class:`Pool` with its trained matrix."""
    from morphable.explicit.pooling import LearnedAggregation

    frozen = 0
    for modules in (network.downs, network.ups):
        for i, module in enumerate(modules):
            if isinstance(module, LearnedAggregation):
                modules[i] = module.freeze()
                frozen += 1
    return frozen


def evaluate_split(run: Run, codec, dataset: RegisteredDataset, split: Split) -> dict:
    """Metrics on the test (and validation) meshes; writes plots, meshes and ``metrics.json``.

    Also draws the latent interpolation between the first and last test mesh and, for models with
    learned aggregation, the QEM vs learned mapping matrices; learned matrices are then frozen
    into sparse pooling for the reconstructions.
    """
    from morphable.explicit.figures import interpolation_strip, mapping_matrices_figure

    network = getattr(codec, "network", None)
    if network is not None and mapping_matrices_figure(run, network):
        freeze_aggregations(network)
    results = {}
    for name in ("test", "val"):
        idx = getattr(split, name)
        if len(idx) == 0:
            continue
        part = dataset.subset(idx)
        pred = codec.reconstruct(part.vertices)
        titles = [f"{s}\n{e} {f}".strip() for s, e, f in zip(part.subjects, part.expressions, part.frames)]
        results[name] = evaluate_reconstructions(run, name, pred, part.vertices, dataset.faces, dataset.to_mm,
                                                 part.expressions, titles)
    test_set = dataset.subset(split.test)
    interpolation_strip(run, codec, test_set.vertices[0], test_set.vertices[-1], dataset.faces,
                        (f"{test_set.subjects[0]} {test_set.expressions[0]}".strip() or "first",
                         f"{test_set.subjects[-1]} {test_set.expressions[-1]}".strip() or "last"))
    test = results["test"]
    metrics = {k: test[k] for k in ("mean_mm", "std_mm", "median_mm", "max_mm")}
    metrics.update({"protocol": split.protocol, "fold": split.fold, "split_sizes": split.sizes(),
                    "unit": dataset.unit, "splits": results})
    if run.config.get("method") == "lwae":
        from morphable.explicit.parts import lwae_report

        metrics["lwae"] = lwae_report(run, codec, dataset, split)
    run.write_metrics(metrics)
    _write_curve_plot(run, test)
    return metrics


def _write_curve_plot(run: Run, test: dict) -> None:
    from morphable.viz import cumulative_error_plot

    name = run.config.get("method", "model")
    curve = test["curve"]
    cumulative_error_plot(run.file("plots", "cumulative_error.png"),
                          {name: (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))})


def train_experiment(config: ExperimentConfig, out: str | Path, overwrite: bool = False, resume: bool = False,
                     progress: bool = True) -> dict:
    """Validate the data, create (or reopen, to resume) the run, fit, evaluate; returns the metrics."""
    dataset, split = prepare_data(config)
    if resume:
        run = Run.open(out)
        config = config_from_dict(run.config, str(run.path / "config.json"))
    else:
        run = Run.create(out, config.to_dict(), overwrite=overwrite)
    start = time.perf_counter()
    fit_info = fit_method(config, run, dataset, split, resume=resume, progress=progress)
    if process_rank() != 0:  # under torchrun only rank 0 evaluates and writes
        return {}
    fit_seconds = time.perf_counter() - start
    metrics = evaluate_split(run, load_codec(run, config, dataset.n_vertices), dataset, split)
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
    metrics = evaluate_split(run, load_codec(run, config, dataset.n_vertices), dataset, split)
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


def train_all_folds(config: ExperimentConfig, out: str | Path, overwrite: bool = False,
                    progress: bool = True) -> dict:
    """Train one run per fold of the config's protocol into ``out/<fold>/`` and write the fold table."""
    dataset = load_registered(config.data.path, unit=config.data.unit, template=config.data.template)
    out = Path(out)
    for fold in protocol_folds(dataset, config.data.protocol):
        fold_config = config_from_dict(config.to_dict())
        fold_config.data.fold = fold
        if progress:
            print(f"--- fold {fold} ---", flush=True)
        train_experiment(fold_config, out / str(fold), overwrite=overwrite, progress=progress)
    return fold_table(out)


def fold_table(folder: str | Path, reevaluate: bool = False) -> dict:
    """Per-fold table (mean +- std, median mm) of the runs in ``folder/*/`` (Deep3DMM supplement Table 5).

    Writes ``folds.json`` and ``folds.md`` into ``folder``; ``reevaluate`` re-runs each fold's evaluation.
    """
    from morphable.io import write_json

    folder = Path(folder)
    runs = sorted(p for p in folder.iterdir() if (p / "config.json").exists()) if folder.is_dir() else []
    if not runs:
        raise input_error(folder, "no fold runs (sub-folders with config.json) found")
    rows = {}
    for path in runs:
        metrics = evaluate_run(path) if reevaluate else Run.open(path).read_metrics()
        rows[str(metrics.get("fold", path.name))] = {k: metrics[k] for k in ("mean_mm", "std_mm", "median_mm")}
    protocol = Run.open(runs[0]).config["data"]["protocol"]
    means = np.array([r["mean_mm"] for r in rows.values()])
    table = {"protocol": protocol, "method": Run.open(runs[0]).config["method"], "folds": rows,
             "mean_of_folds_mm": float(means.mean())}
    write_json(folder / "folds.json", table)
    lines = [f"# {table['method']}: {protocol} folds", "", "| fold | mean +- std (mm) | median (mm) |",
             "| --- | --- | --- |"]
    lines += [f"| {k} | {v['mean_mm']:.3f} +- {v['std_mm']:.3f} | {v['median_mm']:.3f} |" for k, v in rows.items()]
    lines += ["", f"Mean over folds: {table['mean_of_folds_mm']:.3f} mm"]
    (folder / "folds.md").write_text("\n".join(lines) + "\n")
    return table


def compare_runs(paths: list[str | Path], out: str | Path) -> Path:
    """One cumulative-error plot with the test curves of several runs (Deep3DMM supplement Fig. 1)."""
    from morphable.viz import cumulative_error_plot

    curves = {}
    for path in paths:
        run = Run.open(path)
        curve = run.read_metrics()["splits"]["test"]["curve"]
        curves[f"{run.config['method']} ({Path(path).name})"] = (np.array(curve["thresholds_mm"]),
                                                                  np.array(curve["fraction"]))
    cumulative_error_plot(out, curves, "Cumulative per-vertex error, test set")
    return Path(out)
