"""Aligned face crops: a similarity transform from 68 photo landmarks to a canonical template, the warp,
and the inverse that maps crop results back onto the photo.

Coordinates are pixels with pixel centres at integers (``x`` right, ``y`` down), in the photo and in the
crop alike. The template (``template68.json``) is the ICT-FaceKit neutral's 68 landmarks seen from the
front with its bounding box centred at 0 and larger side 1; in a ``size x size`` crop it is
``c = (size - 1) / 2 + size * (FILL * t + (0, SHIFT_Y))``, so the landmarks fill ``FILL`` of the crop and
sit ``SHIFT_Y`` of it below the centre, leaving room for the forehead.

The transform ``A (3, 3)`` acts on homogeneous points, ``crop = A [x, y, 1]^T``, with
``A = [[s R, t], [0, 0, 1]]`` (scale ``s > 0``, rotation ``R``, no reflection) minimising
``sum_k |s R x_k + t - c_k|^2`` (Umeyama's closed form); ``A^{-1}`` maps the crop back.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass

import numpy as np

from morphable.errors import MorphableError

FILL = 0.65
SHIFT_Y = 0.05
DEFAULT_SIZE = 224


@functools.lru_cache(maxsize=1)
def _unit_template() -> np.ndarray:
    text = importlib.resources.files("morphable.image").joinpath("template68.json").read_text()
    return np.asarray(json.loads(text)["points"], dtype=np.float64)


def template_landmarks(size: int = DEFAULT_SIZE, fill: float = FILL) -> np.ndarray:
    """``(68, 2)`` canonical landmark positions in a ``size x size`` crop whose landmarks fill ``fill`` of it."""
    if not 0 < fill <= 1:
        raise MorphableError(f"a crop fill must be in (0, 1], got {fill}")
    return (size - 1) / 2.0 + size * (fill * _unit_template() + np.array([0.0, SHIFT_Y]))


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(3, 3)`` least-squares similarity ``A`` with ``A [source_k, 1] ~ [target_k, 1]``.

    Umeyama: with centred ``X = source - mean``, ``Y = target - mean`` and the SVD ``Y^T X = U S V^T``,
    ``R = U D V^T`` (``D = diag(1, det(U V^T))``), ``s = tr(S D) / |X|^2``, ``t = mean_Y - s R mean_X``.

    Args:
        source: ``(N, 2)`` points, ``N >= 2``, not all equal.
        target: ``(N, 2)`` points.
    """
    x, y = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 2 or len(x) < 2:
        raise MorphableError(f"a similarity needs two (N >= 2, 2) point sets, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise MorphableError("a similarity needs finite points")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    spread = float((xc ** 2).sum())
    if spread <= 1e-12 * max(1.0, float((yc ** 2).sum())):
        raise MorphableError("a similarity needs source points that are not all the same")
    U, S, Vt = np.linalg.svd(yc.T @ xc)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D)) / spread
    A = np.eye(3)
    A[:2, :2] = s * R
    A[:2, 2] = my - s * R @ mx
    return A


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points mapped by the ``(3, 3)`` transform (homogeneous, last row ``0 0 1``)."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:2, :2].T + matrix[:2, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Resample ``image (H, W, C)`` into a ``size x size`` crop where ``crop = matrix photo``.

    Each crop pixel ``q`` takes the bilinear value of the photo at ``matrix^{-1} q``; outside the photo
    it is ``fill``. Returns the dtype of ``image`` (rounded for integer images).
    """
    from scipy.ndimage import map_coordinates

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    inverse = np.linalg.inv(matrix)
    jj, ii = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    xy = apply_transform(inverse, np.stack([jj.ravel(), ii.ravel()], axis=1))
    coords = [xy[:, 1], xy[:, 0]]
    channels = [map_coordinates(img[..., c].astype(np.float64), coords, order=1, mode="constant", cval=fill)
                for c in range(img.shape[2])]
    out = np.stack(channels, axis=1).reshape(size, size, img.shape[2])
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(img.dtype)
    return out[..., 0] if np.asarray(image).ndim == 2 else out


@dataclass
class AlignedCrop:
    """A face crop and the maps between it and the photo.

    Attributes:
        image: ``(size, size, C)`` the crop.
        matrix: ``(3, 3)`` photo pixels -> crop pixels.
        inverse: ``(3, 3)`` crop pixels -> photo pixels (``matrix^{-1}``).
    """

    image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` crop pixels -> photo pixels."""
        return apply_transform(self.inverse, points)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` photo pixels -> crop pixels."""
        return apply_transform(self.matrix, points)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = DEFAULT_SIZE,
               fill: float = FILL) -> AlignedCrop:
    """Crop ``image (H, W, C)`` so that its ``landmarks (68, 2)`` land on :func:`template_landmarks`."""
    if size < 8:
        raise MorphableError(f"a crop size must be at least 8 pixels, got {size}")
    matrix = similarity_transform(landmarks, template_landmarks(size, fill))
    return AlignedCrop(warp(image, matrix, size), matrix, np.linalg.inv(matrix))
