"""Linear face models (ICT-FaceKit) as a source of registered datasets.

A linear model is ``x(w_id, w_exp) = neutral + sum_i w_id[i] I_i + sum_j w_exp[j] E_j`` with identity
modes ``I (n_id, V, 3)`` (one unit = one standard deviation, so ``w_id ~ N(0, 1)``) and expression
blendshape offsets ``E (n_exp, V, 3)`` (weights in [0, 1]).

ICT-FaceKit is read from either its upstream folder (``generic_neutral_mesh.obj``, ``identityNNN.obj``,
one OBJ per blendshape named in ``vertex_indices.json``) or the single-file ``.npz`` conversion
(keys ``neutral``, ``identity_modes``, ``expression_modes``, ``expression_names``, ``triangles``).

Expression sequences imitate COMA's recordings: each of twelve COMA-named expressions is a fixed
combination of ICT blendshapes whose intensity ramps 0 -> peak -> 0 over the frames
(``sin^2`` ramp); each subject gets its own peak intensity and a slight left/right asymmetry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphable.errors import input_error
from morphable.io import read_obj

ICT_UNIT = "cm"
ICT_SKIN_VERTICES = 11248  # face 0..9408 and head/neck 9409..11247: the outer skin surface
ICT_FACE_VERTICES = 9409

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
class LinearFaceModel:
    """``neutral (V, 3)``, ``identity_modes (n_id, V, 3)``, ``expression_modes (n_exp, V, 3)``,
    ``expression_names`` (n_exp), ``faces (F, 3)``, in ``unit``."""

    neutral: np.ndarray
    identity_modes: np.ndarray
    expression_modes: np.ndarray
    expression_names: list[str]
    faces: np.ndarray
    unit: str = ICT_UNIT

    def shape(self, identity: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """Vertices ``(V, 3)`` for identity weights ``(n_id,)`` and blendshape weights ``(n_exp,)``."""
        x = self.neutral + np.tensordot(identity, self.identity_modes[: len(identity)], axes=1)
        if expression is not None:
            x = x + np.tensordot(expression, self.expression_modes, axes=1)
        return x

    def expression_weights(self, combination: dict[str, float]) -> np.ndarray:
        """Blendshape weight vector ``(n_exp,)`` from a ``{name: weight}`` combination."""
        w = np.zeros(len(self.expression_names))
        for name, value in combination.items():
            if name in self.expression_names:
                w[self.expression_names.index(name)] = value
        return w

    def skin_only(self, n_vertices: int = ICT_SKIN_VERTICES) -> "LinearFaceModel":
        """The model restricted to the first ``n_vertices`` (the outer skin surface for ICT)."""
        keep = np.all(self.faces < n_vertices, axis=1)
        return LinearFaceModel(self.neutral[:n_vertices], self.identity_modes[:, :n_vertices],
                               self.expression_modes[:, :n_vertices], list(self.expression_names),
                               self.faces[keep], self.unit)


def load_ict(path: str | os.PathLike) -> LinearFaceModel:
    """Read ICT-FaceKit from the ``.npz`` conversion or the upstream ``FaceXModel`` folder."""
    path = Path(path)
    if not path.exists():
        raise input_error(path, "ICT-FaceKit model not found")
    if path.is_dir():
        return _load_ict_folder(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            return LinearFaceModel(d["neutral"].astype(np.float64), d["identity_modes"], d["expression_modes"],
                                   [str(n) for n in d["expression_names"]], d["triangles"].astype(np.int64))
    except KeyError as exc:
        raise input_error(path, f"not an ICT-FaceKit npz (missing {exc})") from None
    except (OSError, ValueError) as exc:
        raise input_error(path, f"not a readable npz ({exc})") from None


def _load_ict_folder(folder: Path) -> LinearFaceModel:
    neutral_file = folder / "generic_neutral_mesh.obj"
    if not neutral_file.exists():
        raise input_error(folder, "no generic_neutral_mesh.obj: not an ICT-FaceKit FaceXModel folder")
    neutral = read_obj(neutral_file)
    identity_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    names = []
    index_file = folder / "vertex_indices.json"
    if index_file.exists():
        names = [n for n in json.loads(index_file.read_text()).get("expressions", []) if (folder / f"{n}.obj").exists()]

    def offsets(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), *neutral.vertices.shape), dtype=np.float32)
        for i, f in enumerate(files):
            mesh = read_obj(f)
            if mesh.vertices.shape != neutral.vertices.shape:
                raise input_error(f, f"has {len(mesh.vertices)} vertices, expected {len(neutral.vertices)}")
            out[i] = mesh.vertices - neutral.vertices
        return out

    return LinearFaceModel(neutral.vertices, offsets(identity_files), offsets([folder / f"{n}.obj" for n in names]),
                           names, neutral.faces)


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
    identity_weights: np.ndarray  # (subjects, n_id)


def sample_sequences(model: LinearFaceModel, subjects: int, expressions: int, frames: int, seed: int,
                     n_identity_modes: int | None = None) -> SampledSequences:
    """Sample a COMA-like dataset: ``subjects`` identities ~ N(0, 1) x the first ``expressions`` of
    :data:`ICT_EXPRESSIONS` x ``frames`` frames ramping in and out. Deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    n_id = len(model.identity_modes) if n_identity_modes is None else min(n_identity_modes, len(model.identity_modes))
    if n_id == 0:
        raise input_error("model", "the linear model has no identity modes")
    names = sorted(ICT_EXPRESSIONS)[:expressions]
    ramp = expression_ramp(frames)
    identity = rng.standard_normal((subjects, n_id))
    out = np.empty((subjects * len(names) * frames, *model.neutral.shape), dtype=np.float32)
    labels_s, labels_e, labels_f = [], [], []
    i = 0
    for s in range(subjects):
        base = model.shape(identity[s])
        for name in names:
            weights = model.expression_weights(ICT_EXPRESSIONS[name])
            peak = rng.uniform(0.7, 1.0)
            asym = 1.0 + 0.15 * rng.uniform(-1, 1) * _left_right_sign(model.expression_names)
            offset = np.tensordot(weights * asym, model.expression_modes, axes=1)
            for f in range(frames):
                out[i] = base + peak * ramp[f] * offset
                labels_s.append(f"subject_{s:02d}")
                labels_e.append(name)
                labels_f.append(f)
                i += 1
    return SampledSequences(out, labels_s, labels_e, labels_f, identity)


def _left_right_sign(names: list[str]) -> np.ndarray:
    """+1 for ``*_L`` blendshapes, -1 for ``*_R``, 0 otherwise."""
    return np.array([1.0 if n.endswith("_L") else -1.0 if n.endswith("_R") else 0.0 for n in names])
