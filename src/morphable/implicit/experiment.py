"""Runs of the implicit identity models: SDF datasets from mesh folders, training, mesh extraction, depth
observations.

A run folder of ``morphable train npm|triplane`` holds ``config.json``, ``sdf_dataset.json`` (a copy of the
training set's description: shape names, unit and each shape's similarity to the unit sphere),
``model.safetensors`` / ``last.safetensors`` (the loop's checkpoints: network weights, the code table
``method_extra.codes`` (N, Z), optimiser states), ``log.csv`` and ``metrics.json`` (final losses).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from morphable.config import IMPLICIT_METHODS, ExperimentConfig, config_from_dict
from morphable.errors import input_error
from morphable.io import read_json, write_json
from morphable.runs import Run, process_rank

MESH_SUFFIXES = (".obj", ".ply")


def train_implicit(config: ExperimentConfig, out: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Train an NPM / tri-plane identity model on the SDF dataset ``config.data.path``; returns the metrics.

    The dataset is read (and validated) before the run folder is created. Training uses every shape
    (an auto-decoder has no held-out codes); the checkpoint with the lowest mean training loss of an
    epoch is ``model.safetensors``. ``metrics.json``: ``final`` (the last epoch's mean losses),
    ``best_epoch``, ``best_loss``, ``n_shapes``, ``parameters``, ``seconds``. Under torchrun only rank 0
    writes and the other ranks return ``{}``.
    """
    from morphable.data.sdf import DATASET_JSON, SdfDataset, SubsampleCounts
    from morphable.implicit.method import ImplicitMethod
    from morphable.train import LOG_FILE, LoopConfig, fit, init_distributed, parameter_count, select_device

    if config.method not in IMPLICIT_METHODS:
        raise input_error("config", f"method '{config.method}' is not an implicit model")
    if resume:
        run = Run.open(out)
        config = config_from_dict(run.config, str(run.path / "config.json"))
    model = config.model
    dataset = SdfDataset(config.data.path, SubsampleCounts(model.surface_face, model.surface_nonface, model.ball),
                         seed=config.seed, progress=progress)
    if not resume:
        run = Run.create(out, config.to_dict(), overwrite=overwrite)
        if process_rank() == 0:
            write_json(run.file(DATASET_JSON), read_json(dataset.root / DATASET_JSON))
    device = select_device(config.train.device)
    dist_info = init_distributed(device)
    method = ImplicitMethod(config, len(dataset), device)
    if progress and dist_info.is_main:
        print(f"{config.method}: {dataset.describe()}", flush=True)
    loop = LoopConfig(epochs=config.train.epochs, batch_size=min(config.train.batch_size, len(dataset)),
                      seed=config.seed, progress=progress)
    summary = fit(method, dataset, None, loop, run.path, device, resume=resume, dist_info=dist_info,
                  metadata={"method": config.method, "n_codes": str(len(dataset))})
    if not dist_info.is_main:
        return {}
    with open(run.path / LOG_FILE, newline="") as f:
        last = list(csv.DictReader(f))[-1]
    final = {k[len("train_"):]: float(v) for k, v in last.items() if k.startswith("train_")}
    metrics = {"final": final, "best_epoch": summary["best_epoch"], "best_loss": summary["best_value"],
               "n_shapes": len(dataset), "epochs": config.train.epochs, "seconds": summary["seconds"],
               "parameters": parameter_count(method), "device": str(device)}
    run.write_metrics(metrics)
    return metrics


def load_implicit(path: str | os.PathLike, device: str = "cpu"):
    """A trained implicit run: ``(method, run, shapes)`` with the best weights and codes loaded,
    network in eval mode; ``shapes`` is the run's copy of the dataset description."""
    import torch

    from morphable.data.sdf import DATASET_JSON
    from morphable.implicit.method import ImplicitMethod
    from morphable.train import load_checkpoint

    run = Run.open(path)
    config = config_from_dict(run.config, str(run.path / "config.json"))
    if config.method not in IMPLICIT_METHODS:
        raise input_error(run.path, f"run is a '{config.method}' model, not an implicit one")
    if not run.weights_path.exists():
        raise input_error(run.path, f"run has no weights ({run.weights_path.name})")
    shapes = read_json(run.path / DATASET_JSON)
    method = ImplicitMethod(config, len(shapes["shapes"]), torch.device(device))
    load_checkpoint(run.weights_path, method, torch.device(device))
    method.network.eval()
    return method, run, shapes


def extract_code_mesh(method, code, resolution: int = 256, device: str = "cpu"):
    """Zero level set of the run's field for one code ``(Z,)`` (a training code, a sample, a blend) at
    ``resolution^3`` over [-1, 1]^3 in normalised units, by the exact narrow-band extraction
    (:func:`morphable.mesh.extract.extract_mesh`). ``method``: an :class:`ImplicitMethod` (e.g. from
    :func:`load_implicit`). Returns vertices (V, 3), faces (F, 3) (both empty without a level set) and the
    extraction statistics.

    The field is clipped to the unit ball, ``max(f, |x| - 1)``: training samples (surface, near-surface and
    ball points) all lie in it, so outside it the network is unconstrained and its level-set sheets in the
    cube's corners are artefacts. Shapes are normalised to radius 0.9 (``data.sdf.DEFAULT_RADIUS``)."""
    import torch

    from morphable.mesh.extract import extract_mesh

    with torch.no_grad():
        fn = method.network.field.sdf_function(code.detach())
        return extract_mesh(fn, resolution=resolution, device=device, domain_radius=1.0)


def extract_run_mesh(path: str | os.PathLike, code: int, out: str | os.PathLike, resolution: int = 256,
                     normalised: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Extract the zero level set of training code ``code`` of a run at ``resolution^3`` over [-1, 1]^3 and
    write it to ``out`` (.ply/.obj). Vertices are mapped back to the source units with the shape's
    similarity unless ``normalised``. Returns the vertex and face counts and the extraction statistics."""
    from morphable.data.sdf import Similarity
    from morphable.io import write_mesh

    method, run, shapes = load_implicit(path, device)
    n_codes = method.codes.weight.shape[0]
    if not 0 <= code < n_codes:
        raise input_error(run.path, f"code {code} out of range: the run has codes 0..{n_codes - 1}")
    vertices, faces, stats = extract_code_mesh(method, method.codes.weight[code], resolution, device)
    if len(faces) == 0:
        raise input_error(run.path, f"code {code} has no zero level set inside the unit ball")
    if not normalised:
        vertices = Similarity.from_dict(shapes["shapes"][code]["similarity"]).invert(vertices)
    write_mesh(out, vertices, faces)
    return {"vertices": len(vertices), "faces": len(faces), "shape": shapes["shapes"][code]["name"],
            "evaluated_fraction": stats.fraction}


def mesh_files(folder: str | os.PathLike) -> list[Path]:
    """The .obj/.ply files of a folder (sorted), or the file itself; an empty folder is an input error."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise input_error(folder, "no such file or folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise input_error(folder, f"no meshes ({', '.join(MESH_SUFFIXES)}) in the folder")
    return files


def make_sdf_dataset(source: str | os.PathLike, out: str | os.PathLike, unit: str, region_vertices: int | None = None,
                     n_surface: int = 250_000, n_near: int = 250_000, n_ball: int = 100_000, seed: int = 0,
                     overwrite: bool = False, progress: bool = True) -> Path:
    """SDF dataset (:func:`morphable.data.sdf.write_sdf_dataset`, shared normalisation) from a mesh file or
    folder; vertices ``0 .. region_vertices - 1`` form the face region (all vertices when None)."""
    from morphable.data.sdf import write_sdf_dataset
    from morphable.io import read_mesh

    meshes = []
    for path in mesh_files(source):
        mesh = read_mesh(path)
        n = len(mesh.vertices)
        if region_vertices is not None and not 0 < region_vertices <= n:
            raise input_error(path, f"--region-vertices {region_vertices} is not in 1..{n} (the mesh's vertex count)")
        mask = np.arange(n) < (n if region_vertices is None else region_vertices)
        meshes.append((path.stem, mesh.vertices, mesh.faces, mask))
    return write_sdf_dataset(meshes, out, unit, n_surface=n_surface, n_near=n_near, n_ball=n_ball, seed=seed,
                             overwrite=overwrite, progress=progress)


def depth_observation(mesh_path: str | os.PathLike, out: str | os.PathLike, n_points: int = 2500,
                      yaw_deg: float = 0.0, resolution: int = 256, seed: int = 0) -> dict[str, Any]:
    """A single-view partial point cloud of a mesh, written as a PLY point cloud (no faces) with normals
    dropped: render depth from a camera on the +z axis (rotated by ``yaw_deg`` about y) at 4.5 bounding
    radii from the bounding-box centre with a 30 degree field of view (the bounding sphere fills about 80 %
    of the image height), back-project ``n_points`` random pixels that see the mesh."""
    import torch

    from morphable.io import read_mesh, write_ply
    from morphable.mesh.render import Camera, depth_point_cloud

    mesh = read_mesh(mesh_path)
    centre = (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2
    radius = float(np.linalg.norm(mesh.vertices - centre, axis=1).max())
    yaw = np.radians(yaw_deg)
    eye = centre + 4.5 * radius * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    camera = Camera.look_at(tuple(eye), tuple(centre), fov_deg=30.0, width=resolution, height=resolution)
    points, _ = depth_point_cloud(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces), camera,
                                  n_points=n_points, seed=seed)
    write_ply(out, points.numpy())
    return {"points": len(points), "eye": eye.tolist()}
