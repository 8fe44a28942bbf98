"""VRN's volumetric targets: the frame a face volume lives in, and the maps between it, the crop and the photo.

A VRN volume is a ``(D, S, S)`` grid aligned with an ``S x S`` face crop: voxel ``[k, y, x]`` sits behind
crop pixel ``(x, y)`` (pixel centres at integers, ``x`` right, ``y`` down) at depth slice ``k`` (``k`` grows
away from the camera, OpenCV's ``z`` forward). Coordinates in this module are continuous ``(x, y, k)`` with
voxel centres at integers, so ``volume[k, y, x]`` is the voxel whose centre is ``(x, y, k)``.

The crop (:meth:`VolumeSpec.crop_matrix`) is the similarity ``A = [[s R, t], [0, 0, 1]]`` that carries the
photo's 68 landmarks onto :func:`morphable.image.align.template_landmarks` at ``fill`` (landmarks fill that
fraction of the crop, leaving room for forehead, cheeks and chin).

A camera-frame point ``X = (X, Y, Z)`` (intrinsics ``K``, ``f = (f_x + f_y) / 2``) maps to

    (u, v) = (f_x X / Z + c_x, f_y Y / Z + c_y)          photo pixels (exact perspective)
    (x, y) = A (u, v)                                      crop pixels
    z'     = s f (Z - Z_0) / Z_0                           crop pixels of depth about the reference depth Z_0
    k      = D / 2 + depth_scale z'                        depth slice

``Z_0`` is the reference depth (the mean depth of the 68 landmark vertices), where one model unit spans
``s f / Z_0`` crop pixels in ``x``, ``y`` and ``z`` alike, so ``(x, y, z')`` is the camera frame seen
through a local similarity, in crop pixels. ``depth_scale`` slices per crop pixel is VRN's ``x 2``: the
paper's 192 x 192 x 200 volume holds ``+-50`` crop pixels of depth, which at ``fill = 0.5`` is about
``+-7`` cm about the landmarks' depth on an adult face, enough for the face region at any yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphable.errors import MorphableError

VRN_FILL = 0.5


@dataclass(frozen=True)
class VolumeSpec:
    """The size of a VRN volume and of its crop.

    Attributes:
        size: ``S``, crop side in pixels (the network's input resolution; paper 192).
        depth: ``D``, number of depth slices (the network's output channels; paper 200).
        depth_scale: slices per crop pixel of depth (paper 2).
        fill: fraction of the crop the 68 landmarks fill (:func:`~morphable.image.align.template_landmarks`).
    """

    size: int = 192
    depth: int = 200
    depth_scale: float = 2.0
    fill: float = VRN_FILL

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 1024:
            raise MorphableError(f"a volume's crop size must be in 8..1024 pixels, got {self.size}")
        if not 2 <= self.depth <= 1024:
            raise MorphableError(f"a volume's depth must be in 2..1024 slices, got {self.depth}")
        if not self.depth_scale > 0:
            raise MorphableError(f"a volume's depth scale must be positive, got {self.depth_scale}")
        if not 0 < self.fill <= 1:
            raise MorphableError(f"a crop fill must be in (0, 1], got {self.fill}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, S, S)``."""
        return self.depth, self.size, self.size

    def crop_matrix(self, landmarks_2d: np.ndarray) -> np.ndarray:
        """``(3, 3)`` photo pixels -> crop pixels for a face whose ``landmarks_2d (68, 2)`` are known."""
        from morphable.image.align import similarity_transform, template_landmarks

        return similarity_transform(landmarks_2d, template_landmarks(self.size, self.fill))


def similarity_scale(matrix: np.ndarray) -> float:
    """The scale ``s`` of a ``(3, 3)`` similarity ``[[s R, t], [0, 0, 1]]``: ``sqrt(|det A_2x2|)``."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:2, :2]))))


def camera_to_volume(points: np.ndarray, K: np.ndarray, crop_matrix: np.ndarray, z_ref: float,
                     spec: VolumeSpec) -> np.ndarray:
    """``(N, 3)`` camera-frame points -> ``(N, 3)`` continuous volume coordinates ``(x, y, k)``.

    Args:
        points: ``(N, 3)`` camera-frame points, ``Z > 0`` (model unit).
        K: ``(3, 3)`` intrinsics of the photo.
        crop_matrix: ``(3, 3)`` photo pixels -> crop pixels (:meth:`VolumeSpec.crop_matrix`).
        z_ref: the reference depth ``Z_0 > 0`` (model unit), e.g. the mean depth of the 68 landmarks.
        spec: the volume.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise MorphableError(f"camera-frame points must be (N, 3), got {p.shape}")
    if not (z_ref > 0 and np.isfinite(z_ref)):
        raise MorphableError(f"the reference depth must be positive, got {z_ref}")
    if not (p[:, 2] > 0).all():
        raise MorphableError("camera-frame points must lie in front of the camera (Z > 0)")
    K = np.asarray(K, dtype=np.float64)
    u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
    v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
    A = np.asarray(crop_matrix, dtype=np.float64)
    xy = np.stack([u, v], axis=1) @ A[:2, :2].T + A[:2, 2]
    f = 0.5 * (K[0, 0] + K[1, 1])
    z_crop = similarity_scale(A) * f * (p[:, 2] - z_ref) / z_ref
    return np.column_stack([xy, spec.depth / 2.0 + spec.depth_scale * z_crop])


def volume_to_crop(points: np.ndarray, spec: VolumeSpec) -> np.ndarray:
    """``(N, 3)`` volume coordinates ``(x, y, k)`` -> ``(N, 3)`` crop frame ``(x, y, z')``, all in crop pixels
    (``z' = (k - D / 2) / depth_scale``): the frame in which shapes are compared (NME)."""
    p = np.asarray(points, dtype=np.float64)
    return np.column_stack([p[:, 0], p[:, 1], (p[:, 2] - spec.depth / 2.0) / spec.depth_scale])


def crop_to_photo(points: np.ndarray, crop_matrix: np.ndarray) -> np.ndarray:
    """``(N, 3)`` crop frame ``(x, y, z')`` -> ``(N, 3)`` photo pixel frame: ``(u, v) = A^{-1} (x, y)`` and depth
    ``z' / s`` in photo pixels (the convention of :mod:`morphable.image.photo_dataset` meshes)."""
    p = np.asarray(points, dtype=np.float64)
    inverse = np.linalg.inv(np.asarray(crop_matrix, dtype=np.float64))
    uv = p[:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    return np.column_stack([uv, p[:, 2] / similarity_scale(crop_matrix)])
