"""Run-driver hooks of expression runs (``morphable train expression-small --data DEFORM --identity RUN``), called
by :mod:`morphable.implicit.experiment` for :class:`~morphable.config.ExpressionConfig` models.

``--data``: a ``morphable data deform`` folder; ``--identity``: an ``npm`` / ``triplane`` run trained on its
``identity/`` SDF data. The identity run must have one shape per subject of the data, named like the subject,
under the same similarity (so both networks share one normalised space); its network and codes stay frozen.

A run folder holds ``config.json`` (``model.identity``: the identity run, absolute), ``deformation.json`` (a copy
of the data's description), the loop's checkpoints (``networks.deformation``, ``method_extra.codes`` (N, d_ex),
``method_extra.identity_codes`` (S, d_id)), ``log.csv``, ``metrics.json``, ``report.md`` and ``plots/``.

Evaluation (training samples: an auto-decoder has no held-out codes; held-out expressions are scored by fitting,
``morphable fit`` and ``benchmarks/bm_expression.py``):

* ``pairs``: over the small-noise pairs (level 1) of every posed sample, the mean face-pair error
  ``|x_n + F_ex(x_n) - x_p|`` and that of the identity map ``|x_n - x_p|`` (mm), and the mean and 99th percentile
  of the non-face motion ``|F_ex(x_n)|`` (mm);
* ``surfaces``: for the :data:`SHOWN_SAMPLES` posed samples that move most, face / head Chamfer-L1, normal
  consistency and F-score@1mm (:func:`morphable.metrics.region_metrics`, :data:`EVAL_SAMPLES` points a surface)
  of the posed mesh (the identity mesh at :data:`EVAL_RESOLUTION` ^3, warped) and of the unwarped identity mesh,
  against the data's posed mesh (``meshes/<sample>.npy``), and ``floor``: that mesh against itself (other
  samples), the metrics' sampling floor;
* ``plots/expressions.png``: those samples' neutral meshes coloured by the magnitude of the displacement, beside
  the posed meshes, and ``meshes/<sample>.ply`` (the posed meshes, data units).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from morphable.config import ExperimentConfig
from morphable.errors import MorphableError, input_error
from morphable.io import read_json, read_npy, write_json
from morphable.runs import Run, process_rank

DEFORMATION_COPY = "deformation.json"
SHOWN_SAMPLES = 4
EVAL_RESOLUTION = 128
EVAL_SAMPLES = 200_000
"""Surface samples of each predicted mesh for the evaluation's surface metrics."""
SIMILARITY_TOLERANCE = 1e-6
IDENTITY_METHODS = ("npm", "triplane")


@dataclass
class ExpressionData:
    """The deformation data (training items), a fixed draw of it (validation) and the identity codes
    ``(S, d_id)`` of its subjects, in the data's subject order."""

    train: Any
    validation: Any
    identity_codes: Any


def load_identity_run(path: str | os.PathLike, device: str = "auto"):
    """``(method, run, shapes)`` of an identity run (:func:`morphable.implicit.experiment.load_implicit`);
    anything but an ``npm`` / ``triplane`` run is refused naming it."""
    from morphable.implicit.experiment import load_implicit

    config = Run.open(path).trained_config("implicit")
    if config.method not in IDENTITY_METHODS:
        raise input_error(path, f"--identity must be an {' or '.join(IDENTITY_METHODS)} run, not '{config.method}'")
    return load_implicit(path, device)


def identity_codes_for(identity, subjects: Sequence[str], similarity):
    """The codes ``(S, d_id)`` of ``subjects`` (in that order) in a loaded identity run ``identity`` =
    ``(method, run, shapes)``, after checking that it has one shape per subject, named like it, under
    ``similarity``; one-line errors name the run."""
    from morphable.data.sdf import Similarity

    method, run, shapes = identity
    names = [s["name"] for s in shapes["shapes"]]
    missing = [s for s in subjects if s not in names]
    if missing:
        raise input_error(run.path, f"the identity run has no shape for subject(s) {', '.join(missing[:4])} (train "
                                    "it on the deformation data's identity/ folder)")
    for subject in subjects:
        theirs = Similarity.from_dict(shapes["shapes"][names.index(subject)]["similarity"])
        if (abs(theirs.scale - similarity.scale) > SIMILARITY_TOLERANCE * similarity.scale
                or np.abs(np.subtract(theirs.translation, similarity.translation)).max()
                > SIMILARITY_TOLERANCE / similarity.scale):
            raise input_error(run.path, f"shape '{subject}' is normalised differently from the deformation data "
                                        "(train the identity run on its identity/ folder)")
    return method.codes.weight.detach()[[names.index(s) for s in subjects]].clone()


def fixed_draw(dataset, seed: int):
    """A copy of a :class:`~morphable.data.deformation.DeformationDataset` (sharing its pairs) whose item ``i``
    is always the same draw (seed ``seed``, epoch 0): validation losses of different epochs compare."""
    draw = copy.copy(dataset)
    draw.seed = seed
    draw.set_epoch(0)
    return draw


def prepare_data(config: ExperimentConfig) -> ExpressionData:
    """The deformation data, its validation draw and the identity codes, all checked before a file is written."""
    from morphable.data.deformation import DeformationDataset
    from morphable.implicit.expression_method import check_width

    if not config.model.identity:
        raise MorphableError("an expression run deforms a trained identity model: give --identity RUN (an npm or "
                             "triplane run trained on the deformation data's identity/ folder)")
    dataset = DeformationDataset(config.data.path, config.model.pairs, seed=config.seed)
    codes = identity_codes_for(load_identity_run(config.model.identity, "cpu"), dataset.subjects, dataset.similarity)
    check_width(config.model, codes.shape[1])
    return ExpressionData(dataset, fixed_draw(dataset, config.seed + 1), codes)


def fit(config: ExperimentConfig, run: Run, data: ExpressionData, resume: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Train field and expression codes on every sample in the shared loop (identity frozen)."""
    from morphable.data.deformation import DEFORMATION_JSON
    from morphable.train import LoopConfig, fit as fit_loop, parameter_count, select_device

    dataset = data.train
    if process_rank() == 0 and not resume:
        write_json(run.file(DEFORMATION_COPY), read_json(dataset.root / DEFORMATION_JSON))
    device = select_device(config.train.device)
    method = config.spec.load()(config, data.identity_codes, len(dataset), device)
    if progress:
        print(f"expression: {dataset.describe()}; identity run {config.model.identity}", flush=True)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=min(config.train.batch_size, len(dataset)),
                      seed=config.seed, progress=progress, tensorboard=config.train.tensorboard)
    summary = fit_loop(method, dataset, data.validation, loop, run.path, device, resume=resume,
                       metadata={"method": config.method, "n_codes": str(len(dataset))})
    return {**summary, "parameters": parameter_count(method), "device": str(device)}


def load(run: Run, device: str = "auto"):
    """The :class:`~morphable.implicit.expression_model.ExpressionModel` of a run folder (best weights, eval
    mode), with its identity run; an identity run whose codes changed since training is refused."""
    import torch

    from morphable.data.sdf import Similarity
    from morphable.implicit.expression_model import ExpressionModel
    from morphable.implicit.model import ImplicitModel
    from morphable.train import load_checkpoint, select_device

    config = run.trained_config("implicit")
    info = read_json(run.path / DEFORMATION_COPY)
    torch_device = select_device(device)
    identity = load_identity_run(config.model.identity, device)
    codes = identity_codes_for(identity, info["subjects"], Similarity.from_dict(info["similarity"]))
    method = config.spec.load()(config, codes, len(info["samples"]), torch_device)
    load_checkpoint(run.weights_path, method, torch_device)
    if not torch.allclose(method.identity_codes, codes.to(method.identity_codes), atol=1e-6):
        raise input_error(config.model.identity, f"the identity codes differ from those {run.path} was trained "
                                                 "with (the identity run was retrained)")
    method.field.eval()
    return ExpressionModel(method, run, info, ImplicitModel(*identity))


def pair_metrics(model, dataset) -> dict[str, float]:
    """Face-pair error of the field and of the identity map, and the non-face motion, in mm, over the level-1
    pairs of every posed sample of a :class:`~morphable.data.deformation.DeformationDataset` (see the module
    docstring)."""
    to_mm = dataset.similarity.to_mm(1.0, dataset.unit)
    errors, identity_errors, motion = [], [], []
    for k, pairs in enumerate(dataset.pairs):
        if dataset.is_neutral[k]:
            continue
        keep = pairs["level"] == 1
        z_id, z_ex = model.sample_codes(k)
        posed = model.warp(pairs["neutral"][keep], z_id, z_ex)
        face = pairs["face"][keep]
        error = np.linalg.norm(posed - pairs["posed"][keep], axis=1)
        moved = np.linalg.norm(posed - pairs["neutral"][keep], axis=1)
        errors.append(error[face])
        identity_errors.append(np.linalg.norm(pairs["neutral"][keep] - pairs["posed"][keep], axis=1)[face])
        motion.append(moved[~face])
    if not errors:
        raise input_error(dataset.root, "no posed samples to evaluate")
    error, ident = np.concatenate(errors) * to_mm, np.concatenate(identity_errors) * to_mm
    move = np.concatenate(motion) * to_mm
    return {"face_error_mm": float(error.mean()), "identity_map_face_error_mm": float(ident.mean()),
            "face_error_ratio": float(error.mean() / max(ident.mean(), 1e-12)),
            "nonface_motion_mm": float(move.mean()) if len(move) else 0.0,
            "nonface_motion_p99_mm": float(np.percentile(move, 99)) if len(move) else 0.0,
            "posed_samples": len(errors)}


def most_moving(info: dict[str, Any], n: int = SHOWN_SAMPLES) -> list[str]:
    """The ``n`` posed samples of the largest ``max_displacement_mm``, one per expression first."""
    posed = sorted((s for s in info["samples"] if not s["neutral"]), key=lambda s: -s.get("max_displacement_mm", 0))
    picked, seen = [], set()
    for s in posed:
        if s["expression"] not in seen:
            picked.append(s["name"])
            seen.add(s["expression"])
    picked += [s["name"] for s in posed if s["name"] not in picked]
    return picked[:n]


def surface_metrics_of(model, data_root: Path, names: Sequence[str], resolution: int = EVAL_RESOLUTION,
                       n_samples: int = EVAL_SAMPLES) -> tuple[dict[str, Any], list[tuple]]:
    """Posed-mesh and identity-mesh surface metrics of ``names`` against the data's posed meshes (see the module
    docstring), the sampling floor of each (the ground truth against itself, other samples) and, per sample,
    ``(name, neutral mesh, posed mesh, displacement (V,) mm)`` in data units for the pictures."""
    from morphable.data.deformation import load_sample_mesh
    from morphable.metrics import region_metrics

    to_mm = model.similarity.to_mm(1.0, model.unit)
    mask = read_npy(Path(data_root) / "face_mask.npy").astype(bool)
    out, meshes = {}, []
    for name in names:
        z_id, z_ex = model.sample_codes(name)
        neutral_v, faces = model.neutral(z_id, resolution)
        if len(faces) == 0:
            raise input_error(model.config.model.identity, f"the identity code of '{name}' has no surface")
        posed_v = model.warp(neutral_v, z_id, z_ex)
        gt = load_sample_mesh(data_root, model.info, name)
        out[name] = {label: region_metrics(mesh, gt, mask, to_mm, n_samples=n_samples, seed=seed)
                     for label, mesh, seed in (("posed", (posed_v, faces), 0), ("identity", (neutral_v, faces), 0),
                                               ("floor", gt, 2))}
        meshes.append((name, (model.similarity.invert(neutral_v), faces), (model.similarity.invert(posed_v), faces),
                       np.linalg.norm(posed_v - neutral_v, axis=1) * to_mm))
    return out, meshes


def expression_picture(path: Path, meshes: Sequence[tuple]) -> None:
    """Rows of (neutral mesh coloured by the displacement in mm, posed mesh) for each ``(name, neutral, posed,
    mm)``, one colour scale (0 to the largest 99th percentile) for all rows."""
    from morphable.viz import draw_mesh, pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(len(meshes), 2, figsize=(4.4, 2.3 * len(meshes)), squeeze=False)
    vmax = max(float(np.percentile(m[3], 99)) for m in meshes) or 1.0
    for row, (name, neutral, posed, moved) in zip(axes, meshes):
        draw_mesh(row[0], *neutral, values=moved, vmax=vmax)
        row[0].set_title(f"{name.split('__')[0]}: |dx| on neutral (0-{vmax:.1f} mm)", fontsize=7)
        draw_mesh(row[1], *posed)
        row[1].set_title(f"posed: {'/'.join(name.split('__')[1:])}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def evaluate(run: Run, config: ExperimentConfig, data=None, gt: Sequence[str] = (), region_vertices: int | None = None,
             resolution: int = 256, metric_samples: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Final losses, the pair and surface metrics of the module docstring, the pictures and meshes, and, for each
    ground-truth mesh of ``gt`` (named like a sample), face / head surface metrics of that sample's posed mesh."""
    from morphable.implicit.experiment import _last_losses, ground_truth_metrics
    from morphable.io import write_ply
    from morphable.metrics import METRIC_SAMPLES

    model = load(run, device)
    root = Path(config.data.path)
    final, validation = _last_losses(run)
    metrics: dict[str, Any] = {"final": final, "validation": validation, "n_samples": model.n_codes,
                               "n_subjects": len(model.subjects), "unit": model.unit}
    if data is None:
        from morphable.data.deformation import DeformationDataset

        dataset = DeformationDataset(root, pairs_per_item=1)
    else:
        dataset = data.train
    metrics["pairs"] = pair_metrics(model, dataset)
    shown = most_moving(model.info)
    if shown:
        metrics["surfaces"], meshes = surface_metrics_of(model, root, shown, EVAL_RESOLUTION, EVAL_SAMPLES)
        expression_picture(run.file("plots", "expressions.png"), meshes)
        for name, _, (vertices, faces), _ in meshes:
            write_ply(run.file("meshes", f"{name}.ply"), vertices, faces)
        for region in ("face", "head"):
            for label in ("posed", "identity", "floor"):
                metrics[f"{label}_{region}_chamfer_l1_mm"] = float(np.mean(
                    [m[label][region]["chamfer_l1_mm"] for m in metrics["surfaces"].values()]))
    if gt:
        metrics["ground_truth"] = ground_truth_metrics(model, gt, region_vertices, resolution,
                                                       metric_samples or METRIC_SAMPLES)
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    p = metrics["pairs"]
    line = (f"{metrics['n_samples']} samples of {metrics['n_subjects']} subjects; face pairs {p['face_error_mm']:.3f} mm "
            f"({100 * p['face_error_ratio']:.0f} % of the identity map's {p['identity_map_face_error_mm']:.3f} mm), "
            f"non-face motion {p['nonface_motion_mm']:.3f} mm")
    if "posed_face_chamfer_l1_mm" in metrics:
        line += (f"; posed meshes face Chamfer-L1 {metrics['posed_face_chamfer_l1_mm']:.3f} mm (unwarped identity "
                 f"{metrics['identity_face_chamfer_l1_mm']:.3f} mm, sampling floor "
                 f"{metrics['floor_face_chamfer_l1_mm']:.3f} mm)")
    return line
