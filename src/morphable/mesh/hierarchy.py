"""Mesh hierarchy for explicit mesh models: levels, down/up-sampling, spirals, Laplacians.

Level 0 is the template. Level ``l + 1`` keeps a subset of the vertices of level ``l`` at their
original positions (quadric-error edge collapses, see :mod:`morphable.mesh.qem`):

* ``down[l]`` ``D (V_{l+1}, V_l)``: 0/1 selection, ``x_{l+1} = D x_l`` for features ``x: (V_l, C)``.
* ``up[l]`` ``U (V_l, V_{l+1})``: barycentric weights of the nearest coarse surface point,
  ``x_l ~= U x_{l+1}``; ``U D`` is exact on kept vertices.
* ``laplacians[l]``: the Chebyshev-scaled normalised Laplacian ``L - I`` of level ``l``.
* ``spirals[l]``: spiral indices ``(V_l, L_l)`` (SpiralNet++ by default; Neural3DMM optional,
  padded with the dummy index ``V_l``), built by :func:`morphable.mesh.spiral.level_spirals`, the
  builder the spiral autoencoders use, so a saved hierarchy holds the spirals training uses.

A hierarchy is one ``.npz`` file (no pickle) and is cached on disk keyed by a hash of the
template arrays and the settings. Only numpy/scipy here; models turn the matrices into torch
buffers with :class:`morphable.explicit.layers.SparseMatrix`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from morphable.errors import MorphableError, input_error
from morphable.io import atomic_path
from morphable.io import cache_dir as morphable_cache_dir
from morphable.mesh.normals import vertex_normals
from morphable.mesh.qem import decimate, down_matrix, level_sizes, up_matrix
from morphable.mesh.spiral import level_spirals, spiral_settings
from morphable.mesh.topology import chebyshev_laplacian

FORMAT_VERSION = 2  # 2: spirals from level_spirals (the training builder), settings without reference vertices

__all__ = ["MeshHierarchy", "build_or_load_hierarchy", "hierarchy_cache_key"]


def check_template(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a template: ``(V, 3)`` finite vertices, ``(F, 3)`` faces in range, every vertex used.

    Returns float64 vertices and int64 faces; raises :class:`MorphableError` (without a file name;
    callers that read a file prefix it).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
        raise MorphableError(f"template vertices must have shape (V >= 3, 3), got {v.shape}")
    if not np.isfinite(v).all():
        raise MorphableError("template vertices contain NaN or infinite values")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or not np.issubdtype(f.dtype, np.integer):
        raise MorphableError(f"template faces must be a non-empty integer array (F, 3), got {f.shape} {f.dtype}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise MorphableError(f"template faces index vertices outside 0..{len(v) - 1}")
    if ((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])).any():
        raise MorphableError("template has faces with a repeated vertex")
    unused = np.setdiff1d(np.arange(len(v)), f.ravel())
    if len(unused):
        raise MorphableError(f"template has {len(unused)} vertices used by no face (first: {unused[0]})")
    return v, f


@dataclass
class MeshHierarchy:
    """A template and its coarser levels (all numpy/scipy).

    Attributes (``n = len(factors)`` transitions, ``n + 1`` levels):
        vertices: per level ``(V_l, 3)`` float64 (level ``l + 1`` is ``vertices[l][kept[l]]``).
        faces: per level ``(F_l, 3)`` int64.
        kept: per transition ``(V_{l+1},)`` int64, increasing indices into level ``l``.
        down: per transition CSR ``(V_{l+1}, V_l)`` 0/1 selection.
        up: per transition CSR ``(V_l, V_{l+1})`` barycentric (rows >= 0, summing to 1).
        laplacians: per level CSR ``(V_l, V_l)``, ``L - I`` (eigenvalues in ``[-1, 1]``).
        spirals: per level int64 ``(V_l, L_l)``.
        settings: the build settings (factors, spiral style, lengths, dilations, ...).
    """

    vertices: list[np.ndarray]
    faces: list[np.ndarray]
    kept: list[np.ndarray]
    down: list[sp.csr_matrix]
    up: list[sp.csr_matrix]
    laplacians: list[sp.csr_matrix]
    spirals: list[np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_levels(self) -> int:
        """Number of levels including the template."""
        return len(self.vertices)

    @property
    def sizes(self) -> list[int]:
        """Vertex count per level."""
        return [len(v) for v in self.vertices]

    @classmethod
    def build(cls, vertices: np.ndarray, faces: np.ndarray, factors: Sequence[int] = (4, 4, 4, 4),
              spiral_length: int | Sequence[int] = 9, spiral_dilation: int | Sequence[int] = 1,
              spiral_style: str = "spiralnet", spiral_hops: int | Sequence[int] = 1) -> "MeshHierarchy":
        """Build all levels from a template.

        Args:
            vertices: ``(V, 3)``; faces ``(F, 3)`` (consistently oriented; several components and
                open boundaries are fine).
            factors: reduction per transition, ``V_{l+1} = max(ceil(V_l / f), component minimum)``.
            spiral_style, spiral_length, spiral_dilation, spiral_hops: see
                :func:`morphable.mesh.spiral.spiral_settings` (``"spiralnet"``: fixed length;
                ``"neural3dmm"``: ``spiral_hops`` rings, length mean + 2 std, padded with the dummy
                index ``V_l``); one value or one per level.
        """
        v, f = check_template(vertices, faces)
        factors = [int(x) for x in factors]
        spirals_setup = spiral_settings(len(factors) + 1, spiral_style, spiral_length, spiral_dilation, spiral_hops)
        sizes = level_sizes(f, len(v), factors)
        verts, facs, kept, down, up = [v], [f], [], [], []
        normals = vertex_normals(v, f)
        for target in sizes[1:]:
            dec = decimate(verts[-1], facs[-1], target, normals=normals)
            normals = normals[dec.kept]
            kept.append(dec.kept)
            down.append(down_matrix(dec.kept, len(verts[-1])))
            up.append(up_matrix(verts[-1], facs[-1], dec.kept, dec.faces))
            verts.append(verts[-1][dec.kept])
            facs.append(dec.faces)
        laplacians = [chebyshev_laplacian(fl, len(vl)) for vl, fl in zip(verts, facs)]
        spirals = level_spirals(verts, facs, spirals_setup)
        settings = {"format_version": FORMAT_VERSION, "factors": factors, "sizes": sizes, **spirals_setup}
        return cls(verts, facs, kept, down, up, laplacians, spirals, settings)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` (atomically): arrays per level, CSR parts, settings as JSON text."""
        arrays: dict[str, np.ndarray] = {"settings": np.array(json.dumps(self.settings))}
        for level in range(self.n_levels):
            arrays[f"vertices_{level}"] = self.vertices[level]
            arrays[f"faces_{level}"] = self.faces[level]
            arrays[f"spirals_{level}"] = self.spirals[level]
            _put_csr(arrays, f"laplacian_{level}", self.laplacians[level])
        for level in range(self.n_levels - 1):
            arrays[f"kept_{level}"] = self.kept[level]
            _put_csr(arrays, f"down_{level}", self.down[level])
            _put_csr(arrays, f"up_{level}", self.up[level])
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MeshHierarchy":
        """Read a file written by :meth:`save`; a missing, broken or inconsistent file raises
        :class:`MorphableError` naming it."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                settings = json.loads(str(data["settings"]))
                if settings.get("format_version") != FORMAT_VERSION:
                    raise input_error(path, f"hierarchy format {settings.get('format_version')} is not "
                                            f"{FORMAT_VERSION}; rebuild it")
                n_levels = len(settings["sizes"])
                h = cls(
                    vertices=[data[f"vertices_{i}"] for i in range(n_levels)],
                    faces=[data[f"faces_{i}"] for i in range(n_levels)],
                    kept=[data[f"kept_{i}"] for i in range(n_levels - 1)],
                    down=[_get_csr(data, f"down_{i}") for i in range(n_levels - 1)],
                    up=[_get_csr(data, f"up_{i}") for i in range(n_levels - 1)],
                    laplacians=[_get_csr(data, f"laplacian_{i}") for i in range(n_levels)],
                    spirals=[data[f"spirals_{i}"] for i in range(n_levels)],
                    settings=settings,
                )
        except MorphableError:
            raise
        except FileNotFoundError:
            raise input_error(path, "file not found") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError) as exc:
            raise input_error(path, f"not a valid mesh hierarchy file ({type(exc).__name__}: {exc})") from None
        problem = h.consistency_problem()
        if problem:
            raise input_error(path, f"inconsistent mesh hierarchy: {problem}")
        return h

    def consistency_problem(self) -> str | None:
        """Shapes and index ranges of all parts; ``None`` when consistent, else the first problem."""
        sizes = self.settings.get("sizes")
        if sizes != self.sizes:
            return f"level sizes {self.sizes} differ from the recorded {sizes}"
        for level, (v, f, s, lap) in enumerate(zip(self.vertices, self.faces, self.spirals, self.laplacians)):
            n = len(v)
            if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
                return f"level {level}: vertices {v.shape} / faces {f.shape} are not (N, 3)"
            if len(f) and (f.min() < 0 or f.max() >= n):
                return f"level {level}: faces index outside 0..{n - 1}"
            if s.ndim != 2 or s.shape[0] != n or s.min() < 0 or s.max() > n:
                return f"level {level}: spirals {s.shape} do not index {n} vertices"
            if lap.shape != (n, n):
                return f"level {level}: Laplacian {lap.shape} is not ({n}, {n})"
        for level, (k, d, u) in enumerate(zip(self.kept, self.down, self.up)):
            n_fine, n_coarse = self.sizes[level], self.sizes[level + 1]
            if k.shape != (n_coarse,) or (n_coarse and (k.min() < 0 or k.max() >= n_fine)):
                return f"transition {level}: kept indices do not select {n_coarse} of {n_fine} vertices"
            if d.shape != (n_coarse, n_fine) or u.shape != (n_fine, n_coarse):
                return f"transition {level}: D {d.shape} / U {u.shape} do not match sizes {n_fine} -> {n_coarse}"
        return None

    def summary(self) -> str:
        """One line per level: vertices, faces, spiral width."""
        lines = [f"{'level':>5} {'vertices':>9} {'faces':>7} {'spiral':>6}"]
        for level in range(self.n_levels):
            width = self.spirals[level].shape[1]
            lines.append(f"{level:>5} {self.sizes[level]:>9} {len(self.faces[level]):>7} {width:>6}")
        return "\n".join(lines)


def _put_csr(arrays: dict[str, np.ndarray], name: str, m: sp.spmatrix) -> None:
    m = sp.csr_matrix(m)
    arrays[f"{name}_data"] = m.data
    arrays[f"{name}_indices"] = m.indices.astype(np.int64)
    arrays[f"{name}_indptr"] = m.indptr.astype(np.int64)
    arrays[f"{name}_shape"] = np.asarray(m.shape, dtype=np.int64)


def _get_csr(data: Any, name: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in data[f"{name}_shape"])
    return sp.csr_matrix((data[f"{name}_data"], data[f"{name}_indices"], data[f"{name}_indptr"]), shape=shape)


def hierarchy_cache_key(vertices: np.ndarray, faces: np.ndarray, settings: dict[str, Any]) -> str:
    """SHA-256 (hex, first 24 characters) of the template arrays (float64 / int64) and the settings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    h.update(json.dumps({"format_version": FORMAT_VERSION, **settings}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def build_or_load_hierarchy(vertices: np.ndarray, faces: np.ndarray, factors: Sequence[int] = (4, 4, 4, 4),
                            spiral_length: int | Sequence[int] = 9, spiral_dilation: int | Sequence[int] = 1,
                            spiral_style: str = "spiralnet", spiral_hops: int | Sequence[int] = 1,
                            cache_dir: str | os.PathLike | None = None) -> MeshHierarchy:
    """:meth:`MeshHierarchy.build`, cached as ``<cache_dir>/<hash>.npz`` (default
    ``morphable.io.cache_dir("hierarchies")``).

    The key hashes the template arrays and every setting, so a changed template or setting
    builds anew. A broken cache file is rebuilt; a read-only cache location only costs speed.
    """
    settings = {"factors": [int(x) for x in factors],
                **spiral_settings(len(factors) + 1, spiral_style, spiral_length, spiral_dilation, spiral_hops)}
    path = Path(cache_dir) if cache_dir is not None else morphable_cache_dir("hierarchies")
    path = path / f"{hierarchy_cache_key(vertices, faces, settings)}.npz"
    if path.exists():
        try:
            return MeshHierarchy.load(path)
        except MorphableError:
            path.unlink(missing_ok=True)
    h = MeshHierarchy.build(vertices, faces, factors, spiral_length, spiral_dilation, spiral_style, spiral_hops)
    try:
        h.save(path)
    except OSError:
        pass  # a read-only cache location only costs speed
    return h
