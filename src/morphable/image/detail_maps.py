"""HRN's detail maps on a face model's UV chart: the mid-level deformation map and the high-level displacement map.

The maps live on a square *face tile* of the model's texture coordinates (ICT-FaceKit's skin spans two UDIM
tiles side by side, normalised to ``[0, 1]^2`` by the photo generator; its face is the left one,
``u < 1/2``): ``(u', v') = ((u - u_0) / w, v)`` with ``[u_0, u_0 + w]`` the tile's ``u`` range, so square maps
(64 x 64 x 3 deformation, 256 x 256 x 1 displacement) cover the face at an even texel size. Triangles with
all corners in the tile are the *tile faces*; the others (back of the head, neck) are never moved.

* **Deformation** (mid frequency): ``X' = X + w(u', v') M(u', v')`` per vertex, ``M (3, h, w)`` in model units
  in the camera frame (as HRN: the map offsets vertices of the posed coarse mesh), sampled bilinearly at the
  vertex's UVs (a seam vertex takes the mean over its UVs: the mesh stays watertight,
  :func:`morphable.render.shading.vertex_values_from_uv_map`), ``w`` a fade from 0 at the skin the tile does
  not hold (the chart's islands end inside the tile, so the fade follows the mesh, not the tile's border) to
  1 at a distance ``fade`` from it, so the moved face joins the unmoved head without a step.
* **Displacement** (high frequency): ``d (1, H, W)`` along the normal, used for shading
  (:func:`morphable.render.displacement.displaced_normal_map`) and, for export, on a subdivided mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.render.shading import vertex_values_from_uv_map

TILE_EPS = 1e-6


@dataclass
class FaceTile:
    """The square chart of the detail maps (module docstring).

    Attributes:
        uvs: ``(T, 2)`` the model's texture coordinates mapped into the tile (``[0, 1]^2`` inside it).
        faces: ``(F_t, 3)`` vertex indices of the tile faces; face_uvs ``(F_t, 3)`` their UV indices.
        face_ids: ``(F_t,)`` the tile faces' indices among the model's faces.
        weights: ``(V,)`` the fade ``w``: ``clip(d / fade, 0, 1)`` with ``d`` a vertex's distance on the mean
            shape to the nearest skin vertex of no tile face (0 for those and for vertices in no tile face).
    """

    uvs: np.ndarray
    faces: np.ndarray
    face_uvs: np.ndarray
    face_ids: np.ndarray
    weights: np.ndarray

    @property
    def n_vertices(self) -> int:
        return len(self.weights)

    @classmethod
    def of(cls, mean: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_uvs: np.ndarray, textured: np.ndarray,
           fade: float, u_range: tuple[float, float] = (0.0, 0.5)) -> "FaceTile":
        """The tile ``u in u_range`` of a model with mean shape ``mean (V, 3)`` whose ``textured (F,)`` faces
        have UVs; deformations fade in over ``fade`` model units from the rest of the skin."""
        from scipy.spatial import cKDTree

        u0, u1 = u_range
        if not 0 <= u0 < u1 <= 1:
            raise MorphableError(f"a face tile's u range must lie in [0, 1], got {u_range}")
        if not fade > 0:
            raise MorphableError(f"the fade distance must be positive, got {fade}")
        tile_uvs = np.column_stack([(uvs[:, 0] - u0) / (u1 - u0), uvs[:, 1]])
        corner_u = tile_uvs[face_uvs, 0]
        textured = np.asarray(textured, dtype=bool)
        inside = textured & (corner_u >= -TILE_EPS).all(1) & (corner_u <= 1 + TILE_EPS).all(1)
        if not inside.any():
            raise MorphableError(f"no textured face lies in the u range {u_range}")
        on_tile = np.zeros(len(mean), dtype=bool)
        on_tile[faces[inside]] = True
        skin = np.zeros(len(mean), dtype=bool)
        skin[faces[textured]] = True
        rest = np.nonzero(skin & ~on_tile)[0]
        weights = on_tile.astype(np.float64)
        if len(rest):
            distance, _ = cKDTree(mean[rest]).query(mean[on_tile])
            weights[on_tile] = np.clip(distance / fade, 0.0, 1.0)
        ids = np.nonzero(inside)[0]
        return cls(tile_uvs, faces[ids], face_uvs[ids], ids, weights)

    def deform(self, vertices: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """``vertices (B, V, 3)`` moved by ``deformation (B, 3, h, w)``: ``X + w M`` (module docstring)."""
        if vertices.dim() != 3 or deformation.dim() != 4 or deformation.shape[1] != 3 or len(vertices) != len(deformation):
            raise MorphableError(f"deform needs vertices (B, V, 3) and maps (B, 3, h, w), got "
                                 f"{tuple(vertices.shape)} and {tuple(deformation.shape)}")
        w = torch.as_tensor(self.weights, dtype=vertices.dtype, device=vertices.device)
        offsets = vertex_values_from_uv_map(deformation.to(vertices.dtype), self.uvs, self.face_uvs, self.faces,
                                            self.n_vertices)
        return vertices + w[None, :, None] * offsets


def displace_along_normals(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_uvs: np.ndarray,
                           displacement: np.ndarray) -> np.ndarray:
    """``vertices (V, 3) + d(uv_v) n_v``: a mesh moved along its area-weighted vertex normals ``n_v`` by the map
    ``displacement (1, H, W)`` (model units) sampled at its UVs (the tile's; seam vertices: the mean), e.g. the
    high level's map on a subdivided mesh (:func:`morphable.mesh.subdivide.subdivide_textured`) for export."""
    from morphable.mesh.normals import vertex_normals

    v = torch.as_tensor(np.asarray(vertices, dtype=np.float64))
    f = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    d = vertex_values_from_uv_map(torch.as_tensor(np.asarray(displacement, dtype=np.float64)), uvs, face_uvs, f, len(v))
    return (v + d * vertex_normals(v, f)).numpy()
