"""The trained mesh model of a run folder, as :func:`morphable.load_run` returns it for explicit runs.

Meshes are ``(N, V, 3)`` numpy arrays in the training data's unit, all with the run's topology
(``faces (F, 3)``). ``sample`` draws codes from the Gaussian of the training meshes' codes
(:func:`morphable.latent.fit_code_gaussian`: Ledoit-Wolf shrinkage towards the isotropic covariance with
the same total variance) and decodes them; for PCA that Gaussian is the model's own ``N(0, diag(s^2))`` up to
the shrinkage, for an autoencoder it is the empirical code distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from morphable.config import ExperimentConfig
from morphable.errors import MorphableError, input_error
from morphable.runs import Run


class MeshModel:
    """``encode`` / ``decode`` / ``reconstruct`` / ``sample`` / ``interpolate`` of a trained explicit run.

    Attributes: ``run`` (the folder), ``config``, ``method`` (its name), ``family`` (``"explicit"``),
    ``faces (F, 3)``, ``n_vertices``, ``codec`` (the underlying PCA model or autoencoder method).
    """

    family = "explicit"

    def __init__(self, run: Run, config: ExperimentConfig, codec: Any) -> None:
        from morphable.explicit.experiment import template_of

        self.run, self.config, self.codec = run, config, codec
        self.method = config.method
        self.template, self.faces = template_of(run)
        self.n_vertices = len(self.template)
        self._test: np.ndarray | None = None

    def check(self, vertices: np.ndarray, source: str = "meshes") -> np.ndarray:
        """``vertices (N, V, 3)`` as float32, with the run's vertex count and finite values."""
        v = np.asarray(vertices, dtype=np.float32)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1:] != (self.n_vertices, 3):
            raise input_error(source, f"has shape {tuple(v.shape)}, the run's meshes are (N, {self.n_vertices}, 3)")
        if not np.isfinite(v).all():
            raise input_error(source, "vertices contain NaN or infinite values")
        return v

    def test_meshes(self) -> np.ndarray:
        """The run's test meshes ``(N, V, 3)`` (its dataset must still be at the path in ``config.json``)."""
        from morphable.explicit.experiment import prepare_data

        if self._test is None:
            data = prepare_data(self.config)
            self._test = data.dataset.vertices[data.split.test]
        return self._test

    def mesh(self, spec: str) -> np.ndarray:
        """A mesh ``(V, 3)`` named on the command line: an integer indexes the run's test split, anything
        else is a mesh file with the run's topology."""
        from morphable.io import read_mesh

        if spec.lstrip("-").isdigit():
            test = self.test_meshes()
            index = int(spec)
            if not 0 <= index < len(test):
                raise MorphableError(f"mesh index {index} is outside the run's test set (0..{len(test) - 1})")
            return test[index]
        return self.check(read_mesh(spec).vertices, spec)[0]

    def encode(self, vertices: np.ndarray) -> np.ndarray:
        """``(N, V, 3)`` -> codes ``(N, Z)``."""
        return np.asarray(self.codec.encode(self.check(vertices)))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes ``(N, Z)`` -> ``(N, V, 3)``."""
        return np.asarray(self.codec.decode(np.asarray(codes, dtype=np.float32)))

    def reconstruct(self, vertices: np.ndarray) -> np.ndarray:
        """``(N, V, 3)`` -> ``(N, V, 3)``: encode, then decode."""
        return np.asarray(self.codec.reconstruct(self.check(vertices)))

    def training_codes(self) -> np.ndarray:
        """The codes ``(N, Z)`` of the run's training meshes (written when the run was evaluated)."""
        from morphable.explicit.experiment import TRAIN_CODES
        from morphable.io import load_weights

        path = self.run.path / TRAIN_CODES
        if not path.exists():
            raise input_error(self.run.path, f"run has no {TRAIN_CODES}: re-evaluate it with 'morphable eval'")
        return np.asarray(load_weights(path)[0]["codes"])

    def sample(self, n: int, seed: int = 0, shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """``n`` meshes decoded from codes drawn from the Gaussian of the training codes; returns
        ``(meshes (n, V, 3), codes (n, Z), shrinkage)``."""
        import torch

        from morphable.latent import fit_code_gaussian

        if n < 1:
            raise MorphableError(f"--n must be at least 1, got {n}")
        gaussian = fit_code_gaussian(torch.as_tensor(self.training_codes(), dtype=torch.float64), shrinkage)
        codes = gaussian.sample(n, seed).numpy().astype(np.float32)
        return self.decode(codes), codes, gaussian.shrinkage

    def interpolate(self, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
        """``n`` meshes decoded along the segment between the codes of meshes ``a`` and ``b`` ``(V, 3)``
        (ends included: ``t = i / (n - 1)``)."""
        if n < 2:
            raise MorphableError(f"--n must be at least 2, got {n}")
        codes = self.encode(np.stack([a, b]))
        t = np.linspace(0.0, 1.0, n)[:, None]
        return self.decode((1 - t) * codes[0] + t * codes[1])
