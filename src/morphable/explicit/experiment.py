"""Run hooks of the explicit family (registered meshes, one topology) for :mod:`morphable.experiment`.

Data: a :class:`~morphable.data.registered.RegisteredDataset` split by a CoMA protocol. Methods are either
closed-form (PCA: ``MethodSpec.training == "closed-form"``, the implementation has ``fit(vertices, latent,
seed)``) or trained by the loop (the autoencoders: the implementation has ``create(config, hierarchy,
normaliser, device, train_vertices)`` and is a :class:`morphable.train.TrainableMethod`). A run folder also
holds ``template_vertices.npy`` / ``template_faces.npy`` (the hierarchy's template) and
``train_codes.safetensors`` (the codes of the training meshes, for ``sample``).

Evaluation: per-vertex Euclidean errors in mm on the test and validation meshes (CoMA's metric), the
cumulative error curve, heat maps and coloured meshes, a latent interpolation strip; a method may add its
own report through ``evaluation_report(run, dataset, split)`` (the LWAE's part figures and locality).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from morphable.config import ExperimentConfig, config_from_dict
from morphable.data.registered import RegisteredDataset, Split, load_registered, make_split, protocol_folds
from morphable.errors import input_error
from morphable.explicit.evaluate import evaluate_reconstructions
from morphable.io import atomic_path, load_weights, save_weights
from morphable.runs import Run, process_rank

TRAIN_CODES = "train_codes.safetensors"


@dataclass
class ExplicitData:
    dataset: RegisteredDataset
    split: Split


def prepare_data(config: ExperimentConfig) -> ExplicitData:
    """Read and validate the registered meshes and split them; sets ``config.data.fold`` to the fold used."""
    dataset = load_registered(config.data.path, unit=config.data.unit, template=config.data.template)
    split = make_split(dataset, config.data.protocol, config.data.fold, config.data.val_fraction)
    if len(split.train) == 0 or len(split.test) == 0:
        raise input_error(config.data.path, f"the {config.data.protocol} split leaves an empty train or test set "
                                            f"({split.sizes()})")
    config.data.fold = split.fold
    return ExplicitData(dataset, split)


evaluation_data = prepare_data


def fit(config: ExperimentConfig, run: Run, data: ExplicitData, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Fit the configured method on the training split and save its weights in the run folder."""
    dataset, split = data.dataset, data.split
    spec = config.spec
    if process_rank() == 0:
        for name, array in (("template_vertices.npy", dataset.vertices[split.train[0]]),
                            ("template_faces.npy", dataset.faces)):
            with atomic_path(run.file(name)) as tmp:
                with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
                    np.save(f, array)
    if spec.training == "closed-form":  # one process fits it; under torchrun the other ranks have nothing to do
        if process_rank() != 0:
            return {}
        model = spec.load().fit(dataset.vertices[split.train], config.model.latent, seed=config.seed)
        save_weights(run.weights_path, model.state(), {"method": config.method,
                                                       "n_vertices": str(dataset.n_vertices)})
        return {"latent": model.latent_size}
    return _fit_network(config, run, dataset, split, resume, progress)


def _fit_network(config: ExperimentConfig, run: Run, dataset: RegisteredDataset, split: Split, resume: bool,
                 progress: bool) -> dict[str, Any]:
    import torch

    from morphable.data.registered import Normaliser
    from morphable.explicit.method import template_hierarchy
    from morphable.train import LoopConfig, fit as fit_loop, init_distributed, parameter_count, select_device

    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    train = dataset.vertices[split.train]
    normaliser = Normaliser.fit(train)
    template = dataset.vertices[split.train[0]]
    hierarchy = template_hierarchy(template, dataset.faces, config.model)
    method = config.spec.load().create(config, hierarchy, normaliser, device, train)
    train_data = torch.as_tensor(normaliser.apply(train), dtype=torch.float32)
    val_data = torch.as_tensor(normaliser.apply(dataset.vertices[split.val]), dtype=torch.float32)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=config.train.batch_size, seed=config.seed,
                      progress=progress, tensorboard=config.train.tensorboard)
    summary = fit_loop(method, train_data, val_data if len(val_data) else None, loop, run.path, device,
                       resume=resume, dist_info=dist_info,
                       metadata={"method": config.method, "n_vertices": str(dataset.n_vertices)})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def template_of(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The template (vertices, faces) a run's hierarchy was built from."""
    try:
        return (np.load(run.path / "template_vertices.npy", allow_pickle=False),
                np.load(run.path / "template_faces.npy", allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise input_error(run.path, f"run has no readable template ({exc})") from None


def load_codec(run: Run, config: ExperimentConfig, n_vertices: int | None = None, device: str = "auto"):
    """The trained model of a run: an object with ``encode``, ``decode`` and ``reconstruct`` on ``(N, V, 3)``
    meshes in the data's unit. ``n_vertices``: the data's vertex count, checked against the checkpoint."""
    tensors, meta = load_weights(run.weights_path)
    if n_vertices is not None and meta.get("n_vertices") != str(n_vertices):
        raise input_error(run.weights_path, f"checkpoint is for {meta.get('n_vertices')} vertices, "
                                            f"the data has {n_vertices}")
    spec = config.spec
    if spec.training == "closed-form":
        return spec.load().from_state(tensors)
    return load_network_method(run, config, template_of(run), device)


def load_network_method(run: Run, config: ExperimentConfig, template: tuple[np.ndarray, np.ndarray],
                        device: str = "auto"):
    """Rebuild a trained loop-trained method from a run folder (best weights and normaliser)."""
    from morphable.data.registered import Normaliser
    from morphable.explicit.method import template_hierarchy
    from morphable.train import load_checkpoint, select_device

    torch_device = select_device(device)
    hierarchy = template_hierarchy(template[0], template[1], config.model)
    n = len(template[0])
    placeholder = Normaliser(np.zeros((n, 3), np.float32), np.ones((n, 3), np.float32))
    method = config.spec.load().create(config, hierarchy, placeholder, torch_device, None)
    load_checkpoint(run.weights_path, method, torch_device)
    return method


def evaluate(run: Run, config: ExperimentConfig, data: ExplicitData, device: str = "auto") -> dict[str, Any]:
    """Metrics on the test (and validation) meshes; plots and meshes in the run, and, when ``data`` is the
    run's own dataset, ``train_codes.safetensors`` (the codes ``sample`` draws from).

    Learned aggregation matrices are drawn (QEM vs learned) and frozen into sparse pooling first."""
    from morphable.explicit.figures import interpolation_strip, mapping_matrices_figure
    from morphable.explicit.pooling import freeze_learned_aggregations

    dataset, split = data.dataset, data.split
    codec = load_codec(run, config, dataset.n_vertices, device)
    network = getattr(codec, "network", None)
    if network is not None and mapping_matrices_figure(run, network):
        freeze_learned_aggregations(network)
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
    if config.data.path == run.config["data"]["path"]:
        save_weights(run.path / TRAIN_CODES, {"codes": np.asarray(codec.encode(dataset.vertices[split.train]),
                                                                  dtype=np.float32)},
                     {"method": config.method, "n_vertices": str(dataset.n_vertices)})
    test_set = dataset.subset(split.test)
    interpolation_strip(run, codec, test_set.vertices[0], test_set.vertices[-1], dataset.faces,
                        (f"{test_set.subjects[0]} {test_set.expressions[0]}".strip() or "first",
                         f"{test_set.subjects[-1]} {test_set.expressions[-1]}".strip() or "last"))
    test = results["test"]
    metrics = {k: test[k] for k in ("mean_mm", "std_mm", "median_mm", "max_mm")}
    metrics.update({"protocol": split.protocol, "fold": split.fold, "split_sizes": split.sizes(),
                    "unit": dataset.unit, "splits": results})
    report = getattr(codec, "evaluation_report", None)
    if report is not None:
        metrics[config.method] = report(run, dataset, split)
    _write_curve_plot(run, config.method, test)
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    return (f"test mean {metrics['mean_mm']:.3f} +- {metrics['std_mm']:.3f} mm, median {metrics['median_mm']:.3f} mm "
            f"({metrics['split_sizes']['test']} test meshes)")


def load(run: Run, device: str = "auto"):
    """The :class:`~morphable.explicit.model.MeshModel` of a run folder."""
    from morphable.explicit.model import MeshModel

    config = config_from_dict(run.config, str(run.path / "config.json"))
    codec = load_codec(run, config, device=device)
    return MeshModel(run, config, codec)


def _write_curve_plot(run: Run, name: str, test: dict) -> None:
    from morphable.viz import cumulative_error_plot

    curve = test["curve"]
    cumulative_error_plot(run.file("plots", "cumulative_error.png"),
                          {name: (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))})


def train_all_folds(config: ExperimentConfig, out: str | Path, overwrite: bool = False,
                    progress: bool = True) -> dict:
    """Train one run per fold of the config's protocol into ``out/<fold>/`` and write the fold table."""
    from morphable.experiment import train

    dataset = load_registered(config.data.path, unit=config.data.unit, template=config.data.template)
    out = Path(out)
    for fold in protocol_folds(dataset, config.data.protocol):
        fold_config = config_from_dict(config.to_dict())
        fold_config.data.fold = fold
        if progress:
            print(f"--- fold {fold} ---", flush=True)
        train(fold_config, out / str(fold), overwrite=overwrite, progress=progress)
    return fold_table(out)


def fold_table(folder: str | Path, reevaluate: bool = False) -> dict:
    """Per-fold table (mean +- std, median mm) of the runs in ``folder/*/`` (Deep3DMM supplement Table 5).

    Writes ``folds.json`` and ``folds.md`` into ``folder``; ``reevaluate`` re-runs each fold's evaluation.
    """
    from morphable.experiment import evaluate as evaluate_run
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
