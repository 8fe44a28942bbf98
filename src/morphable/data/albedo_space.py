"""A linear albedo space: PCA of UV albedo textures (HRN's coarse level; the analogue of BFM's albedo model).

From ``N`` textures ``t_i (3, H, W)`` in linear RGB on one UV chart (the photo generator's per-identity
textures of the *training* identities, ``albedo/<identity>.png``, sRGB on disk), flattened to ``x_i (3 H W,)``:

    mu = (1 / N) sum_i x_i,      X = [x_1 - mu, ..., x_N - mu]^T = U S V^T   (thin SVD)
    sigma_k = S_k / sqrt(N - 1), b_k = V_k                                     (k < K)
    albedo(c) = mu + sum_k c_k sigma_k b_k,       c ~ N(0, I)

so, as for the shape modes of :class:`~morphable.data.linear.LinearFaceModel`, one coefficient unit is one
standard deviation of the training textures, and ``c = 0`` is the mean albedo. The orthogonal projection of
a texture is ``c_k = b_k . (x - mu) / sigma_k``. ``K <= N - 1`` (the centred textures span at most ``N - 1``
directions). Textures are box-filtered to ``height`` rows (a power-of-two factor of the stored size) first:
the coarse level renders at crop resolution, so a 64-row chart is plenty and the basis stays small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphable.data.albedo import srgb_to_linear
from morphable.errors import MorphableError, input_error

RANK_TOLERANCE = 1e-9  # directions whose singular value is below this fraction of the largest are not spanned


@dataclass
class AlbedoSpace:
    """``mean (3, H, W)``, ``basis (K, 3, H, W)`` orthonormal when flattened, ``std (K,)`` (module docstring)."""

    mean: np.ndarray
    basis: np.ndarray
    std: np.ndarray

    @property
    def size(self) -> int:
        """``K``, the number of coefficients."""
        return len(self.std)

    @classmethod
    def fit(cls, textures: np.ndarray, components: int) -> "AlbedoSpace":
        """PCA of ``textures (N, 3, H, W)`` (linear RGB) keeping ``components`` directions."""
        x = np.asarray(textures, dtype=np.float64)
        if x.ndim != 4 or x.shape[1] != 3:
            raise MorphableError(f"albedo textures must be (N, 3, H, W), got {x.shape}")
        n = len(x)
        if not 1 <= components <= n - 1:
            raise MorphableError(f"an albedo space of {n} textures has 1..{n - 1} components, not {components}")
        if not np.isfinite(x).all():
            raise MorphableError("albedo textures contain NaN or Inf")
        flat = x.reshape(n, -1)
        mean = flat.mean(axis=0)
        _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
        std = s[:components] / np.sqrt(n - 1)
        if not (std > RANK_TOLERANCE * s[0] / np.sqrt(n - 1)).all():
            raise MorphableError(f"the {n} albedo textures span fewer than {components} directions")
        return cls(mean.reshape(x.shape[1:]), vt[:components].reshape(components, *x.shape[1:]), std)

    def texture(self, coefficients):
        """``coefficients (B, K)`` (numpy or torch) -> ``(B, 3, H, W)`` albedo ``mu + sum_k c_k sigma_k b_k``;
        a torch input gives a differentiable torch output on its device and dtype."""
        import torch

        if torch.is_tensor(coefficients):
            c = coefficients
            basis = torch.as_tensor(self.basis.reshape(self.size, -1), device=c.device, dtype=c.dtype)
            std = torch.as_tensor(self.std, device=c.device, dtype=c.dtype)
            mean = torch.as_tensor(self.mean.reshape(-1), device=c.device, dtype=c.dtype)
            return (mean + (c * std) @ basis).reshape(len(c), *self.mean.shape)
        c = np.asarray(coefficients, dtype=np.float64)
        return (self.mean.reshape(-1) + (c * self.std) @ self.basis.reshape(self.size, -1)).reshape(len(c), *self.mean.shape)

    def project(self, textures: np.ndarray) -> np.ndarray:
        """``textures (N, 3, H, W)`` -> ``(N, K)`` coefficients of their orthogonal projection."""
        x = np.asarray(textures, dtype=np.float64).reshape(len(textures), -1) - self.mean.reshape(-1)
        return x @ self.basis.reshape(self.size, -1).T / self.std

    def tensors(self, prefix: str = "albedo_") -> dict[str, np.ndarray]:
        """Named float32 arrays for a safetensors file (:meth:`from_tensors` reads them back)."""
        return {f"{prefix}mean": self.mean.astype(np.float32), f"{prefix}basis": self.basis.astype(np.float32),
                f"{prefix}std": self.std.astype(np.float32)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str = "albedo_") -> "AlbedoSpace":
        """The inverse of :meth:`tensors`."""
        try:
            return cls(*(np.asarray(tensors[f"{prefix}{k}"], dtype=np.float64) for k in ("mean", "basis", "std")))
        except KeyError as error:
            raise MorphableError(f"no albedo space in these weights (missing {error.args[0]})") from None


def box_downsample(texture: np.ndarray, height: int) -> np.ndarray:
    """``(3, H, W)`` -> ``(3, height, W height / H)`` by averaging ``f x f`` blocks, ``f = H / height`` an integer."""
    _, H, W = texture.shape
    if height < 1 or H % height or W % (H // height):
        raise MorphableError(f"a {H} x {W} texture cannot be box-filtered to {height} rows")
    f = H // height
    return texture.reshape(3, height, f, W // f, f).mean(axis=(2, 4))


def read_albedo_textures(folder: str | os.PathLike, identities, height: int) -> np.ndarray:
    """``albedo/<identity>.png`` (4-digit ids, 8-bit sRGB, as ``morphable data photos`` writes) of the given
    identities, in linear RGB, box-filtered to ``height`` rows: ``(N, 3, height, W')``."""
    from PIL import Image

    textures = []
    for j in identities:
        path = Path(folder) / f"{int(j):04d}.png"
        try:
            with Image.open(path) as image:
                srgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        except (OSError, ValueError) as error:
            raise input_error(path, f"cannot read the albedo texture ({error})") from None
        texture = box_downsample(srgb_to_linear(srgb).transpose(2, 0, 1), height)
        if textures and texture.shape != textures[0].shape:
            raise input_error(path, f"texture of {srgb.shape[1]} x {srgb.shape[0]} differs from the others")
        textures.append(texture)
    if not textures:
        raise MorphableError(f"{folder}: no identities given to build an albedo space from")
    return np.stack(textures)
