"""PCA 3DMM, the baseline of the CoMA paper.

With training meshes flattened to ``X (N, 3V)`` and mean ``mu``, the model keeps the first ``n_z``
right singular vectors ``P (n_z, 3V)`` of ``X - mu``:

    encode(x) = P (x - mu)          (n_z,)
    decode(z) = mu + P^T z          (3V,)

so reconstruction is the orthogonal projection onto the principal subspace. ``stddev`` holds the
standard deviation of each code (``s_k / sqrt(N - 1)``, the square root of the explained variance), used to
sample new faces ``z ~ N(0, diag(stddev^2))``. :meth:`PCAModel.to_linear_model` exports the model as a
:class:`~morphable.data.linear.LinearFaceModel` with shape basis ``P`` and deviations ``stddev`` (its
coefficients are ``z / stddev``), which ``morphable fit-linear`` and ``morphable data linear`` read once saved
with ``save_npz``.

Exact SVD is used when ``min(N, 3V) <= 4000``; otherwise a randomised SVD (Halko et al. 2011,
oversampling 20, 4 power iterations with re-orthonormalisation), whose error at these sizes is far
below float32 precision of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from morphable.data.linear import LinearFaceModel

EXACT_SVD_LIMIT = 4000


@dataclass
class PCAModel:
    """``mean (V, 3)``, ``components (n_z, V, 3)`` orthonormal, ``stddev (n_z,)``."""

    mean: np.ndarray
    components: np.ndarray
    stddev: np.ndarray

    @property
    def latent_size(self) -> int:
        return len(self.components)

    @classmethod
    def fit(cls, vertices: np.ndarray, latent_size: int, seed: int = 0) -> "PCAModel":
        """Fit on training meshes ``(N, V, 3)``; ``latent_size`` is capped at ``min(N - 1, 3V)``."""
        x = np.asarray(vertices, dtype=np.float64).reshape(len(vertices), -1)
        mean = x.mean(axis=0)
        x = x - mean
        k = int(min(latent_size, max(len(x) - 1, 1), x.shape[1]))
        if min(x.shape) <= EXACT_SVD_LIMIT:
            _, s, vt = np.linalg.svd(x, full_matrices=False)
        else:
            s, vt = _randomised_svd(x, k, np.random.default_rng(seed))
        s, vt = s[:k], vt[:k]
        stddev = s / np.sqrt(max(len(x) - 1, 1))
        shape = vertices.shape[1:]
        return cls(mean.reshape(shape).astype(np.float32), vt.reshape((k, *shape)).astype(np.float32),
                   stddev.astype(np.float32))

    def encode(self, vertices: np.ndarray) -> np.ndarray:
        """``(N, V, 3)`` -> codes ``(N, n_z)``."""
        x = np.asarray(vertices, dtype=np.float64).reshape(len(vertices), -1) - self.mean.reshape(-1)
        return x @ self.components.reshape(self.latent_size, -1).T.astype(np.float64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes ``(N, n_z)`` -> ``(N, V, 3)`` float32."""
        p = self.components.reshape(self.latent_size, -1).astype(np.float64)
        x = np.asarray(codes, dtype=np.float64) @ p + self.mean.reshape(-1)
        return x.reshape((len(codes), *self.mean.shape)).astype(np.float32)

    def reconstruct(self, vertices: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(vertices))

    def to_linear_model(self, faces: np.ndarray, unit: str, name: str = "PCA") -> LinearFaceModel:
        """The linear model ``mean + sum_k a_k stddev_k P_k`` (``a = z / stddev ~ N(0, I)``) on the template
        ``faces (F, 3)``, in the training data's ``unit``; no expression basis."""
        from morphable.data.linear import LinearFaceModel

        return LinearFaceModel(self.mean, self.components, faces, unit, shape_std=self.stddev, name=name)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "components": self.components, "stddev": self.stddev}

    @classmethod
    def from_state(cls, state: dict) -> "PCAModel":
        return cls(*(np.asarray(state[k].numpy() if hasattr(state[k], "numpy") else state[k])
                     for k in ("mean", "components", "stddev")))


def _randomised_svd(x: np.ndarray, k: int, rng: np.random.Generator, oversample: int = 20,
                    power_iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` singular values and right singular vectors of ``x (N, D)``."""
    q, _ = np.linalg.qr(x @ rng.standard_normal((x.shape[1], min(k + oversample, min(x.shape)))))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(x.T @ q)
        q, _ = np.linalg.qr(x @ q)
    _, s, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    return s, vt
