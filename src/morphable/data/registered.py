"""Datasets of registered meshes (one shared topology), the CoMA protocols and normalisation.

Sources, all read into one :class:`RegisteredDataset` with vertices ``(N, V, 3)``:

* the COMA layout ``<root>/<subject>/<expression>/<frame>.ply`` (labels from the path),
* any folder of OBJ/PLY files with one topology (searched recursively; labels from the path),
* a ``.npy`` array ``(N, V, 3)`` with the template faces in a mesh file next to it
  (``template.ply`` / ``template.obj``) or given explicitly.

Files are always sorted by their relative path (the reference code used an unsorted glob, which made
its splits depend on the file system). Every dataset declares its unit: from ``dataset.json`` in the
root (``{"unit": "m"}``) or from the caller. After the first load the stacked array is cached in
``cache_dir("datasets")`` (:func:`morphable.io.cache_dir`), keyed by the files' paths, sizes and
modification times, so the cache is invalidated when any file changes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from morphable.errors import MorphableError, input_error
from morphable.io import (MESH_SUFFIXES, UNIT_HELP, UNIT_TO_MM, Mesh, atomic_folder, atomic_path, cache_dir,
                          check_output_folder, parse_unit, read_json, read_mesh, read_npy, write_json, write_ply)

DATASET_FILE = "dataset.json"
PROTOCOLS = ("interpolation", "extrapolation", "identity")


def check_unit(unit: str | float | None, source: str | os.PathLike) -> str:
    """Return the canonical spelling of ``unit`` (:func:`morphable.io.parse_unit`: m, cm, mm or millimetres
    per unit); otherwise raise a one-line error naming ``source``."""
    if unit is None:
        raise input_error(source, f"unit unknown: give --unit ({UNIT_HELP}) or a dataset.json with a 'unit' entry")
    canonical = parse_unit(unit)
    if canonical is None:
        raise input_error(source, f"unknown unit '{unit}' (expected {UNIT_HELP})")
    return canonical


@dataclass
class RegisteredDataset:
    """Meshes in correspondence.

    Attributes:
        vertices: ``(N, V, 3)`` float32 coordinates in ``unit``.
        faces: ``(F, 3)`` int64 template triangles shared by all meshes.
        subjects, expressions, frames: per-mesh labels, length N (empty strings when unknown).
        unit: ``"m"``, ``"cm"`` or ``"mm"``.
        root: where the data came from.
    """

    vertices: np.ndarray
    faces: np.ndarray
    subjects: list[str]
    expressions: list[str]
    frames: list[str]
    unit: str
    root: str = ""
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.vertices)

    @property
    def n_vertices(self) -> int:
        return self.vertices.shape[1]

    @property
    def to_mm(self) -> float:
        """Factor that converts a length in the dataset's unit to millimetres."""
        return UNIT_TO_MM[self.unit]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "RegisteredDataset":
        """A dataset of the meshes at ``indices`` (same topology, unit and root)."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda labels: [labels[i] for i in idx]  # noqa: E731
        return RegisteredDataset(self.vertices[idx], self.faces, pick(self.subjects), pick(self.expressions),
                                 pick(self.frames), self.unit, self.root, dict(self.metadata))


# --------------------------------------------------------------------------- loading


def load_registered(path: str | os.PathLike, unit: str | None = None, template: str | os.PathLike | None = None,
                    use_cache: bool = True, progress: bool = True) -> RegisteredDataset:
    """Load a registered dataset from a folder (COMA layout or any mesh folder) or a ``.npy`` array.

    Args:
        path: dataset folder or ``.npy`` file.
        unit: overrides the unit of ``dataset.json``; required when there is no ``dataset.json``.
        template: mesh file with the faces of a ``.npy`` dataset (default: ``template.ply``/``.obj`` beside it).
        use_cache: read/write the stacked-array cache of a folder dataset.
        progress: show a progress bar when many files are read.
    """
    path = Path(path)
    if not path.exists():
        raise input_error(path, "dataset not found")
    if path.is_file():
        if path.suffix.lower() != ".npy":
            raise input_error(path, "a dataset is a folder of meshes or an (N, V, 3) .npy array")
        return _load_npy(path, unit, template)
    info = _read_dataset_info(path)
    unit = check_unit(unit or info.get("unit"), path / DATASET_FILE if unit is None else path)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise input_error(path, "no .ply or .obj meshes found")
    rel = [f.relative_to(path) for f in files]
    vertices, faces = _load_stack(path, files, rel, use_cache, progress)
    coma = all(len(r.parts) == 3 for r in rel)
    subjects = [r.parts[0] if coma else "" for r in rel]
    expressions = [r.parts[1] if coma else "" for r in rel]
    frames = [r.stem if coma else r.with_suffix("").as_posix() for r in rel]
    return RegisteredDataset(vertices, faces, subjects, expressions, frames, unit, str(path), info)


def _read_dataset_info(root: Path) -> dict:
    file = root / DATASET_FILE
    if not file.exists():
        return {}
    info = read_json(file)
    if not isinstance(info, dict):
        raise input_error(file, "expected a JSON object")
    return info


def _cache_key(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha1(str(root.resolve()).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_stack(root: Path, files: list[Path], rel: list[Path], use_cache: bool,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    cache = cache_dir("datasets") / f"{_cache_key(root, files)}.npz" if use_cache else None
    if cache is not None and cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as data:
                return data["vertices"], data["faces"]
        except (OSError, ValueError, KeyError):
            cache.unlink(missing_ok=True)
    first = read_mesh(files[0])
    vertices = np.empty((len(files), len(first.vertices), 3), dtype=np.float32)
    iterator = enumerate(files)
    if progress and len(files) > 200:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(files), desc=f"reading {root.name}", unit="mesh", leave=False)
    for i, f in iterator:
        mesh = first if i == 0 else read_mesh(f)
        _check_same_topology(f, mesh, first, files[0].name)
        vertices[i] = mesh.vertices
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, vertices=vertices, faces=first.faces)
        except OSError:
            pass  # a read-only cache location only costs speed
    return vertices, first.faces


def _check_same_topology(path: Path, mesh: Mesh, first: Mesh, first_name: str) -> None:
    if len(mesh.vertices) != len(first.vertices):
        raise input_error(path, f"has {len(mesh.vertices)} vertices, expected {len(first.vertices)} "
                                f"(like {first_name}): all meshes must share one topology")
    if mesh.faces.shape != first.faces.shape or not np.array_equal(mesh.faces, first.faces):
        raise input_error(path, f"faces differ from those of {first_name}: all meshes must share one topology")


def _load_npy(path: Path, unit: str | None, template: str | os.PathLike | None) -> RegisteredDataset:
    info = _read_dataset_info(path.parent)
    unit = check_unit(unit or info.get("unit"), path)
    vertices = read_npy(path)
    if vertices.dtype.kind != "f":
        raise input_error(path, f"expected floating-point vertices, got dtype {vertices.dtype}")
    if vertices.ndim != 3 or vertices.shape[2] != 3 or len(vertices) == 0:
        raise input_error(path, f"expected an (N, V, 3) array with N > 0, got shape {vertices.shape}")
    if not np.isfinite(vertices).all():
        bad = int(np.nonzero(~np.isfinite(vertices).all(axis=(1, 2)))[0][0])
        raise input_error(path, f"mesh {bad} contains NaN or Inf")
    if template is None:
        candidates = [path.parent / f"template{s}" for s in MESH_SUFFIXES]
        template = next((c for c in candidates if c.exists()), None)
        if template is None:
            raise input_error(path, "no template faces: put template.ply beside it or give --template")
    mesh = read_mesh(template)
    if len(mesh.vertices) != vertices.shape[1]:
        raise input_error(template, f"template has {len(mesh.vertices)} vertices, the array has {vertices.shape[1]}")
    n = len(vertices)
    return RegisteredDataset(vertices.astype(np.float32), mesh.faces, [""] * n, [""] * n,
                             [str(i) for i in range(n)], unit, str(path), info)


# --------------------------------------------------------------------------- writing


def write_coma_layout(out_dir: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, subjects: Sequence[str],
                      expressions: Sequence[str], frames: Sequence[int | str], unit: str,
                      metadata: dict | None = None, overwrite: bool = False, progress: bool = True,
                      arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write meshes as ``<out>/<subject>/<expression>/<frame>.ply`` plus ``dataset.json`` (and each of
    ``arrays`` as ``<out>/<name>``, a ``.npy`` file, e.g. per-vertex region labels).

    The folder is written under a temporary name and renamed at the end (:func:`morphable.io.atomic_folder`),
    so an interrupted call leaves nothing half-written. ``frames`` that are integers are written as ``%04d``.
    """
    out = Path(out_dir)
    unit = check_unit(unit, out)
    check_output_folder(out, overwrite)
    with atomic_folder(out) as tmp:
        items = range(len(vertices))
        if progress and len(vertices) > 200:
            from tqdm import tqdm

            items = tqdm(items, desc=f"writing {out.name}", unit="mesh", leave=False)
        for i in items:
            frame = frames[i] if isinstance(frames[i], str) else f"{int(frames[i]):04d}"
            write_ply(tmp / subjects[i] / expressions[i] / f"{frame}.ply", vertices[i], faces)
        for name, array in (arrays or {}).items():
            np.save(tmp / name, np.asarray(array), allow_pickle=False)
        write_json(tmp / DATASET_FILE, {"format": "coma-layout", "unit": unit, **(metadata or {})})
    return out


# --------------------------------------------------------------------------- protocols


@dataclass
class Split:
    """Index arrays into a dataset for one protocol (and fold)."""

    protocol: str
    fold: str | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def protocol_folds(dataset: RegisteredDataset, protocol: str) -> list[str | None]:
    """The folds of a protocol: none for interpolation, each expression / subject for the others."""
    if protocol == "interpolation":
        return [None]
    labels = _fold_labels(dataset, protocol)
    return sorted(set(labels))


def _fold_labels(dataset: RegisteredDataset, protocol: str) -> list[str]:
    labels = dataset.expressions if protocol == "extrapolation" else dataset.subjects
    if any(label == "" for label in labels):
        kind = "expression" if protocol == "extrapolation" else "subject"
        raise input_error(dataset.root, f"protocol '{protocol}' needs {kind} labels (the COMA layout "
                                        "<subject>/<expression>/<frame>.ply)")
    return labels


def make_split(dataset: RegisteredDataset, protocol: str = "interpolation", fold: str | None = None,
               val_fraction: float = 0.05) -> Split:
    """Split a dataset by one of the CoMA protocols; validation is carved from train.

    * ``interpolation``: over the sorted list of all meshes, mesh ``i`` is a test mesh when
      ``i % 100 < 10`` (the CoMA code's rule).
    * ``extrapolation``: the meshes of expression ``fold`` are the test set (leave one expression out).
    * ``identity``: the meshes of subject ``fold`` are the test set (leave one subject out).

    Validation takes ``val_fraction`` of the training meshes at evenly spaced positions (deterministic).
    """
    n = len(dataset)
    index = np.arange(n)
    if protocol == "interpolation":
        is_test = index % 100 < 10
    elif protocol in ("extrapolation", "identity"):
        labels = _fold_labels(dataset, protocol)
        folds = sorted(set(labels))
        if fold is None:
            fold = folds[0]
        if fold not in folds:
            raise MorphableError(f"fold '{fold}' not in the dataset's {protocol} folds: {', '.join(folds)}")
        is_test = np.array([label == fold for label in labels])
    else:
        raise MorphableError(f"unknown protocol '{protocol}' (expected one of {', '.join(PROTOCOLS)})")
    train = index[~is_test]
    n_val = int(round(val_fraction * len(train))) if len(train) > 1 else 0
    val_pos = np.unique(np.linspace(0, len(train) - 1, n_val).round().astype(np.int64)) if n_val else np.array([], np.int64)
    is_val = np.zeros(len(train), dtype=bool)
    is_val[val_pos] = True
    return Split(protocol, fold, train[~is_val], train[is_val], index[is_test])


# --------------------------------------------------------------------------- normalisation


@dataclass
class Normaliser:
    """Per-vertex mean/std normalisation ``x_n = (x - mean) / std`` with statistics from train only.

    ``mean`` and ``std`` are ``(V, 3)``; std is floored at ``1e-2`` times its median, so a vertex that
    barely moves in the training set cannot blow up an unseen test mesh (a ``1e-6`` floor scaled a
    test input by 6.7e6 on a one-subject dataset).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train_vertices: np.ndarray) -> "Normaliser":
        x = np.asarray(train_vertices, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        floor = max(float(np.median(std)) * 1e-2, 1e-12)
        return cls(mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        return (vertices - self.mean) / self.std

    def invert(self, normalised: np.ndarray) -> np.ndarray:
        return normalised * self.std + self.mean
