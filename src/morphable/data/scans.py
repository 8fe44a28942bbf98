"""Datasets made from mesh files and scans: SDF training sets of a folder of meshes, and single-view depth
observations (partial point clouds) of a mesh for fitting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from morphable.errors import input_error
from morphable.io import MESH_SUFFIXES


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
    from morphable.render import Camera, depth_point_cloud

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
