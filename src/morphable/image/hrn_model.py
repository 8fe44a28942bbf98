"""A trained HRN run as a model: crops in, the three levels out (what ``load_run`` gives for an HRN run)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HRNPrediction:
    """The levels of ``B`` crops: ``coefficients (B, P)``; model-frame meshes ``coarse``, ``mid (B, V, 3)``
    (pose removed); ``mid_map (B, 3, h, h)``, ``high_map (B, 1, H, H)`` (model units); ``unwrapped (B, 3, H, H)``
    the photo in UV space; renders ``(B, S, S, 3)`` sRGB of the coarse mesh, ``M_1`` and ``M_1`` with the
    displacement's normals, their ``coverage (B, S, S)`` (of ``M_1``); ``landmarks (B, 68, 2)`` crop pixels of
    ``M_1``."""

    coefficients: np.ndarray
    coarse: np.ndarray
    mid: np.ndarray
    mid_map: np.ndarray
    high_map: np.ndarray
    unwrapped: np.ndarray
    renders: dict
    coverage: np.ndarray
    landmarks: np.ndarray


class HRNModel:
    """The networks of an HRN run (:class:`~morphable.image.hrn_method.HRNMethod`), eval mode.

    Attributes: ``size`` (crop pixels), ``fill``, ``faces (F, 3)``, ``device``, ``run``."""

    def __init__(self, method, run=None, chunk: int = 8) -> None:
        self.method, self.run, self.chunk = method, run, chunk
        self.face, self.geometry, self.device = method.face, method.geometry, method.device
        self.size, self.fill = method.config.model.size, method.config.model.fill
        self.faces = self.face.faces.cpu().numpy()

    def predict(self, crops) -> HRNPrediction:
        """``crops (B, 3, S, S)`` float in [0, 1] -> :class:`HRNPrediction`, ``chunk`` at a time."""
        import torch

        from morphable.errors import MorphableError
        from morphable.image.hrn import hrn_forward, level_meshes

        x = torch.as_tensor(np.asarray(crops, dtype=np.float32) if not torch.is_tensor(crops) else crops)
        S = self.size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise MorphableError(f"crops must be (B, 3, {S}, {S}), got {tuple(x.shape)}")
        parts: dict[str, list] = {}
        with torch.no_grad():
            for start in range(0, len(x), self.chunk):
                batch = x[start:start + self.chunk].to(self.device)
                levels = hrn_forward(self.method.generators, self.geometry, batch)
                coarse_render, _ = self.geometry.render(levels.coarse, levels.coarse.vertices)
                mid_render, coverage = self.geometry.render(levels.coarse, levels.mid_vertices)
                fine_render, _ = self.geometry.render(levels.coarse, levels.mid_vertices, levels.high_map)
                meshes = level_meshes(levels, self.face)
                values = {"coefficients": levels.coefficients, "coarse": meshes["coarse"], "mid": meshes["mid"],
                          "mid_map": levels.mid_map, "high_map": levels.high_map,
                          "unwrapped": levels.unwrapped_high[:, :3], "render_coarse": coarse_render,
                          "render_mid": mid_render, "render_fine": fine_render, "coverage": coverage,
                          "landmarks": levels.mid_landmarks(self.face)}
                for key, value in values.items():
                    parts.setdefault(key, []).append(value.cpu().numpy() if torch.is_tensor(value) else value)
        out = {k: np.concatenate(v) for k, v in parts.items()}
        renders = {level: out.pop(f"render_{level}") for level in ("coarse", "mid", "fine")}
        return HRNPrediction(renders=renders, **out)

    def fine_mesh(self, mid: np.ndarray, high_map: np.ndarray, iterations: int = 1):
        """The fine level for export: the mid mesh ``(V, 3)`` subdivided ``iterations`` times
        (:func:`~morphable.mesh.subdivide.subdivide_textured`) and displaced along its normals by ``high_map
        (1, H, H)`` on the face tile (:func:`~morphable.image.detail_maps.displace_along_normals`); the faces
        off the tile are subdivided but not moved. Returns ``(vertices, faces)``."""
        from morphable.image.detail_maps import displace_along_normals
        from morphable.mesh.subdivide import subdivide_textured

        tile = self.geometry.tile
        face_uvs = self.face.face_uvs.cpu().numpy()
        v, f, uvs, fuv = subdivide_textured(mid, self.faces, tile.uvs, face_uvs, iterations)
        on_tile = np.repeat(self.geometry.in_tile.cpu().numpy(), 4 ** iterations)
        moved = displace_along_normals(v, f[on_tile], uvs, fuv[on_tile], high_map)
        used = np.zeros(len(v), dtype=bool)
        used[f[on_tile]] = True
        return np.where(used[:, None], moved, v), f
