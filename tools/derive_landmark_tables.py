"""Derive the package's landmark tables from rendered ICT-FaceKit faces.

Writes ``src/morphable/image/mediapipe68.json`` (iBUG point ``k`` as a convex combination of MediaPipe
face-mesh points) and ``src/morphable/image/template68.json`` (the canonical 68-point crop template).

Mapping: ``N_TRAIN`` faces (identity coefficients ``N(0, 1)`` over all ICT identity modes, seeds
``0..N_TRAIN-1``; yaw, pitch, roll uniform in the ranges below; one of four skin tones; a random light)
are rendered by :mod:`morphable.image.shaded_face`; MediaPipe's mesh ``m (468, 2)`` is detected on each
and the 68 ICT landmark vertices are projected (``g (68, 2)``). Per iBUG point ``k`` the candidates are
every single mesh point, every pair and every triangle of the 12 single points nearest on average, with
least-squares convex weights; the cost is the mean over renders of ``|sum_j w_j m_{i_j} - g_k| / d``,
``d`` the distance of the outer eye corners 36 / 45. A pair or triangle replaces the simpler choice only
when it lowers the cost by at least ``MIN_GAIN`` (relative).

Template: the ICT neutral's 68 landmark vertices seen from the front (``x`` right, ``y`` down), centred
on their bounding box and scaled so that its larger side is 1.

Run (MediaPipe 0.10.21 importable, see docs/images.md; the ICT data under /work/shared/data):
    PYTHONPATH=src python tools/derive_landmark_tables.py [--ict FOLDER]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from morphable.image.landmarks import mediapipe_mesh_detector
from morphable.image.shaded_face import SKINS, ICTFace, identity_render

N_TRAIN = 80
YAW, PITCH, ROLL = 35.0, 15.0, 10.0
SIZE = 256
CANDIDATES = 12
MIN_GAIN = 0.05
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "morphable" / "image"


def training_set(face: ICTFace) -> tuple[np.ndarray, np.ndarray, int]:
    """Mesh detections ``(R, 468, 2)`` and truths ``(R, 68, 2)`` of the renders where one face was found."""
    detect = mediapipe_mesh_detector()
    poses = np.random.default_rng(12345).uniform(-1, 1, size=(N_TRAIN, 3)) * [YAW, PITCH, ROLL]
    meshes, truths = [], []
    for seed, (yaw, pitch, roll) in enumerate(poses):
        image, truth = identity_render(face, seed, yaw, pitch, roll, SIZE)
        found = detect(image)
        if len(found) == 1:
            meshes.append(found[0])
            truths.append(truth)
    return np.stack(meshes), np.stack(truths), N_TRAIN - len(meshes)


def fit_point(mesh: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> tuple[list[int], list[float], float]:
    """Best single / pair / triangle for one iBUG point: ``mesh (R, 468, 2)``, ``truth (R, 2)``,
    ``scale (R,)``; returns indices, convex weights and the mean normalised error."""
    single = (np.linalg.norm(mesh - truth[:, None], axis=2) / scale[:, None]).mean(axis=0)
    near = np.argsort(single)[:CANDIDATES]
    best = ([int(near[0])], [1.0], float(single[near[0]]))
    for n in (2, 3):
        level_best = None
        for combo in itertools.combinations(near, n):
            w = _convex_weights(mesh[:, list(combo)], truth, scale)
            if w is None:
                continue
            err = float((np.linalg.norm((w[None, :, None] * mesh[:, list(combo)]).sum(1) - truth, axis=1)
                         / scale).mean())
            if level_best is None or err < level_best[2]:
                level_best = ([int(c) for c in combo], [float(x) for x in w], err)
        if level_best is not None and level_best[2] < (1.0 - MIN_GAIN) * best[2]:
            best = level_best
    return best


def _convex_weights(points: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """Least-squares weights ``w (n,)``, ``sum w = 1``, of ``points (R, n, 2)`` for ``truth (R, 2)``
    (residuals divided by ``scale``); ``None`` when a weight is negative."""
    base = points[:, -1]
    A = ((points[:, :-1] - base[:, None]) / scale[:, None, None]).transpose(0, 2, 1).reshape(-1, points.shape[1] - 1)
    b = ((truth - base) / scale[:, None]).reshape(-1)
    head, *_ = np.linalg.lstsq(A, b, rcond=None)
    w = np.append(head, 1.0 - head.sum())
    return None if (w < 0).any() else w


def template(face: ICTFace) -> np.ndarray:
    """``(68, 2)`` frontal neutral landmarks, bounding box centred at 0 with larger side 1, ``y`` down."""
    xy = face.neutral[face.landmarks, :2] * [1.0, -1.0]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - 0.5 * (lo + hi)) / float((hi - lo).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, default=Path("/work/shared/data/ict-facekit"))
    args = parser.parse_args()
    face = ICTFace.from_folder(args.ict)
    mesh, truth, missed = training_set(face)
    scale = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
    points = []
    for k in range(68):
        indices, weights, err = fit_point(mesh, truth[:, k], scale)
        points.append({"indices": indices, "weights": [round(w, 4) for w in weights], "train_nme": round(err, 5)})
        points[-1]["weights"][-1] = round(1.0 - sum(points[-1]["weights"][:-1]), 4)
    table = {
        "description": "iBUG 68 landmark k = sum_j weights[j] * mediapipe_face_mesh[indices[j]] (pixels)",
        "derivation": {"script": "tools/derive_landmark_tables.py", "mediapipe": "0.10.21",
                       "renders": N_TRAIN, "missed": missed, "seeds": f"0..{N_TRAIN - 1}", "size": SIZE,
                       "yaw_deg": YAW, "pitch_deg": PITCH, "roll_deg": ROLL, "skins": SKINS,
                       "candidates": CANDIDATES, "min_gain": MIN_GAIN,
                       "train_nme": round(float(np.mean([p["train_nme"] for p in points])), 5)},
        "points": points,
    }
    (PACKAGE / "mediapipe68.json").write_text(json.dumps(table, indent=1) + "\n")
    (PACKAGE / "template68.json").write_text(json.dumps({
        "description": "canonical 68-point template: ICT-FaceKit neutral seen from the front, y down, "
                       "landmark bounding box centred at 0 with larger side 1 (tools/derive_landmark_tables.py)",
        "points": np.round(template(face), 5).tolist()}) + "\n")
    print(f"{len(mesh)} renders used ({missed} without exactly one face); mean training NME "
          f"{table['derivation']['train_nme']:.4f}; "
          f"points: {sum(len(p['indices']) == 1 for p in points)} single, "
          f"{sum(len(p['indices']) == 2 for p in points)} pairs, {sum(len(p['indices']) == 3 for p in points)} triangles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
