"""Linear 3D morphable models (3DMMs): one :class:`LinearFaceModel` and its readers.

A linear model with ``V`` vertices is

    x(a, b) = mean + sum_k a_k sigma_k S_k + sum_j b_j tau_j E_j          x, mean, S_k, E_j: (V, 3)

with a shape (identity) basis ``S (K_s, V, 3)`` and its standard deviations ``sigma (K_s,)``, and an
optional expression basis ``E (K_e, V, 3)`` with ``tau (K_e,)``. Coefficients are in standard-deviation
units, so the model's prior is ``a ~ N(0, I)`` (and ``b ~ N(0, I)`` for a PCA expression model). Bases are
stored mode-first, ``(K, V, 3)``, like a batch of meshes; PCA layouts ``(3V, K)`` (columns
``x1 y1 z1 x2 ...``, as BFM stores them) and ``(V, 3, K)`` are accepted and converted.

Readers (:func:`load_linear_model` picks one by suffix and contents; nothing is ever unpickled):

* ICT-FaceKit (:func:`load_ict`): its single-file ``.npz`` conversion (``neutral``, ``identity_modes``,
  ``expression_modes``, ``expression_names``, ``triangles``) or the upstream ``FaceXModel`` folder
  (``generic_neutral_mesh.obj``, ``identityNNN.obj``, one OBJ per blendshape named in
  ``vertex_indices.json``; UVs from the neutral OBJ, the 68 iBUG landmarks from
  ``idx_to_landmark_verts``). Identity modes are ``identityNNN - neutral`` (already one standard
  deviation: ``sigma = 1``); expression modes are blendshape offsets whose weights ``b`` lie in [0, 1]
  (``tau = 1``).
* The generic ``.npz`` (:meth:`LinearFaceModel.from_npz`, written by :meth:`LinearFaceModel.save_npz`):

  ==================== ============================== =========================================
  key                  shape                          meaning
  ==================== ============================== =========================================
  ``mean``             (V, 3)                         mean shape (required)
  ``shape_basis``      (K_s, V, 3), (3V, K_s),        shape modes (required; K_s may be 0)
                       or (V, 3, K_s)
  ``shape_std``        (K_s,)                         their standard deviations (default 1)
  ``faces``            (F, 3) int                     triangles (required)
  ``unit``             () str                         ``m``, ``cm`` or ``mm`` (required)
  ``expression_basis`` (K_e, V, 3) or as shape_basis  expression modes (optional)
  ``expression_std``   (K_e,)                         their standard deviations (default 1)
  ``expression_names`` (K_e,) str                     blendshape names (optional)
  ``uvs``              (T, 2)                         texture coordinates (optional, with face_uvs)
  ``face_uvs``         (F, 3) int                     per-triangle indices into ``uvs``
  ``landmarks``        (68,) int                      vertex of each iBUG-68 landmark (optional)
  ``name``             () str                         a label (optional)
  ==================== ============================== =========================================

  Any other key is refused (a misspelt optional key would otherwise be dropped silently).
* Basel Face Model ``.h5`` (:func:`read_bfm_h5`, needs the optional ``h5py``): the BFM 2009 (``.h5``
  edition) and 2017 layouts, ``shape/model/{mean, pcaBasis, pcaVariance}`` with ``pcaBasis (3V, K)``
  orthonormal and ``sigma = sqrt(pcaVariance)``, triangles ``shape/representer/cells`` (or
  ``representer/cells``) stored ``(3, F)``, and ``expression/model/...`` likewise; the expression mean
  (a mean displacement) is added to the shape mean. Read as millimetres.
* Surrey Face Model (eos cereal ``.bin``) and FLAME (a pickle) are converted to the generic ``.npz`` by
  the user in their own environment: recipes in ``docs/linear-models.md``.

Expression sequences (:func:`sample_sequences`) imitate COMA's recordings: each of twelve COMA-named
expressions is a fixed combination of ICT blendshapes whose intensity ramps 0 -> peak -> 0 over the
frames (``sin^2`` ramp); each subject gets its own peak intensity and a slight left/right asymmetry.
A model without ICT blendshape names gets fixed expression coefficient vectors ``b ~ N(0, I)`` instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from morphable.errors import MorphableError, input_error
from morphable.io import UNIT_TO_MM, atomic_path, read_npz, read_obj

if TYPE_CHECKING:
    import torch

ICT_UNIT = "cm"
ICT_SKIN_VERTICES = 11248  # face 0..9408 and head/neck 9409..11247: the outer skin surface
ICT_FACE_VERTICES = 9409
N_LANDMARKS = 68
GENERIC_KEYS = ("mean", "shape_basis", "shape_std", "faces", "unit", "expression_basis", "expression_std",
                "expression_names", "uvs", "face_uvs", "landmarks", "name")
REQUIRED_KEYS = ("mean", "shape_basis", "faces", "unit")
ICT_KEYS = ("neutral", "identity_modes", "expression_modes", "expression_names", "triangles")
DOCS = "docs/linear-models.md"

# COMA expression names -> ICT (ARKit-style) blendshape weights at the peak of the sequence.
ICT_EXPRESSIONS: dict[str, dict[str, float]] = {
    "bareteeth": {"mouthUpperUp_L": 0.9, "mouthUpperUp_R": 0.9, "mouthLowerDown_L": 0.8, "mouthLowerDown_R": 0.8,
                  "mouthStretch_L": 0.5, "mouthStretch_R": 0.5},
    "cheeks_in": {"mouthPucker": 0.7, "mouthFunnel": 0.4, "jawOpen": 0.1},
    "eyebrow": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 0.9, "browOuterUp_R": 0.9,
                "eyeWide_L": 0.5, "eyeWide_R": 0.5},
    "high_smile": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "cheekSquint_L": 0.6, "cheekSquint_R": 0.6,
                   "eyeSquint_L": 0.3, "eyeSquint_R": 0.3},
    "lips_back": {"mouthStretch_L": 1.0, "mouthStretch_R": 1.0, "mouthPress_L": 0.5, "mouthPress_R": 0.5},
    "lips_up": {"mouthUpperUp_L": 1.0, "mouthUpperUp_R": 1.0, "mouthShrugUpper": 0.7, "noseSneer_L": 0.4,
                "noseSneer_R": 0.4},
    "mouth_down": {"mouthFrown_L": 1.0, "mouthFrown_R": 1.0, "mouthLowerDown_L": 0.5, "mouthLowerDown_R": 0.5},
    "mouth_extreme": {"jawOpen": 1.0, "mouthStretch_L": 0.8, "mouthStretch_R": 0.8, "browInnerUp_L": 0.6,
                      "browInnerUp_R": 0.6},
    "mouth_middle": {"mouthPucker": 1.0, "mouthClose": 0.3},
    "mouth_open": {"jawOpen": 0.9},
    "mouth_side": {"mouthLeft": 1.0, "jawLeft": 0.5},
    "mouth_up": {"mouthShrugLower": 1.0, "mouthRollLower": 0.4, "mouthPress_L": 0.3, "mouthPress_R": 0.3},
}


@dataclass
class LinearBasis:
    """The torch form of a :class:`LinearFaceModel` for fitting: ``x(c) = mean + sum_k c_k B_k``.

    ``mean (V, 3)``; ``basis (K, V, 3)`` holds the shape modes then the expression modes, each already
    multiplied by its standard deviation, so ``c = [a; b] (K,)`` is in standard-deviation units
    (``K = n_shape + n_expr``).
    """

    mean: torch.Tensor
    basis: torch.Tensor
    n_shape: int

    def __call__(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``coefficients (..., K)`` -> vertices ``(..., V, 3)``, differentiable in the coefficients."""
        import torch

        return self.mean + torch.einsum("...k,kvc->...vc", coefficients, self.basis)


@dataclass
class LinearFaceModel:
    """A linear 3DMM (see the module docstring for the formula and the coefficient units).

    Attributes:
        mean: ``(V, 3)`` float64.
        shape_basis: ``(K_s, V, 3)`` (``(3V, K_s)`` and ``(V, 3, K_s)`` are converted).
        faces: ``(F, 3)`` int64 triangles.
        unit: ``m``, ``cm`` or ``mm``.
        shape_std: ``(K_s,)`` standard deviation of each shape mode (None: ones).
        expression_basis: ``(K_e, V, 3)`` (None: no expression modes, ``K_e = 0``).
        expression_std: ``(K_e,)`` (None: ones).
        expression_names: ``K_e`` blendshape names, or empty.
        uvs: ``(T, 2)`` texture coordinates and face_uvs ``(F, 3)`` their indices per triangle (both or neither).
        landmarks: ``(68,)`` vertex indices of the iBUG-68 landmarks, in iBUG order.
        name: a label.

    Raises:
        MorphableError: on any inconsistent shape, non-finite value, negative deviation or index out of range.
    """

    mean: np.ndarray
    shape_basis: np.ndarray
    faces: np.ndarray
    unit: str
    shape_std: np.ndarray | None = None
    expression_basis: np.ndarray | None = None
    expression_std: np.ndarray | None = None
    expression_names: list[str] = field(default_factory=list)
    uvs: np.ndarray | None = None
    face_uvs: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        if self.mean.ndim != 2 or self.mean.shape[1] != 3 or len(self.mean) == 0:
            raise MorphableError(f"mean must have shape (V, 3) with V > 0, got {self.mean.shape}")
        _check_finite(self.mean, "mean")
        n = len(self.mean)
        self.shape_basis = _modes(self.shape_basis, n, "shape_basis")
        self.shape_std = _deviations(self.shape_std, len(self.shape_basis), "shape_std")
        if self.expression_basis is None:
            self.expression_basis = np.zeros((0, n, 3))
        self.expression_basis = _modes(self.expression_basis, n, "expression_basis")
        self.expression_std = _deviations(self.expression_std, len(self.expression_basis), "expression_std")
        self.expression_names = [str(name) for name in self.expression_names]
        if self.expression_names and len(self.expression_names) != len(self.expression_basis):
            raise MorphableError(f"{len(self.expression_names)} expression names for "
                                 f"{len(self.expression_basis)} expression modes")
        self.faces = _indices(self.faces, (None, 3), n, "faces")
        if len(self.faces) == 0:
            raise MorphableError("faces is empty: the model needs triangles")
        if (self.uvs is None) != (self.face_uvs is None):
            raise MorphableError("uvs and face_uvs come together: give both or neither")
        if self.uvs is not None:
            self.uvs = np.asarray(self.uvs, dtype=np.float64)
            if self.uvs.ndim != 2 or self.uvs.shape[1] != 2:
                raise MorphableError(f"uvs must have shape (T, 2), got {self.uvs.shape}")
            _check_finite(self.uvs, "uvs")
            self.face_uvs = _indices(self.face_uvs, (len(self.faces), 3), len(self.uvs), "face_uvs")
        if self.landmarks is not None:
            self.landmarks = _indices(self.landmarks, (N_LANDMARKS,), n, "landmarks")
        if self.unit not in UNIT_TO_MM:
            raise MorphableError(f"unknown unit {self.unit!r} (expected one of m, cm, mm)")

    @property
    def n_vertices(self) -> int:
        return len(self.mean)

    @property
    def n_shape(self) -> int:
        return len(self.shape_basis)

    @property
    def n_expr(self) -> int:
        return len(self.expression_basis)

    def shape_offset(self, shape_coeffs: np.ndarray) -> np.ndarray:
        """``sum_k a_k sigma_k S_k``: ``(..., k)`` with ``k <= K_s`` (the first ``k`` modes) -> ``(..., V, 3)``."""
        return _offset(self.shape_basis, self.shape_std, shape_coeffs, "shape")

    def expression_offset(self, expr_coeffs: np.ndarray) -> np.ndarray:
        """``sum_j b_j tau_j E_j``: ``(..., k)`` with ``k <= K_e`` -> ``(..., V, 3)``."""
        return _offset(self.expression_basis, self.expression_std, expr_coeffs, "expression")

    def vertices(self, shape_coeffs: np.ndarray | None = None, expr_coeffs: np.ndarray | None = None) -> np.ndarray:
        """``x(a, b)`` float64: coefficients ``(..., k)`` (batched; fewer than all modes means the first ``k``,
        the rest zero; None: zero) -> vertices ``(..., V, 3)``."""
        x = self.mean.copy()
        if shape_coeffs is not None:
            x = x + self.shape_offset(shape_coeffs)
        if expr_coeffs is not None:
            x = x + self.expression_offset(expr_coeffs)
        return x

    def torch_model(self, n_shape: int | None = None, n_expr: int | None = None, device: Any = None,
                    dtype: torch.dtype | None = None) -> LinearBasis:
        """:class:`LinearBasis` of the first ``n_shape`` shape and ``n_expr`` expression modes (None: all),
        float64 unless ``dtype``, on ``device``."""
        import torch

        model = self.truncate(n_shape, n_expr)
        basis = np.concatenate([model.shape_basis * model.shape_std[:, None, None],
                                model.expression_basis * model.expression_std[:, None, None]])
        dtype = dtype or torch.float64
        return LinearBasis(torch.as_tensor(model.mean, dtype=dtype, device=device),
                           torch.as_tensor(basis, dtype=dtype, device=device), model.n_shape)

    def sample(self, n: int, rng: np.random.Generator, expressions: bool = False) -> np.ndarray:
        """``n`` random faces ``(n, V, 3)``: shape coefficients ``a ~ N(0, I)``; with ``expressions`` also
        ``b ~ N(0, I)`` (meaningful for a PCA expression model such as BFM 2017's, not for blendshapes)."""
        shape = rng.standard_normal((n, self.n_shape))
        return self.vertices(shape, rng.standard_normal((n, self.n_expr)) if expressions else None)

    def truncate(self, n_shape: int | None = None, n_expr: int | None = None) -> LinearFaceModel:
        """The model with only its first ``n_shape`` shape and ``n_expr`` expression modes (None: all)."""
        n_shape = self.n_shape if n_shape is None else n_shape
        n_expr = self.n_expr if n_expr is None else n_expr
        if not (0 <= n_shape <= self.n_shape and 0 <= n_expr <= self.n_expr):
            raise MorphableError(f"cannot keep {n_shape} shape and {n_expr} expression modes of a model with "
                                 f"{self.n_shape} and {self.n_expr}")
        return replace(self, shape_basis=self.shape_basis[:n_shape], shape_std=self.shape_std[:n_shape],
                       expression_basis=self.expression_basis[:n_expr], expression_std=self.expression_std[:n_expr],
                       expression_names=self.expression_names[:n_expr])

    def subset_vertices(self, n: int) -> LinearFaceModel:
        """The model restricted to its first ``n`` vertices (ICT-FaceKit: 11248, the outer skin surface).

        Triangles with a corner ``>= n`` are dropped (with their ``face_uvs``); the landmarks are kept only
        if all of them are among the first ``n`` vertices.
        """
        if not 0 < n <= self.n_vertices:
            raise MorphableError(f"vertex count {n} is not in 1..{self.n_vertices}")
        keep = np.all(self.faces < n, axis=1)
        landmarks = self.landmarks if self.landmarks is not None and np.all(self.landmarks < n) else None
        return replace(self, mean=self.mean[:n], shape_basis=self.shape_basis[:, :n],
                       expression_basis=self.expression_basis[:, :n], faces=self.faces[keep],
                       face_uvs=None if self.face_uvs is None else self.face_uvs[keep], landmarks=landmarks,
                       expression_names=list(self.expression_names))

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write the generic ``.npz`` (keys in the module docstring), atomically."""
        arrays: dict[str, np.ndarray] = {
            "mean": self.mean, "shape_basis": self.shape_basis, "shape_std": self.shape_std, "faces": self.faces,
            "unit": np.array(self.unit), "name": np.array(self.name),
            "expression_basis": self.expression_basis, "expression_std": self.expression_std}
        if self.expression_names:
            arrays["expression_names"] = np.array(self.expression_names)
        if self.uvs is not None:
            arrays.update(uvs=self.uvs, face_uvs=self.face_uvs)
        if self.landmarks is not None:
            arrays["landmarks"] = self.landmarks
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> LinearFaceModel:
        """Read the generic ``.npz``; every problem is one :class:`MorphableError` naming the file."""
        return _generic_from_arrays(Path(path), read_npz(Path(path)))


def load_linear_model(path: str | os.PathLike, unit: str | None = None) -> LinearFaceModel:
    """Read any supported linear model (see the module docstring), chosen by suffix and contents.

    ``unit`` overrides the unit the file declares (BFM ``.h5`` files are read as mm).
    """
    path = Path(path)
    if not path.exists():
        raise input_error(path, "linear model not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        model = _load_ict_folder(path)
    elif suffix == ".npz":
        arrays = read_npz(path)
        model = _ict_from_arrays(path, arrays) if "identity_modes" in arrays else _generic_from_arrays(path, arrays)
    elif suffix in (".h5", ".hdf5"):
        model = read_bfm_h5(path)
    elif suffix in (".pkl", ".pickle"):
        raise input_error(path, f"pickled models (such as FLAME) are never loaded: convert it to the generic .npz "
                                f"in your own environment ({DOCS})")
    elif suffix == ".bin":
        raise input_error(path, f"eos / Surrey Face Model .bin (cereal) files are not read: convert it to the "
                                f"generic .npz with the eos Python package ({DOCS})")
    else:
        raise input_error(path, "unknown linear-model format (expected .npz, .h5 or an ICT-FaceKit FaceXModel folder)")
    if unit is not None:
        model = _build(path, replace, model, unit=unit)
    return model


def load_ict(path: str | os.PathLike) -> LinearFaceModel:
    """Read ICT-FaceKit from the ``.npz`` conversion or the upstream ``FaceXModel`` folder."""
    path = Path(path)
    if not path.exists():
        raise input_error(path, "ICT-FaceKit model not found")
    if path.is_dir():
        return _load_ict_folder(path)
    return _ict_from_arrays(path, read_npz(path))


def read_bfm_h5(path: str | os.PathLike) -> LinearFaceModel:
    """Read a Basel Face Model ``.h5`` (BFM 2009 ``.h5`` edition / BFM 2017 layout), in mm; needs h5py."""
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise input_error(path, "reading Basel Face Model .h5 files needs h5py (pip install h5py)") from None
    try:
        with h5py.File(path, "r") as f:
            mean, basis, std = _h5_pca(path, f, "shape")
            cells_key = next((k for k in ("shape/representer/cells", "representer/cells") if k in f), None)
            if cells_key is None:
                raise input_error(path, "no shape/representer/cells (the triangles): not a Basel Face Model .h5")
            cells = np.asarray(f[cells_key][()])
            expression = _h5_pca(path, f, "expression") if "expression/model" in f else None
    except OSError as exc:
        raise input_error(path, f"not a readable HDF5 file ({_one_line(exc)})") from None
    faces = cells.T if cells.ndim == 2 and cells.shape[0] == 3 else cells
    if expression is None:
        return _build(path, LinearFaceModel, mean, basis, faces, "mm", std, name=f"BFM {path.stem}")
    expr_mean, expr_basis, expr_std = expression
    if expr_mean.shape != mean.shape:
        raise input_error(path, f"expression mean {expr_mean.shape} does not match the shape mean {mean.shape}")
    return _build(path, LinearFaceModel, mean + expr_mean, basis, faces, "mm", std, expr_basis, expr_std,
                  name=f"BFM {path.stem}")


def _h5_pca(path: Path, f: Any, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mean (V, 3)``, ``pcaBasis (3V, K)`` and ``sqrt(pcaVariance) (K,)`` of ``group/model``."""
    arrays = []
    for key in ("mean", "pcaBasis", "pcaVariance"):
        name = f"{group}/model/{key}"
        if name not in f:
            raise input_error(path, f"no {name}: not a Basel Face Model .h5 (BFM 2009/2017 layout)")
        arrays.append(np.asarray(f[name][()]))
    mean, basis, variance = arrays
    if mean.ndim != 1 or mean.size % 3:
        raise input_error(path, f"{group}/model/mean must be a flat (3V,) vector, got {mean.shape}")
    if variance.ndim != 1 or not np.all(variance >= 0):
        raise input_error(path, f"{group}/model/pcaVariance must be a (K,) vector of non-negative variances")
    return mean.astype(np.float64).reshape(-1, 3), basis, np.sqrt(variance.astype(np.float64))


# --------------------------------------------------------------------------- npz and ICT-FaceKit


def _generic_from_arrays(path: Path, arrays: dict[str, np.ndarray]) -> LinearFaceModel:
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise input_error(path, f"not a linear-model .npz: missing {', '.join(missing)} (required: "
                                f"{', '.join(REQUIRED_KEYS)}; see {DOCS})")
    unknown = sorted(set(arrays) - set(GENERIC_KEYS))
    if unknown:
        raise input_error(path, f"unknown keys {', '.join(unknown)} (known: {', '.join(GENERIC_KEYS)})")
    kwargs: dict[str, Any] = {key: arrays[key] for key in arrays if key not in ("unit", "name", "expression_names")}
    return _build(path, LinearFaceModel, unit=str(arrays["unit"]), name=str(arrays.get("name", path.stem)),
                  expression_names=[str(n) for n in arrays.get("expression_names", [])], **kwargs)


def _ict_from_arrays(path: Path, arrays: dict[str, np.ndarray]) -> LinearFaceModel:
    missing = [key for key in ICT_KEYS if key not in arrays]
    if missing:
        raise input_error(path, f"not an ICT-FaceKit npz (missing {', '.join(missing)})")
    return _build(path, LinearFaceModel, arrays["neutral"], arrays["identity_modes"], arrays["triangles"], ICT_UNIT,
                  expression_basis=arrays["expression_modes"],
                  expression_names=[str(n) for n in arrays["expression_names"]], name="ICT-FaceKit")


def _load_ict_folder(folder: Path) -> LinearFaceModel:
    neutral_file = folder / "generic_neutral_mesh.obj"
    if not neutral_file.exists():
        raise input_error(folder, "no generic_neutral_mesh.obj: not an ICT-FaceKit FaceXModel folder")
    neutral = read_obj(neutral_file)
    identity_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    names: list[str] = []
    landmarks = None
    index_file = folder / "vertex_indices.json"
    if index_file.exists():
        try:
            index = json.loads(index_file.read_text())
        except json.JSONDecodeError as exc:
            raise input_error(index_file, f"not valid JSON ({exc})") from None
        names = [n for n in index.get("expressions", []) if (folder / f"{n}.obj").exists()]
        landmarks = index.get("idx_to_landmark_verts")

    def offsets(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), *neutral.vertices.shape), dtype=np.float32)
        for i, f in enumerate(files):
            mesh = read_obj(f)
            if mesh.vertices.shape != neutral.vertices.shape:
                raise input_error(f, f"has {len(mesh.vertices)} vertices, expected {len(neutral.vertices)}")
            out[i] = mesh.vertices - neutral.vertices
        return out

    return _build(folder, LinearFaceModel, neutral.vertices, offsets(identity_files), neutral.faces, ICT_UNIT,
                  expression_basis=offsets([folder / f"{n}.obj" for n in names]), expression_names=names,
                  uvs=neutral.uvs, face_uvs=neutral.face_uvs, landmarks=landmarks, name="ICT-FaceKit")


# --------------------------------------------------------------------------- validation helpers


def _build(path: Path, factory: Any, *args: Any, **kwargs: Any) -> LinearFaceModel:
    """``factory(*args, **kwargs)`` with a validation error turned into one line naming ``path``."""
    try:
        return factory(*args, **kwargs)
    except MorphableError as exc:
        raise input_error(path, str(exc)) from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        raise MorphableError(f"{what} contains NaN or infinite values")


def _modes(basis: Any, n_vertices: int, what: str) -> np.ndarray:
    """``basis`` as ``(K, V, 3)``: from ``(K, V, 3)``, ``(3V, K)`` (rows ``x1 y1 z1 x2 ...``) or ``(V, 3, K)``.
    Floating dtypes are kept (float32 bases stay float32)."""
    b = np.asarray(basis)
    if not np.issubdtype(b.dtype, np.floating):
        if not np.issubdtype(b.dtype, np.number):
            raise MorphableError(f"{what} must be numeric, got dtype {b.dtype}")
        b = b.astype(np.float64)
    if b.ndim == 3 and b.shape[1:] == (n_vertices, 3):
        out = b
    elif b.ndim == 3 and b.shape[:2] == (n_vertices, 3):
        out = np.ascontiguousarray(b.transpose(2, 0, 1))
    elif b.ndim == 2 and b.shape[0] == 3 * n_vertices:
        out = np.ascontiguousarray(b.T).reshape(b.shape[1], n_vertices, 3)
    else:
        raise MorphableError(f"{what} has shape {b.shape}: expected (K, {n_vertices}, 3), ({3 * n_vertices}, K) "
                             f"or ({n_vertices}, 3, K) for {n_vertices} vertices")
    _check_finite(out, what)
    return out


def _deviations(std: Any, k: int, what: str) -> np.ndarray:
    """``(k,)`` float64 non-negative standard deviations (None: ones)."""
    s = np.ones(k) if std is None else np.asarray(std, dtype=np.float64)
    if s.shape != (k,):
        raise MorphableError(f"{what} has shape {s.shape}, expected ({k},)")
    if not (np.isfinite(s).all() and np.all(s >= 0)):
        raise MorphableError(f"{what} must be finite and non-negative")
    return s


def _indices(values: Any, shape: tuple[int | None, ...], bound: int, what: str) -> np.ndarray:
    """Integer array of ``shape`` (None: any length) with entries in ``0..bound-1``, as int64."""
    a = np.asarray(values)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise MorphableError(f"{what} must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64).reshape(a.shape if a.size else (0, *shape[1:]))
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        expected = ", ".join("N" if s is None else str(s) for s in shape)
        raise MorphableError(f"{what} has shape {a.shape}, expected ({expected})")
    if a.size and (a.min() < 0 or a.max() >= bound):
        raise MorphableError(f"{what} indices must be in 0..{bound - 1}, found {a.min()}..{a.max()}")
    return a


def _offset(basis: np.ndarray, std: np.ndarray, coefficients: np.ndarray, what: str) -> np.ndarray:
    """``sum_k c_k std_k basis_k`` over the first ``k`` modes: ``(..., k)`` -> ``(..., V, 3)``."""
    c = np.asarray(coefficients, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] > len(basis):
        raise MorphableError(f"{what} coefficients of shape {c.shape} for a model with {len(basis)} {what} modes")
    k = c.shape[-1]
    return np.tensordot(c * std[:k], basis[:k], axes=([-1], [0]))


# --------------------------------------------------------------------------- expression sequences


def expression_ramp(frames: int) -> np.ndarray:
    """Intensity over a sequence: ``sin^2(pi t)`` for ``t`` in [0, 1], so 0 -> 1 -> 0 (``(frames,)``)."""
    if frames == 1:
        return np.ones(1)
    return np.sin(np.linspace(0.0, np.pi, frames)) ** 2


@dataclass
class SampledSequences:
    vertices: np.ndarray  # (N, V, 3) float32
    subjects: list[str]
    expressions: list[str]
    frames: list[int]
    shape_coefficients: np.ndarray  # (subjects, K_s)


def uses_ict_blendshapes(model: LinearFaceModel) -> bool:
    """Whether the model names any blendshape of :data:`ICT_EXPRESSIONS` (then sequences use those combinations)."""
    names = set(model.expression_names)
    return any(name in names for combination in ICT_EXPRESSIONS.values() for name in combination)


def sample_sequences(model: LinearFaceModel, subjects: int, expressions: int, frames: int,
                     seed: int) -> SampledSequences:
    """Sample a COMA-like dataset: ``subjects`` identities ``a ~ N(0, I)`` x ``expressions`` expressions x
    ``frames`` frames ramping in and out. Deterministic for ``seed``.

    Expressions: the first ``expressions`` of :data:`ICT_EXPRESSIONS` for a model with ICT blendshape names;
    otherwise ``expression_00, ...``, each a fixed coefficient vector ``b ~ N(0, I)``; a model without
    expression modes gives one ``neutral`` frame per subject (``expressions`` and ``frames`` must be 1).
    """
    if model.n_shape == 0:
        raise MorphableError("the linear model has no shape (identity) modes")
    if model.n_expr == 0 and (expressions, frames) != (1, 1):
        raise MorphableError("the linear model has no expression modes: use 1 expression and 1 frame")
    rng = np.random.default_rng(seed)
    ramp = expression_ramp(frames)
    identity = rng.standard_normal((subjects, model.n_shape))
    if model.n_expr == 0:
        names, weights = ["neutral"], np.zeros((1, 0))
    elif uses_ict_blendshapes(model):
        names = sorted(ICT_EXPRESSIONS)[:expressions]
        weights = np.stack([_blendshape_weights(model.expression_names, ICT_EXPRESSIONS[n]) for n in names])
    else:
        names = [f"expression_{e:02d}" for e in range(expressions)]
        weights = rng.standard_normal((expressions, model.n_expr))
    sign = _left_right_sign(model.expression_names) if model.expression_names else np.zeros(model.n_expr)
    out = np.empty((subjects * len(names) * frames, *model.mean.shape), dtype=np.float32)
    labels_s, labels_e, labels_f = [], [], []
    i = 0
    for s in range(subjects):
        base = model.vertices(identity[s])
        for name, w in zip(names, weights):
            peak = rng.uniform(0.7, 1.0)
            asym = 1.0 + 0.15 * rng.uniform(-1, 1) * sign
            offset = model.expression_offset(w * asym)
            for f in range(frames):
                out[i] = base + peak * ramp[f] * offset
                labels_s.append(f"subject_{s:02d}")
                labels_e.append(name)
                labels_f.append(f)
                i += 1
    return SampledSequences(out, labels_s, labels_e, labels_f, identity)


def _blendshape_weights(names: list[str], combination: dict[str, float]) -> np.ndarray:
    """Blendshape weight vector ``(len(names),)`` from a ``{name: weight}`` combination."""
    w = np.zeros(len(names))
    for name, value in combination.items():
        if name in names:
            w[names.index(name)] = value
    return w


def _left_right_sign(names: list[str]) -> np.ndarray:
    """+1 for ``*_L`` blendshapes, -1 for ``*_R``, 0 otherwise."""
    return np.array([1.0 if n.endswith("_L") else -1.0 if n.endswith("_R") else 0.0 for n in names])
