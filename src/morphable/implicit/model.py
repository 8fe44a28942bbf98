"""The trained implicit head model of a run folder, as :func:`morphable.load_run` returns it for implicit runs.

Coordinates: the network works in normalised units (each training shape mapped into the unit sphere by its
similarity, ``x' = (x - translation) * scale``; ``morphable data sdf`` shares one similarity by default).
``sdf`` and ``fit`` take points in the training data's units and map them; ``extract`` returns meshes in
those units unless ``normalised``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from morphable.errors import MorphableError, input_error
from morphable.runs import Run

MIN_RESOLUTION = 8


def check_resolution(resolution: int) -> None:
    """``--res`` of an extraction: at least :data:`MIN_RESOLUTION` cells per axis."""
    if resolution < MIN_RESOLUTION:
        raise MorphableError(f"--res must be at least {MIN_RESOLUTION}, got {resolution}")


class ImplicitModel:
    """``sdf`` / ``extract`` / ``fit`` of a trained NPM or tri-plane run.

    Attributes: ``run``, ``config``, ``method`` (its name), ``family`` (``"implicit"``), ``names`` (the
    training shapes), ``n_codes``, ``codes (N, Z)`` (the learned code table), ``unit``, ``implicit`` (the
    underlying :class:`~morphable.implicit.method.ImplicitMethod`).
    """

    family = "implicit"

    def __init__(self, implicit, run: Run, shapes: dict[str, Any]) -> None:
        from morphable.data.sdf import Similarity

        self.implicit, self.run, self.config = implicit, run, implicit.config
        self.method = self.config.method
        self.names = [s["name"] for s in shapes["shapes"]]
        self.similarities = [Similarity.from_dict(s["similarity"]) for s in shapes["shapes"]]
        self.unit = shapes["unit"]
        self.last_extraction = None

    @property
    def n_codes(self) -> int:
        return len(self.names)

    @property
    def codes(self) -> torch.Tensor:
        return self.implicit.codes.weight.detach()

    def code(self, code: int | torch.Tensor | np.ndarray) -> torch.Tensor:
        """A training code by index, or a given code ``(Z,)``, as a tensor on the model's device."""
        if isinstance(code, (int, np.integer)):
            if not 0 <= code < self.n_codes:
                raise MorphableError(f"code {code} out of range: the run has codes 0..{self.n_codes - 1}")
            return self.codes[int(code)]
        return torch.as_tensor(code, dtype=self.codes.dtype, device=self.codes.device)

    def _similarity(self, code):
        return self.similarities[int(code)] if isinstance(code, (int, np.integer)) else self.similarities[0]

    @torch.no_grad()
    def sdf(self, points: np.ndarray, code: int | torch.Tensor | np.ndarray = 0) -> np.ndarray:
        """Signed distance ``(N,)`` at ``points (N, 3)`` (data units) for a code, in data units."""
        similarity = self._similarity(code)
        x = torch.as_tensor(similarity.apply(np.asarray(points, dtype=np.float64)), dtype=torch.float32,
                            device=self.codes.device)
        values = self.implicit.network(self.code(code)[None], x[None])[0][0]
        return values.cpu().numpy() / similarity.scale

    def extract(self, code: int | torch.Tensor | np.ndarray = 0, resolution: int = 256,
                normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The zero level set ``(vertices (V, 3), faces (F, 3))`` of a code at ``resolution^3`` (both empty
        when the code has no surface in the unit ball); ``last_extraction`` keeps the statistics."""
        from morphable.implicit.experiment import extract_code_mesh

        check_resolution(resolution)
        vertices, faces, self.last_extraction = extract_code_mesh(self.implicit, self.code(code), resolution)
        if not normalised and len(vertices):
            vertices = self._similarity(code).invert(vertices)
        return vertices, faces

    def fit(self, points: np.ndarray, steps: int = 1000, source: str = "points") -> tuple[torch.Tensor, list[float]]:
        """A code ``(Z,)`` fitted to a point cloud ``(N, 3)`` in data units (thesis eq. 4.23,
        :func:`morphable.implicit.fit.fit_code`), and the energy per step."""
        from morphable.implicit.fit import fit_code

        cloud = np.asarray(points, dtype=np.float64)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) == 0 or not np.isfinite(cloud).all():
            raise input_error(source, "the point cloud is empty, not (N, 3), or has NaN/infinite coordinates")
        if steps < 1:
            raise MorphableError(f"--steps must be at least 1, got {steps}")
        x = torch.as_tensor(self.similarities[0].apply(cloud), dtype=torch.float32, device=self.codes.device)
        network = self.implicit.network
        for p in network.parameters():
            p.requires_grad_(False)
        return fit_code(lambda z, y: network(z, y)[0], self.codes.shape[1], x, steps)
