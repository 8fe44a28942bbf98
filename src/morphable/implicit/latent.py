"""Latent space of a trained implicit run: samples of the Gaussian of its code table
(:mod:`morphable.latent`), interpolation between two training codes, and the run-level
``morphable sample`` / ``morphable interpolate``.

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
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from morphable.errors import MorphableError, input_error
from morphable.latent import fit_code_gaussian, interpolate_codes
from morphable.viz import mesh_strip


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
    from morphable.implicit.model import check_resolution

    check_resolution(resolution)
    if out.exists() and not out.is_dir():
        raise input_error(out, "exists and is not a folder")


def _extract_and_write(model, codes: torch.Tensor, similarities: Sequence[Any], out: Path, prefix: str,
                       labels: Sequence[str], resolution: int, progress: bool, display: Path
                       ) -> tuple[list[tuple[np.ndarray, np.ndarray] | None], list[dict[str, Any]]]:
    """Extract every code of ``codes`` (n, Z), map it to source units with its similarity and write
    ``out/<prefix>_XX.ply`` (progress names ``display``, the folder ``out`` becomes); a code without a level set
    in [-1, 1]^3 writes no file. Returns the meshes
    (None when empty) and one record per code (file, counts, seconds, evaluated fraction). ``model``: an
    :class:`~morphable.implicit.model.ImplicitModel`."""
    from morphable.io import write_ply

    meshes: list[tuple[np.ndarray, np.ndarray] | None] = []
    records = []
    for i, code in enumerate(codes):
        started = time.perf_counter()
        vertices, faces = model.extract(code, resolution, normalised=True)
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
                        "evaluated_fraction": round(model.last_extraction.fraction, 5)})
        if progress:
            shown = f"{len(vertices)} vertices, {len(faces)} faces" if len(faces) else "no surface in [-1, 1]^3"
            print(f"{prefix} {i + 1}/{len(codes)} ({labels[i]}): {shown}, {seconds:.2f} s"
                  f"{'  ->  ' + str(display / name) if len(faces) else ''}", flush=True)
    return meshes, records


def _load(run_path: Path, device: str, subject: str | None = None, sample: int | None = None):
    """The run's model; for an expression run its expression codes on one identity: ``subject`` (a name), else
    the subject of training sample ``sample``, else the first subject."""
    from morphable.implicit.experiment import load
    from morphable.runs import Run

    model = load(Run.open(run_path), device)
    if hasattr(model, "on_identity"):
        if subject is None and sample is not None and 0 <= sample < model.n_codes:
            return model.on_identity(model.subject_of[sample])
        return model.on_identity(subject if subject is not None else 0)
    if subject is not None:
        raise input_error(run_path, "--subject applies to expression runs")
    return model


def _identity_entry(model) -> dict[str, str]:
    """``{"subject": name}`` for the fixed identity of an expression run's codes, else nothing."""
    return {"subject": model.model.subjects[model.subject]} if hasattr(model, "subject") else {}


def sample_run(run_path: str | os.PathLike, out: str | os.PathLike, n: int = 8, resolution: int = 128,
               seed: int = 0, device: str = "auto", shrinkage: float | None = None,
               progress: bool = True, subject: str | None = None) -> dict[str, Any]:
    """Draw ``n`` codes from the Gaussian of the run's learned codes, extract and write them into ``out``:
    ``sample_XX.ply`` (training data's units), ``codes.safetensors`` (``codes`` (n, Z), after the max-norm
    renormalisation), ``samples.png`` and ``samples.json`` (the sampling settings, the shrinkage, per-sample
    counts and seconds); returns that JSON's content. An expression run samples expression codes on the
    identity of ``subject`` (default: its first subject)."""
    from morphable.io import atomic_folder, save_weights, write_json

    run_path, out = Path(run_path), Path(out)
    if n < 1:
        raise MorphableError(f"--n must be at least 1, got {n}")
    _check_options(resolution, out)
    model = _load(run_path, device, subject)
    table = model.codes
    gaussian = fit_code_gaussian(table, shrinkage)
    codes, clipped = renormalise_codes(gaussian.sample(n, seed).to(table.dtype),
                                       getattr(model.config.model, "max_norm", None))
    similarity = blend_similarities(model.similarities, [1.0] * model.n_codes)
    started = time.perf_counter()
    labels = [f"sample {i}" for i in range(n)]
    with atomic_folder(out) as folder:
        meshes, records = _extract_and_write(model, codes, [similarity] * n, folder, "sample", labels, resolution,
                                             progress, out)
        seconds = time.perf_counter() - started
        save_weights(folder / "codes.safetensors", {"codes": codes.cpu()},
                     {"run": str(run_path), "seed": str(seed), "shrinkage": repr(gaussian.shrinkage)})
        mesh_strip(folder / "samples.png", meshes, labels, columns=4)
        info = {"run": str(run_path), "method": model.method, "n": n, "seed": seed, "resolution": resolution,
                "device": str(table.device), "latent": gaussian.dim, "n_training_codes": model.n_codes,
                "shrinkage": gaussian.shrinkage, "code_spread": float(gaussian.covariance.trace()),
                "renormalised_to_max_norm": clipped, "unit": model.unit, "samples": records,
                "seconds_extraction": round(seconds, 3), "seconds_per_sample": round(seconds / n, 3),
                **_identity_entry(model)}
        write_json(folder / "samples.json", info)
    return info


def interpolate_run(run_path: str | os.PathLike, a: int, b: int, out: str | os.PathLike, steps: int = 7,
                    resolution: int = 128, device: str = "auto", progress: bool = True,
                    subject: str | None = None) -> dict[str, Any]:
    """Mesh strip between training codes ``a`` and ``b`` of a run: ``interp_XX.ply`` for
    ``t = 0, 1/(steps-1), ..., 1`` (training data's units), ``codes.safetensors`` (``codes`` (steps, Z)),
    ``interpolation.png`` and ``interpolation.json``; returns that JSON's content. An expression run blends
    the expression codes of samples ``a`` and ``b`` on one identity: ``subject``'s, by default sample ``a``'s."""
    from morphable.io import atomic_folder, save_weights, write_json

    run_path, out = Path(run_path), Path(out)
    if steps < 2:
        raise MorphableError(f"--n must be at least 2, got {steps}")
    _check_options(resolution, out)
    model = _load(run_path, device, subject, a)
    for flag, index in (("--source", a), ("--target", b)):
        if not 0 <= index < model.n_codes:
            raise input_error(run_path, f"{flag} {index} out of range: the run has codes 0..{model.n_codes - 1}")
    codes = interpolate_codes(model.codes[a], model.codes[b], steps)
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64).tolist()
    sims = [blend_similarities([model.similarities[a], model.similarities[b]], [1.0 - t, t]) for t in ts]
    names = [model.names[i] for i in (a, b)]
    labels = [f"{names[0]} (t=0)" if i == 0 else f"{names[1]} (t=1)" if i == steps - 1 else f"t={t:.2f}"
              for i, t in enumerate(ts)]
    started = time.perf_counter()
    with atomic_folder(out) as folder:
        meshes, records = _extract_and_write(model, codes, sims, folder, "interp", labels, resolution, progress, out)
        seconds = time.perf_counter() - started
        save_weights(folder / "codes.safetensors", {"codes": codes.cpu()},
                     {"run": str(run_path), "a": str(a), "b": str(b)})
        mesh_strip(folder / "interpolation.png", meshes, labels, columns=steps)
        info = {"run": str(run_path), "method": model.method, "a": a, "b": b, "names": names, "steps": steps,
                "t": ts, "resolution": resolution, "device": str(model.codes.device), "unit": model.unit,
                "meshes": records, "seconds_extraction": round(seconds, 3), **_identity_entry(model)}
        write_json(folder / "interpolation.json", info)
    return info
