"""Latent space of a trained implicit run: a Gaussian fitted to the learned codes, unconditional samples,
linear interpolation between two codes, and the run-level ``morphable sample`` / ``morphable interpolate``.

Gaussian of the codes. The auto-decoder table holds N codes ``z_k`` (rows of ``Z``, (N, D)). With
``mu = mean_k z_k``, centred codes ``x_k = z_k - mu`` (rows of ``X``) and the maximum-likelihood covariance
``S = X^T X / N`` (rank at most N - 1, so singular whenever N <= D, the usual case: tens of heads and 512-d
codes), the fitted covariance is the shrinkage estimate

    Sigma = (1 - a) S + a m I,        m = tr(S) / D,

a convex blend of S and the isotropic covariance with the same total variance: ``tr(Sigma) = tr(S)`` for
every ``a``, so samples have the spread of the codes (the mean squared distance of a sample from ``mu`` is
``tr(S)``, that of the codes). ``a`` is the Ledoit-Wolf (2004) choice, which minimises the expected
Frobenius error of Sigma; with the scaled norm ``|A|^2 = tr(A A^T) / D``:

    d^2 = |S - m I|^2 = (|S|_F^2 - D m^2) / D,
    b^2 = min(d^2, (1 / N^2) sum_k |x_k x_k^T - S|^2) = min(d^2, (sum_k |x_k|^4 - N |S|_F^2) / (D N^2)),
    a   = b^2 / d^2                       (0 when d = 0).

Everything comes from the Gram matrix ``G = X X^T`` (N, N): ``|x_k|^2 = G_kk``, ``|S|_F^2 = |G|_F^2 / N^2``,
so fitting costs O(N^2 D) and no D x D matrix is formed. With many codes (N >> D) ``a -> 0`` and Sigma is
the sample covariance; with few ``a`` grows, and Sigma is positive definite whenever ``a > 0``. (Two codes
give ``x_1 = -x_2``, identical outer products, hence ``a = 0``: the samples then lie on the line through
the two codes.) Sampling never factorises Sigma: with ``e1 ~ N(0, I_N)``, ``e2 ~ N(0, I_D)``,

    z = mu + sqrt((1 - a) / N) X^T e1 + sqrt(a m) e2

has covariance ``(1 - a) X^T X / N + a m I = Sigma`` exactly, for any N and D (one code: ``z = mu``);
for N > D the (D, D) factor ``diag(s) V^T`` of the SVD ``X = U diag(s) V^T`` replaces X (same X^T X).
The network only ever sees codes renormalised to at most the table's ``max_norm`` (the embedding look-up
rescales longer rows), so samples are renormalised the same way before extraction.

Meshes are extracted with the exact narrow-band extraction of ``morphable extract`` and written in the
training data's units: a sample uses the shapes' common similarity (the shared normalisation of the
dataset; per-shape normalisations are averaged), the step ``t`` of an interpolation the blend
``(1 - t) T_a + t T_b`` of the two shapes' similarities (identical for a shared normalisation).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from morphable.errors import MorphableError, input_error
from morphable.viz import mesh_strip

MIN_RESOLUTION = 8


@dataclass
class CodeGaussian:
    """``N(mean, factor^T factor + isotropic_var I)``, fitted by :func:`fit_code_gaussian`.

    mean: (D,); factor: (R, D) with ``factor^T factor = (1 - a) S``: ``sqrt((1 - a) / N) X`` (R = N) for
    N <= D, else ``sqrt((1 - a) / N) diag(s) V^T`` from the SVD ``X = U diag(s) V^T`` (R = D);
    isotropic_var: ``a m``; shrinkage: ``a``. Tensors are float64 on the device of the codes.
    """

    mean: torch.Tensor
    factor: torch.Tensor
    isotropic_var: float
    shrinkage: float

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        """Sigma, (D, D) float64."""
        eye = torch.eye(self.dim, dtype=self.factor.dtype, device=self.factor.device)
        return self.factor.T @ self.factor + self.isotropic_var * eye

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` codes (n, D) float64, ``z = mean + factor^T e1 + sqrt(isotropic_var) e2``.

        The normal draws come from a CPU generator seeded with ``seed`` (so a seed gives the same codes on
        every device) and are moved to the device of ``mean``.
        """
        generator = torch.Generator().manual_seed(seed)
        e1 = torch.randn(n, self.factor.shape[0], generator=generator, dtype=torch.float64)
        e2 = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        e1, e2 = e1.to(self.mean.device), e2.to(self.mean.device)
        return self.mean + e1 @ self.factor + self.isotropic_var ** 0.5 * e2


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> float:
    """The Ledoit-Wolf weight ``a`` in [0, 1] of the identity target for centred rows ``centred`` (N, D)
    (see the module docstring); float64, from the smaller of ``X X^T`` and ``X^T X`` (same Frobenius norm)."""
    x = centred.double()
    n, d = x.shape
    sq = x.square().sum(dim=1)  # |x_k|^2
    small = x @ x.T if n <= d else x.T @ x
    s_fro2 = float(small.square().sum()) / n ** 2
    m = float(sq.sum()) / (n * d)
    d2 = (s_fro2 - d * m * m) / d
    if d2 <= 0.0:
        return 0.0
    b2 = (float(sq.square().sum()) - n * s_fro2) / (d * n * n)
    return min(max(b2, 0.0), d2) / d2


def fit_code_gaussian(codes: torch.Tensor, shrinkage: float | None = None) -> CodeGaussian:
    """Fit ``N(mu, (1 - a) S + a tr(S)/D I)`` to codes (N, D); ``shrinkage`` fixes ``a`` in [0, 1]
    (None: Ledoit-Wolf). See the module docstring for the maths."""
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise ValueError(f"codes must be (N, D) with N >= 1, got {tuple(codes.shape)}")
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    z = codes.detach().double()
    n, d = z.shape
    mean = z.mean(dim=0)
    centred = z - mean
    a = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    m = float(centred.square().sum()) / (n * d)
    if n > d:  # X = U diag(s) V^T: the (D, D) factor diag(s) V^T has the same F^T F = X^T X
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        centred = singular[:, None] * vh
    return CodeGaussian(mean, ((1.0 - a) / n) ** 0.5 * centred, a * m, a)


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes (steps, D) on the segment from ``a`` (D,) to ``b`` (D,): ``(1 - t) a + t b`` with
    ``t = i / (steps - 1)``; the first row is ``a`` and the last ``b`` exactly."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype, device=a.device)[:, None]
    return (1 - t) * a + t * b


def renormalise_codes(codes: torch.Tensor, max_norm: float | None) -> tuple[torch.Tensor, int]:
    """Rows of ``codes`` (n, D) longer than ``max_norm`` rescaled as the code table's look-up does
    (``z * max_norm / (|z| + 1e-7)``); returns the new codes and how many rows were rescaled."""
    if max_norm is None:
        return codes, 0
    out = codes.detach().clone()
    clipped = int((out.norm(dim=1) > max_norm).sum())
    torch.embedding_renorm_(out, torch.arange(len(out), device=out.device), max_norm, 2.0)
    return out, clipped


# --------------------------------------------------------------------------- runs


def blend_similarities(similarities: Sequence[Any], weights: Sequence[float]):
    """The similarity with the ``weights``-weighted mean scale and translation of ``similarities``
    (:class:`morphable.data.sdf.Similarity`); when they are all equal, that one unchanged."""
    from morphable.data.sdf import Similarity

    first = similarities[0]
    if all(s == first for s in similarities):
        return first
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    scale = float(np.dot(w, [s.scale for s in similarities]))
    translation = w @ np.asarray([s.translation for s in similarities], dtype=np.float64)
    return Similarity(scale, tuple(float(c) for c in translation))


def _check_options(resolution: int, out: Path) -> None:
    if resolution < MIN_RESOLUTION:
        raise MorphableError(f"--res must be at least {MIN_RESOLUTION}, got {resolution}")
    if out.exists() and not out.is_dir():
        raise input_error(out, "exists and is not a folder")


def _extract_and_write(method, codes: torch.Tensor, similarities: Sequence[Any], out: Path, prefix: str,
                       labels: Sequence[str], resolution: int, device: str, progress: bool
                       ) -> tuple[list[tuple[np.ndarray, np.ndarray] | None], list[dict[str, Any]]]:
    """Extract every code of ``codes`` (n, Z), map it to source units with its similarity and write
    ``<prefix>_XX.ply``; a code without a level set in [-1, 1]^3 writes no file. Returns the meshes
    (None when empty) and one record per code (file, counts, seconds, evaluated fraction)."""
    from morphable.implicit.experiment import extract_code_mesh
    from morphable.io import write_ply

    meshes: list[tuple[np.ndarray, np.ndarray] | None] = []
    records = []
    for i, code in enumerate(codes):
        started = time.perf_counter()
        vertices, faces, stats = extract_code_mesh(method, code.to(method.codes.weight.dtype), resolution, device)
        seconds = time.perf_counter() - started
        name = f"{prefix}_{i:02d}.ply"
        if len(faces):
            vertices = similarities[i].invert(vertices)
            write_ply(out / name, vertices, faces)
            meshes.append((vertices, faces))
        else:
            meshes.append(None)
        records.append({"file": name if len(faces) else None, "label": labels[i], "vertices": len(vertices),
                        "faces": len(faces), "seconds": round(seconds, 3),
                        "evaluated_fraction": round(stats.fraction, 5)})
        if progress:
            shown = f"{len(vertices)} vertices, {len(faces)} faces" if len(faces) else "no surface in [-1, 1]^3"
            print(f"{prefix} {i + 1}/{len(codes)} ({labels[i]}): {shown}, {seconds:.2f} s"
                  f"{'  ->  ' + str(out / name) if len(faces) else ''}", flush=True)
    return meshes, records


def sample_run(run_path: str | os.PathLike, out: str | os.PathLike, n: int = 8, resolution: int = 128,
               seed: int = 0, device: str = "cpu", shrinkage: float | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Draw ``n`` codes from the Gaussian of the run's learned codes, extract and write them into ``out``:
    ``sample_XX.ply`` (training data's units), ``codes.safetensors`` (``codes`` (n, Z), after the max-norm
    renormalisation), ``samples.png`` and ``samples.json`` (the sampling settings, the shrinkage, per-sample
    counts and seconds); returns that JSON's content."""
    from morphable.data.sdf import Similarity
    from morphable.implicit.experiment import load_implicit
    from morphable.io import save_weights, write_json

    run_path, out = Path(run_path), Path(out)
    if n < 1:
        raise MorphableError(f"--n must be at least 1, got {n}")
    _check_options(resolution, out)
    method, run, shapes = load_implicit(run_path, device)
    table = method.codes.weight.detach()
    gaussian = fit_code_gaussian(table, shrinkage)
    codes, clipped = renormalise_codes(gaussian.sample(n, seed).to(table.dtype), method.config.model.max_norm)
    sims = [Similarity.from_dict(s["similarity"]) for s in shapes["shapes"]]
    similarity = blend_similarities(sims, [1.0] * len(sims))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    labels = [f"sample {i}" for i in range(n)]
    meshes, records = _extract_and_write(method, codes, [similarity] * n, out, "sample", labels, resolution,
                                         device, progress)
    seconds = time.perf_counter() - started
    save_weights(out / "codes.safetensors", {"codes": codes.cpu()},
                 {"run": str(run.path), "seed": str(seed), "shrinkage": repr(gaussian.shrinkage)})
    mesh_strip(out / "samples.png", meshes, labels, columns=4)
    info = {"run": str(run.path), "method": method.config.method, "n": n, "seed": seed, "resolution": resolution,
            "device": device, "latent": gaussian.dim, "n_training_codes": int(table.shape[0]),
            "shrinkage": gaussian.shrinkage, "code_spread": float(gaussian.covariance.trace()),
            "renormalised_to_max_norm": clipped, "unit": shapes["unit"], "samples": records,
            "seconds_extraction": round(seconds, 3), "seconds_per_sample": round(seconds / n, 3)}
    write_json(out / "samples.json", info)
    return info


def interpolate_run(run_path: str | os.PathLike, a: int, b: int, out: str | os.PathLike, steps: int = 7,
                    resolution: int = 128, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Mesh strip between training codes ``a`` and ``b`` of a run: ``interp_XX.ply`` for
    ``t = 0, 1/(steps-1), ..., 1`` (training data's units), ``codes.safetensors`` (``codes`` (steps, Z)),
    ``interpolation.png`` and ``interpolation.json``; returns that JSON's content."""
    from morphable.data.sdf import Similarity
    from morphable.implicit.experiment import load_implicit
    from morphable.io import save_weights, write_json

    run_path, out = Path(run_path), Path(out)
    if steps < 2:
        raise MorphableError(f"--steps must be at least 2, got {steps}")
    _check_options(resolution, out)
    method, run, shapes = load_implicit(run_path, device)
    table = method.codes.weight.detach()
    for flag, index in (("--a", a), ("--b", b)):
        if not 0 <= index < len(table):
            raise input_error(run.weights_path, f"{flag} {index} out of range: the run has codes 0..{len(table) - 1}")
    codes = interpolate_codes(table[a], table[b], steps)
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64).tolist()
    end_sims = [Similarity.from_dict(shapes["shapes"][i]["similarity"]) for i in (a, b)]
    sims = [blend_similarities(end_sims, [1.0 - t, t]) for t in ts]
    names = [shapes["shapes"][i]["name"] for i in (a, b)]
    labels = [f"{names[0]} (t=0)" if i == 0 else f"{names[1]} (t=1)" if i == steps - 1 else f"t={t:.2f}"
              for i, t in enumerate(ts)]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meshes, records = _extract_and_write(method, codes, sims, out, "interp", labels, resolution, device, progress)
    seconds = time.perf_counter() - started
    save_weights(out / "codes.safetensors", {"codes": codes.cpu()}, {"run": str(run.path), "a": str(a), "b": str(b)})
    mesh_strip(out / "interpolation.png", meshes, labels, columns=steps)
    info = {"run": str(run.path), "method": method.config.method, "a": a, "b": b, "names": names, "steps": steps,
            "t": ts, "resolution": resolution, "device": device, "unit": shapes["unit"], "meshes": records,
            "seconds_extraction": round(seconds, 3)}
    write_json(out / "interpolation.json", info)
    return info
