"""Datasets made from mesh files and scans: SDF training sets of a folder of meshes, and single-view depth
observations (partial point clouds) of a mesh for fitting."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from morphable.data.registered import check_unit
from morphable.errors import MorphableError, input_error
from morphable.io import MESH_SUFFIXES, UNIT_TO_MM, read_mesh
from morphable.mesh.repair import remove_unreferenced_vertices, repair_and_warn
from morphable.mesh.topology import connected_components

if TYPE_CHECKING:
    from morphable.data.normal_maps import NormalMapSettings


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


HEAD_DIAGONAL_MM = (100.0, 600.0)
"""Bounding-box diagonals (mm) a head scan plausibly has; outside them the declared unit is probably wrong."""


def cut_by_plane(vertices: np.ndarray, faces: np.ndarray, point: Sequence[float], normal: Sequence[float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the vertices with ``(x - point) . normal >= 0`` and the faces whose three corners are all kept:
    ``(vertices (V', 3), faces (F', 3) renumbered, kept (V',) old indices, increasing)``."""
    n = np.asarray(normal, dtype=np.float64)
    if not np.linalg.norm(n) > 0:
        raise MorphableError("the cut plane's normal must not be zero")
    kept = np.nonzero((np.asarray(vertices, dtype=np.float64) - np.asarray(point, dtype=np.float64)) @ n >= 0)[0]
    old_to_new = np.full(len(vertices), -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    new_faces = old_to_new[np.asarray(faces, dtype=np.int64)]
    return np.asarray(vertices)[kept], new_faces[(new_faces >= 0).all(axis=1)], kept


def largest_component(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """``(F,)`` bool: the faces of the edge-connected component with the most faces (the lowest label on ties)."""
    _, labels = connected_components(faces, n_vertices)
    face_labels = labels[np.asarray(faces, dtype=np.int64)[:, 0]]
    return face_labels == np.argmax(np.bincount(face_labels))


def prepare_scan(path: Path, unit: str, region_vertices: int | None = None,
                 cut: tuple[Sequence[float], Sequence[float]] | None = None,
                 keep_largest: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a scan and prepare it as NPHM does: ``(vertices, faces, region_mask)`` in the file's unit.

    ``region_vertices``: vertices ``0 .. region_vertices - 1`` of the file form the face region (all when
    None). ``cut = (point, normal)``: :func:`cut_by_plane` (the torso). ``keep_largest``:
    :func:`largest_component`. Vertices no face uses any more are dropped. One warning line on stderr when the
    bounding-box diagonal is outside :data:`HEAD_DIAGONAL_MM` for the declared unit.
    """
    mesh = read_mesh(path)
    V, F = mesh.vertices, mesh.faces
    n = len(V)
    if region_vertices is not None and not 0 < region_vertices <= n:
        raise input_error(path, f"--region-vertices {region_vertices} is not in 1..{n} (the mesh's vertex count)")
    mask = np.arange(n) < (n if region_vertices is None else region_vertices)
    if cut is not None:
        V, F, kept = cut_by_plane(V, F, *cut)
        mask = mask[kept]
        if len(F) == 0:
            raise input_error(path, "nothing of the mesh is left on the kept side of the cut plane")
    if keep_largest and len(F):
        F = F[largest_component(F, len(V))]
    if cut is not None or keep_largest:
        V, F, kept = remove_unreferenced_vertices(V, F)
        mask = mask[kept]
    if len(V):
        diagonal_mm = float(np.linalg.norm(np.ptp(V, axis=0))) * UNIT_TO_MM[unit]
        low, high = HEAD_DIAGONAL_MM
        if not low <= diagonal_mm <= high:
            print(f"morphable: warning: {path}: the bounding-box diagonal is {diagonal_mm:.4g} mm with --unit {unit}, "
                  f"outside the {low:g}-{high:g} mm of a head: is the unit right?", file=sys.stderr)
    return V, F, mask


def make_sdf_dataset(source: str | os.PathLike, out: str | os.PathLike, unit: str, region_vertices: int | None = None,
                     n_surface: int = 250_000, n_near: int = 250_000, n_ball: int = 100_000, seed: int = 0,
                     overwrite: bool = False, progress: bool = True,
                     cut: tuple[Sequence[float], Sequence[float]] | None = None,
                     largest_component: bool = False, normal_maps: NormalMapSettings | None = None) -> Path:
    """SDF dataset (:func:`morphable.data.sdf.write_sdf_dataset`, shared normalisation, optional ``normal_maps``)
    from a mesh file or folder, each mesh prepared by :func:`prepare_scan` (``region_vertices``, ``cut``,
    ``largest_component``)."""
    from morphable.data.sdf import write_sdf_dataset

    unit = check_unit(unit, out)
    meshes = [(path.stem, *prepare_scan(path, unit, region_vertices, cut, largest_component))
              for path in mesh_files(source)]
    return write_sdf_dataset(meshes, out, unit, n_surface=n_surface, n_near=n_near, n_ball=n_ball, seed=seed,
                             normal_maps=normal_maps, overwrite=overwrite, progress=progress)


def depth_observation(mesh_path: str | os.PathLike, out: str | os.PathLike, n_points: int = 2500,
                      yaw_deg: float = 0.0, resolution: int = 256, seed: int = 0) -> dict[str, Any]:
    """A single-view partial point cloud of a mesh, written as a PLY point cloud (no faces) with normals
    dropped: render depth from a camera on the +z axis (rotated by ``yaw_deg`` about y) at 4.5 bounding
    radii from the bounding-box centre with a 30 degree field of view (the bounding sphere fills about 80 %
    of the image height), back-project ``n_points`` random pixels that see the mesh. Duplicate and degenerate
    faces and unreferenced vertices are removed first (one warning line), orientation does not matter."""
    import torch

    from morphable.io import write_ply
    from morphable.render import Camera, depth_point_cloud

    read = read_mesh(mesh_path)
    mesh = repair_and_warn(str(mesh_path), read.vertices, read.faces, "the depth is rendered from the repaired mesh",
                           orient=False)
    if len(mesh.faces) == 0:
        raise input_error(mesh_path, "the mesh has no face with a non-zero area")
    centre = (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2
    radius = float(np.linalg.norm(mesh.vertices - centre, axis=1).max())
    yaw = np.radians(yaw_deg)
    eye = centre + 4.5 * radius * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    camera = Camera.look_at(tuple(eye), tuple(centre), fov_deg=30.0, width=resolution, height=resolution)
    points, _ = depth_point_cloud(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces), camera,
                                  n_points=n_points, seed=seed)
    write_ply(out, points.numpy())
    return {"points": len(points), "eye": eye.tolist()}
