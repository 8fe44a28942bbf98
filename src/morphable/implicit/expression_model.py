"""The trained expression model of a run folder: identity SDF + forward expression deformation (thesis 4.3-4.4).

A posed head of identity code ``z_id`` and expression code ``z_ex`` is the neutral surface
``{x : f_id(x, z_id) = 0}`` moved by ``x -> x + F_ex(x, z_ex, z_id)``. Because the deformation is forward
(canonical to posed), the posed zero level set is obtained exactly by extracting the neutral mesh of ``z_id``
(:meth:`morphable.implicit.model.ImplicitModel.extract`) and warping its vertices; the posed SDF at a point
``p`` needs its canonical root (:func:`morphable.implicit.root_finding.broyden`, :meth:`ExpressionModel.sdf`).

Coordinates: the networks work in the normalised units of the deformation data (its one shared similarity,
also the identity run's); methods take and return data units unless ``normalised``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from morphable.errors import MorphableError, input_error
from morphable.runs import Run

WARP_CHUNK = 65536
"""Points per forward pass of the deformation field when warping a mesh."""


class ExpressionModel:
    """``extract`` / ``sdf`` / ``fit`` / ``warp`` of a trained expression run (:func:`morphable.load_run`).

    Attributes: ``run``, ``config``, ``method`` (``"expression"``), ``family`` (``"implicit"``), ``names`` (the
    samples, one expression code each), ``n_codes``, ``codes (N, d_ex)``, ``subjects``, ``subject_of`` (per
    sample), ``similarity``, ``unit``, ``identity`` (the identity run's
    :class:`~morphable.implicit.model.ImplicitModel`), ``expression`` (the
    :class:`~morphable.implicit.expression_method.ExpressionMethod`), ``info`` (the data's ``deformation.json``).
    """

    family = "implicit"

    def __init__(self, expression, run: Run, info: dict[str, Any], identity) -> None:
        from morphable.data.sdf import Similarity

        self.expression, self.run, self.config, self.identity, self.info = expression, run, expression.config, identity, info
        self.method = self.config.method
        self.names: list[str] = [s["name"] for s in info["samples"]]
        self.subjects: list[str] = list(info["subjects"])
        self.subject_of: list[int] = [self.subjects.index(s["subject"]) for s in info["samples"]]
        self.is_neutral: list[bool] = [bool(s["neutral"]) for s in info["samples"]]
        self.similarity = Similarity.from_dict(info["similarity"])
        self.unit: str = info["unit"]
        self.last_extraction = None
        self._neutral_key, self._neutral_mesh, self._neutral_stats = None, None, None
        for p in (*self.field.parameters(), *identity.implicit.network.parameters()):
            p.requires_grad_(False)

    @property
    def field(self):
        return self.expression.field

    @property
    def device(self) -> torch.device:
        return self.expression.device

    @property
    def n_codes(self) -> int:
        return len(self.names)

    @property
    def codes(self) -> torch.Tensor:
        """The expression code table ``(N, d_ex)``."""
        return self.expression.codes.weight.detach()

    @property
    def identity_codes(self) -> torch.Tensor:
        """The identity codes of the subjects ``(S, d_id)``."""
        return self.expression.identity_codes

    def sample_index(self, sample: int | str) -> int:
        """A sample by index or name."""
        if isinstance(sample, str):
            if sample not in self.names:
                raise MorphableError(f"no sample '{sample}' in the run (e.g. {', '.join(self.names[:4])})")
            return self.names.index(sample)
        if not 0 <= int(sample) < self.n_codes:
            raise MorphableError(f"sample {sample} out of range: the run has samples 0..{self.n_codes - 1}")
        return int(sample)

    def sample_codes(self, sample: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_id (d_id,), z_ex (d_ex,))`` of a training sample."""
        k = self.sample_index(sample)
        return self.identity_codes[self.subject_of[k]], self.codes[k]

    def _codes(self, code) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(code, (int, np.integer, str)):
            return self.sample_codes(code)
        z_id, z_ex = code
        like = dict(dtype=torch.float32, device=self.device)
        return torch.as_tensor(z_id, **like), torch.as_tensor(z_ex, **like)

    @torch.no_grad()
    def warp(self, points: np.ndarray, identity: torch.Tensor, expression: torch.Tensor) -> np.ndarray:
        """``x + F_ex(x, z_ex, z_id)`` of canonical ``points (N, 3)`` in normalised units, in chunks."""
        x = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=self.device)
        out = torch.empty_like(x)
        for start in range(0, len(x), WARP_CHUNK):
            chunk = x[start:start + WARP_CHUNK]
            out[start:start + WARP_CHUNK] = self.field.warp(expression[None], identity[None], chunk[None])[0]
        return out.double().cpu().numpy()

    def neutral(self, identity: torch.Tensor, resolution: int = 256,
                normalised: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The neutral mesh of identity code ``identity (d_id,)`` at ``resolution^3`` (normalised units unless
        ``normalised`` is False). The last extraction is kept, so the posed meshes of one identity (a transfer, a
        fit's neutral and posed heads) extract it once; ``last_extraction`` keeps its statistics."""
        key = (resolution, identity.detach().cpu().numpy().tobytes())
        if self._neutral_key != key:
            self._neutral_mesh = self.identity.extract(identity, resolution, normalised=True)
            self._neutral_key, self._neutral_stats = key, self.identity.last_extraction
        self.last_extraction = self._neutral_stats
        vertices, faces = self._neutral_mesh
        return (vertices if normalised or not len(faces) else self.similarity.invert(vertices)), faces

    def extract(self, code: int | str | Sequence[torch.Tensor] = 0, resolution: int = 256,
                normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The posed mesh ``(vertices (V, 3), faces (F, 3))`` of a sample (index or name) or of a code pair
        ``(z_id, z_ex)``: the neutral zero level set of ``z_id`` at ``resolution^3``, its vertices warped by the
        field. Both arrays are empty when ``z_id`` has no surface in the unit ball."""
        z_id, z_ex = self._codes(code)
        vertices, faces = self.neutral(z_id, resolution)
        if len(faces):
            vertices = self.warp(vertices, z_id, z_ex)
            if not normalised:
                vertices = self.similarity.invert(vertices)
        return vertices, faces

    def sdf(self, points: np.ndarray, code: int | str | Sequence[torch.Tensor] = 0) -> tuple[np.ndarray, np.ndarray]:
        """The posed SDF approximation ``f_id(x_c(p), z_id)`` at ``points (N, 3)`` (data units; the SDF of the
        neutral head at the canonical root, not a true distance where the warp stretches) and whether each
        point's root converged (``(N,)`` bool; values of the others are NaN)."""
        from morphable.implicit.root_finding import broyden

        z_id, z_ex = self._codes(code)
        p = torch.as_tensor(self.similarity.apply(np.asarray(points, dtype=np.float64)), dtype=torch.float32,
                            device=self.device)
        with torch.no_grad():
            roots = broyden(lambda x: x + self.field(z_ex[None], z_id[None], x[None])[0], p, chunk=WARP_CHUNK)
            values = self.identity.implicit.network(z_id[None], roots.x[None])[0][0]
        values = values.double().cpu().numpy() / self.similarity.scale
        converged = roots.converged.cpu().numpy()
        values[~converged] = np.nan
        return values, converged

    def sdf_function(self, code: int | str | Sequence[torch.Tensor] = 0) -> Callable[[torch.Tensor], torch.Tensor]:
        """The posed SDF ``p (..., 3) -> f_id(x_c(p), z_id) (...)`` in normalised units as a torch function, e.g.
        for :func:`morphable.render.volume.render_views`. Roots by :func:`~morphable.implicit.root_finding.broyden`
        (the best iterate where a root does not converge: far from the head, where the field extrapolates);
        with gradients enabled the roots pass through :func:`~morphable.implicit.root_finding.implicit_correction`,
        so ``grad_p = J^{-T} grad f_id(x_c)`` is the posed surface's normal direction."""
        from morphable.implicit.root_finding import broyden, implicit_correction

        z_id, z_ex = self._codes(code)
        network = self.identity.implicit.network

        def warp(x: torch.Tensor) -> torch.Tensor:
            return x + self.field(z_ex[None], z_id[None], x[None])[0]

        def posed_sdf(points: torch.Tensor) -> torch.Tensor:
            flat = points.reshape(-1, 3)
            roots = broyden(warp, flat.detach(), chunk=WARP_CHUNK).x
            canonical = implicit_correction(warp, roots, flat) if torch.is_grad_enabled() else roots
            return network(z_id[None], canonical[None])[0][0].reshape(points.shape[:-1])

        return posed_sdf

    def fit(self, points: np.ndarray, steps: int = 500, refine_steps: int = 200, source: str = "points"):
        """Identity and expression codes fitted to a posed point cloud ``(N, 3)`` in data units
        (:func:`morphable.implicit.expression_fit.fit_posed`: Broyden roots, eq. 4.23, then expression-only
        refinement). Returns the :class:`~morphable.implicit.expression_fit.PosedFit`."""
        from morphable.implicit.expression_fit import fit_posed

        cloud = np.asarray(points, dtype=np.float64)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) == 0 or not np.isfinite(cloud).all():
            raise input_error(source, "the point cloud is empty, not (N, 3), or has NaN/infinite coordinates")
        if steps < 1 or refine_steps < 0:
            raise MorphableError(f"--steps must be at least 1 and --refine-steps at least 0, got {steps}, "
                                 f"{refine_steps}")
        x = torch.as_tensor(self.similarity.apply(cloud), dtype=torch.float32, device=self.device)
        network = self.identity.implicit.network
        return fit_posed(lambda z, y: network(z, y)[0], self.field, self.identity_codes.shape[1],
                         self.codes.shape[1], x, steps=steps, refine_steps=refine_steps)

    def on_identity(self, subject: int | str) -> "FixedIdentity":
        """The model seen as a code table of expressions on one subject's identity (index or name), as
        :mod:`morphable.implicit.latent` samples and interpolates code tables."""
        if isinstance(subject, str):
            if subject not in self.subjects:
                raise MorphableError(f"no subject '{subject}' in the run (subjects: {', '.join(self.subjects[:6])})")
            subject = self.subjects.index(subject)
        return FixedIdentity(self, int(subject))


class FixedIdentity:
    """Expression codes of an :class:`ExpressionModel` decoded on one subject's identity code: ``names``,
    ``n_codes``, ``codes (N, d_ex)``, ``similarities``, ``extract(z_ex or sample index, resolution, normalised)``
    and ``last_extraction``, the interface of a code table that :mod:`morphable.implicit.latent` uses."""

    def __init__(self, model: ExpressionModel, subject: int) -> None:
        self.model, self.subject = model, subject
        self.method, self.unit, self.config, self.names = model.method, model.unit, model.config, model.names
        self.similarities = [model.similarity] * model.n_codes
        self.last_extraction = None

    @property
    def n_codes(self) -> int:
        return self.model.n_codes

    @property
    def codes(self) -> torch.Tensor:
        return self.model.codes

    def extract(self, code: int | torch.Tensor, resolution: int = 256, normalised: bool = False):
        """The posed mesh of expression ``code`` (a sample index or a ``(d_ex,)`` code) on the fixed identity."""
        z_ex = self.model.codes[self.model.sample_index(code)] if isinstance(code, (int, np.integer)) else code
        mesh = self.model.extract((self.model.identity_codes[self.subject], z_ex), resolution, normalised)
        self.last_extraction = self.model.last_extraction
        return mesh
