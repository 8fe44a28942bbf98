"""Run hooks of the implicit family (SDF auto-decoders: NPM, tri-plane) for :mod:`morphable.experiment`.

A run folder of ``morphable train npm|triplane`` holds ``config.json``, ``sdf_dataset.json`` (a copy of the
training set's description: shape names, unit and each shape's similarity to the unit sphere),
``model.safetensors`` / ``last.safetensors`` (the loop's checkpoints: network weights, the code table
``method_extra.codes`` (N, Z), optimiser states), ``log.csv``, ``metrics.json``, ``report.md`` and ``plots/``
(losses, the extracted meshes of the first training codes).

Validation: an auto-decoder has no held-out codes, so validation is the same objectives on a fixed, separate
draw of points (seed ``seed + 1``) of up to :data:`VALIDATION_SHAPES` training shapes: it tells how well the
field fits its shapes away from the points it was trained on. The selected checkpoint is the epoch with the
lowest validation loss. Evaluation against ground truth (``morphable eval RUN --gt MESH ...``) extracts the
code of each training shape whose name is a ground-truth file's stem and reports the NPHM surface metrics.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from morphable.config import ExperimentConfig, ExpressionConfig
from morphable.errors import input_error
from morphable.io import read_json, write_json
from morphable.runs import LOG_FILE, Run, process_rank

VALIDATION_SHAPES = 16
PREVIEW_CODES = 4
PREVIEW_RESOLUTION = 64


class ValidationDraws:
    """A fixed draw of sample points of the first ``min(n, len(dataset))`` shapes of an ``SdfDataset``:
    item ``i`` is always the same sub-sample (generator seeded by ``(seed, i)``), so validation losses of
    different epochs compare."""

    def __init__(self, dataset, seed: int, n: int = VALIDATION_SHAPES) -> None:
        self.dataset, self.seed, self.n = dataset, seed, min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        import torch

        from morphable.data.sdf import subsample

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        item = subsample(self.dataset.samples[index], self.dataset.counts, generator)
        item["index"] = torch.tensor(index, dtype=torch.long)
        return item


class NormalMapViews:
    """An ``SdfDataset`` whose items also carry ``views`` ground-truth normal maps of their shape (the 2D
    objectives): ``view_normals`` (V, H, W, 3) float32 in each camera's frame, 0 off the mask;
    ``view_K`` (V, 3, 3) and ``view_pose`` (V, 4, 4) float64, the OpenCV cameras. The views are distinct, drawn
    per item from a generator seeded by ``(seed, epoch, index)`` after :meth:`set_epoch` (so a resume draws the
    same ones), from torch's global generator before.

    maps: per shape ``(normals (M, H, W, 3), mask (M, H, W), K (M, 3, 3), pose (M, 4, 4))``, one map size.
    """

    def __init__(self, dataset, maps: Sequence[tuple[Any, Any, Any, Any]], views: int, seed: int) -> None:
        import torch

        self.dataset, self.views, self.seed = dataset, views, seed
        self.epoch: int | None = None
        self.maps = [(torch.as_tensor(np.asarray(n) * np.asarray(m)[..., None], dtype=torch.float32),
                      torch.tensor(np.array(k), dtype=torch.float64),
                      torch.as_tensor(np.asarray(p), dtype=torch.float64)) for n, m, k, p in maps]

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        import torch

        from morphable.data.sdf import item_generator

        generator = item_generator(self.seed, self.epoch, index, 2)
        normals, K, pose = self.maps[index]
        chosen = torch.randperm(len(normals), generator=generator)[:self.views]
        return {**self.dataset[index], "view_normals": normals[chosen], "view_K": K[chosen], "view_pose": pose[chosen]}


@dataclass
class ImplicitData:
    train: Any
    validation: ValidationDraws
    sdf: Any = None

    def __post_init__(self) -> None:
        if self.sdf is None:
            self.sdf = self.train


def _expression(config: ExperimentConfig):
    """The expression-run hooks (:mod:`morphable.implicit.expression_experiment`) when ``config`` is one, else None."""
    if isinstance(config.model, ExpressionConfig):
        from morphable.implicit import expression_experiment

        return expression_experiment
    return None


def prepare_data(config: ExperimentConfig) -> ImplicitData:
    """The SDF dataset ``config.data.path`` (read and validated) and its validation draws (expression runs: the
    deformation data, :func:`morphable.implicit.expression_experiment.prepare_data`). Registered-mesh options
    (``--split``, ``--fold``, ``--template``) do not apply and are refused."""
    from morphable.data.sdf import SdfDataset, SubsampleCounts

    data = config.data
    for option, value, default in (("--split", data.protocol, "interpolation"), ("--fold", data.fold, None),
                                   ("--template", data.template, None), ("--unit", data.unit, None)):
        if value != default:
            raise input_error(data.path, f"{option} does not apply to an SDF or deformation dataset (its unit is in "
                                         "its JSON description)")
    if _expression(config):
        return _expression(config).prepare_data(config)
    from morphable.implicit.method import loss_weights

    loss_weights(config)  # unknown loss-weight names: one line before anything is written
    model = config.model
    dataset = SdfDataset(data.path, SubsampleCounts(model.surface_face, model.surface_nonface, model.ball),
                         seed=config.seed)
    train = normal_map_views(dataset, config) if model.views_per_step else dataset
    return ImplicitData(train, ValidationDraws(dataset, config.seed + 1), dataset)


def normal_map_views(dataset, config: ExperimentConfig) -> NormalMapViews:
    """The dataset with its ground-truth normal maps (:meth:`SdfDataset.normal_maps`) for the 2D objectives;
    maps a model cannot use (fewer views than ``views_per_step``, a side that ``render_resolution`` does not
    divide) are a one-line error naming the file."""
    model = config.model
    maps = []
    for index in range(len(dataset)):
        found = dataset.normal_maps(index)
        n_views, height, width = found.mask.shape
        path = dataset.normal_map_files[index]
        if n_views < model.views_per_step:
            raise input_error(path, f"{n_views} views, fewer than the {model.views_per_step} the model renders a step")
        if height != width or height % model.render_resolution:
            raise input_error(path, f"{height} x {width} maps: render_resolution {model.render_resolution} must "
                                    "divide their (square) side")
        maps.append((found.normals, found.mask, np.broadcast_to(found.K, (n_views, 3, 3)), found.poses))
    return NormalMapViews(dataset, maps, model.views_per_step, config.seed)


def evaluation_data(config: ExperimentConfig) -> None:
    """Nothing: a finished run is evaluated from its folder (and ground-truth meshes) alone."""
    return None


def fit(config: ExperimentConfig, run: Run, data: ImplicitData, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Train the auto-decoder on every shape of the dataset (codes and network) in the shared loop."""
    if _expression(config):
        return _expression(config).fit(config, run, data, resume, progress)
    from morphable.data.sdf import DATASET_JSON
    from morphable.train import LoopConfig, fit as fit_loop, init_distributed, parameter_count, select_device

    dataset = data.sdf
    if process_rank() == 0 and not resume:
        write_json(run.file(DATASET_JSON), read_json(dataset.root / DATASET_JSON))
    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    method = config.spec.load()(config, len(dataset), device)
    if progress and dist_info.is_main:
        print(f"{config.method}: {dataset.describe()}", flush=True)
        method.announce = lambda line: print(line, flush=True)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=min(config.train.batch_size, len(dataset)),
                      seed=config.seed, progress=progress, tensorboard=config.train.tensorboard)
    summary = fit_loop(method, data.train, data.validation, loop, run.path, device, resume=resume,
                       dist_info=dist_info, metadata={"method": config.method, "n_codes": str(len(dataset))})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def _last_losses(run: Run) -> tuple[dict[str, float], dict[str, float]]:
    """The last epoch's mean training and validation losses from ``log.csv``."""
    with open(run.path / LOG_FILE, newline="") as f:
        last = list(csv.DictReader(f))[-1]
    pick = lambda prefix: {k[len(prefix):]: float(v) for k, v in last.items() if k.startswith(prefix) and v != ""}  # noqa: E731
    return pick("train_"), pick("val_")


def evaluate(run: Run, config: ExperimentConfig, data: ImplicitData | None, gt: Sequence[str] = (),
             region_vertices: int | None = None, resolution: int = 256, metric_samples: int | None = None,
             device: str = "auto") -> dict[str, Any]:
    """Final losses, a picture of the first training codes' meshes (``plots/training_shapes.png``) and, for
    each ground-truth mesh of ``gt`` (named like a training shape), face / head surface metrics."""
    if _expression(config):
        return _expression(config).evaluate(run, config, data, gt, region_vertices, resolution, metric_samples, device)
    from morphable.metrics import METRIC_SAMPLES
    from morphable.viz import mesh_strip

    model = load(run, device)
    final, validation = _last_losses(run)
    metrics: dict[str, Any] = {"final": final, "validation": validation, "n_shapes": model.n_codes,
                               "unit": model.unit}
    shown = list(range(min(PREVIEW_CODES, model.n_codes)))
    meshes = [model.extract(k, PREVIEW_RESOLUTION) for k in shown]
    mesh_strip(run.file("plots", "training_shapes.png"), [m if len(m[1]) else None for m in meshes],
               [model.names[k] for k in shown], columns=PREVIEW_CODES)
    if gt:
        metrics["ground_truth"] = ground_truth_metrics(model, gt, region_vertices, resolution,
                                                       metric_samples or METRIC_SAMPLES)
        heads = [m["head"]["chamfer_l1_mm"] for m in metrics["ground_truth"].values()]
        metrics["head_chamfer_l1_mm"] = float(np.mean(heads))
    return metrics


def ground_truth_metrics(model, gt: Sequence[str], region_vertices: int | None, resolution: int,
                         metric_samples: int) -> dict[str, dict]:
    """``{shape name: {"face": ..., "head": ...}}``: each ground-truth mesh against the extraction of the
    training code of the same name (the file's stem), in the data's unit converted to mm."""
    from morphable.io import UNIT_TO_MM
    from morphable.metrics import read_ground_truth, region_metrics

    out = {}
    for path in gt:
        name = Path(path).stem
        if name not in model.names:
            raise input_error(path, f"no training shape is named '{name}' (the run's shapes: "
                                    f"{', '.join(model.names[:8])}{' ...' if len(model.names) > 8 else ''})")
        mesh, mask = read_ground_truth(path, region_vertices)
        pred = model.extract(model.names.index(name), resolution)
        if len(pred[1]) == 0:
            raise input_error(path, f"the code of '{name}' has no surface inside the unit ball")
        out[name] = region_metrics(pred, (mesh.vertices, mesh.faces), mask, UNIT_TO_MM[model.unit],
                                   n_samples=metric_samples)
    return out


def summary(metrics: dict[str, Any]) -> str:
    if "pairs" in metrics:
        from morphable.implicit.expression_experiment import summary as expression_summary

        return expression_summary(metrics)
    line = (f"{metrics['n_shapes']} shapes, final loss {metrics['final'].get('loss', float('nan')):.4g}, "
            f"validation loss {metrics['validation'].get('loss', float('nan')):.4g}")
    if "ground_truth" in metrics:
        line += f"; head Chamfer-L1 {metrics['head_chamfer_l1_mm']:.3f} mm (mean of {len(metrics['ground_truth'])})"
    return line


def load(run: Run, device: str = "auto"):
    """The :class:`~morphable.implicit.model.ImplicitModel` of a run folder (an expression run's
    :class:`~morphable.implicit.expression_model.ExpressionModel`)."""
    from morphable.implicit.model import ImplicitModel

    if _expression(run.trained_config("implicit")):
        return _expression(run.trained_config("implicit")).load(run, device)

    return ImplicitModel(*load_implicit(run.path, device))


def load_implicit(path: str | os.PathLike, device: str = "auto"):
    """A trained implicit run: ``(method, run, shapes)`` with the best weights and codes loaded, network in
    eval mode; ``shapes`` is the run's copy of the dataset description."""
    from morphable.data.sdf import DATASET_JSON
    from morphable.train import load_checkpoint, select_device

    run = Run.open(path)
    config = run.trained_config("implicit")
    torch_device = select_device(device)
    shapes = read_json(run.path / DATASET_JSON)
    method = config.spec.load()(config, len(shapes["shapes"]), torch_device)
    load_checkpoint(run.weights_path, method, torch_device)
    for network in method.networks.values():
        network.eval()
    return method, run, shapes


def extract_code_mesh(method, code, resolution: int = 256):
    """Zero level set of the run's field for one code ``(Z,)`` (a training code, a sample, a blend) at
    ``resolution^3`` over [-1, 1]^3 in normalised units, by the exact narrow-band extraction
    (:func:`morphable.mesh.extract.extract_mesh`). ``method``: an :class:`~morphable.implicit.method.ImplicitMethod` (e.g. from
    :func:`load_implicit`). Returns vertices (V, 3), faces (F, 3) (both empty without a level set) and the
    extraction statistics.

    The field is clipped to the unit ball, ``max(f, |x| - 1)``: training samples (surface, near-surface and
    ball points) all lie in it, so outside it the network is unconstrained and its level-set sheets in the
    cube's corners are artefacts. Shapes are normalised to radius 0.9 (``data.sdf.DEFAULT_RADIUS``)."""
    import torch

    from morphable.mesh.extract import extract_mesh

    with torch.no_grad():
        fn = method.network.field.sdf_function(code.detach())
        return extract_mesh(fn, resolution=resolution, device=str(method.device), domain_radius=1.0)


def extract_run_mesh(path: str | os.PathLike, code: int, out: str | os.PathLike, resolution: int = 256,
                     normalised: bool = False, device: str = "auto") -> dict[str, Any]:
    """Extract the zero level set of training code ``code`` of a run at ``resolution^3`` over [-1, 1]^3 and
    write it to ``out`` (.ply/.obj). Vertices are mapped back to the source units with the shape's
    similarity unless ``normalised``. Returns the vertex and face counts and the extraction statistics."""
    from morphable.io import write_mesh

    model = load(Run.open(path), device)
    if not 0 <= code < model.n_codes:
        raise input_error(model.run.path, f"code {code} out of range: the run has codes 0..{model.n_codes - 1}")
    vertices, faces = model.extract(code, resolution, normalised=normalised)
    if len(faces) == 0:
        raise input_error(model.run.path, f"code {code} has no zero level set inside the unit ball")
    write_mesh(out, vertices, faces)
    return {"vertices": len(vertices), "faces": len(faces), "shape": model.names[code],
            "evaluated_fraction": model.last_extraction.fraction}
