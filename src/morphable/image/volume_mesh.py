"""A VRN volume turned into a mesh: marching cubes at the 0.5 level, the largest connected component, and
the map from array indices to the crop frame (:mod:`morphable.data.voxels`)."""

from __future__ import annotations

import numpy as np

from morphable.data.voxels import VolumeSpec, volume_to_crop
from morphable.errors import MorphableError


def volume_to_mesh(volume: np.ndarray, spec: VolumeSpec, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mesh of the ``level`` iso-surface of ``volume (D, S, S)`` (occupancy probabilities, ``[k, y, x]``).

    The volume is padded by one empty voxel on every side so the surface closes at the volume's borders
    (the head cut by the volume's faces); :func:`skimage.measure.marching_cubes` gives vertices in array
    indices ``(k, y, x)``, which become volume coordinates ``(x, y, k)`` and then the crop frame
    (:func:`~morphable.data.voxels.volume_to_crop`); only the component with the most triangles is kept
    (VRN's post-processing).

    Returns:
        ``vertices (N, 3)`` float64 crop frame, ``faces (F, 3)`` int64.
    """
    from skimage.measure import marching_cubes

    from morphable.mesh.components import largest_component

    vol = np.asarray(volume, dtype=np.float32)
    if vol.shape != spec.shape:
        raise MorphableError(f"a volume of shape {vol.shape} does not match the model's {spec.shape}")
    if not np.isfinite(vol).all():
        raise MorphableError("the volume holds NaN or Inf")
    if not (vol > level).any():
        raise MorphableError(f"the volume is empty (no voxel above {level})")
    if (vol > level).all():
        raise MorphableError(f"the volume is full (every voxel above {level}): no surface")
    padded = np.pad(vol, 1, constant_values=0.0)
    verts, faces, _, _ = marching_cubes(padded, level=level)
    verts = verts.astype(np.float64) - 1.0
    verts, faces = largest_component(verts, faces)
    return volume_to_crop(verts[:, [2, 1, 0]], spec), faces.astype(np.int64)
