"""Expression transfer between two heads of an expression run (thesis 6.4.1): the expression code of head A
decoded on the identity code of head B,

    x_posed = x + F_ex(x, z_ex^A, z_id^B)   for x on {f_id(x, z_id^B) = 0}.

The deformation network also takes the identity code, so the same expression code adapts to B's shape. A head
is a training sample of the run (index or name) or a posed point cloud file, whose codes are fitted first
(:meth:`morphable.implicit.expression_model.ExpressionModel.fit`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from morphable.errors import input_error

CLOUD_SUFFIXES = (".ply", ".obj")


def head_codes(model, head: str, steps: int, refine_steps: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(z_id, z_ex, record)`` of a head: a training sample (index or name) or a point cloud file (fitted)."""
    from morphable.io import read_mesh

    if Path(head).suffix.lower() in CLOUD_SUFFIXES:
        if not Path(head).is_file():
            raise input_error(head, "no such point cloud")
        started = time.perf_counter()
        fit = model.fit(read_mesh(head).vertices, steps, refine_steps, source=head)
        return fit.identity, fit.expression, {"head": head, "kind": "fitted cloud", "energy_last": fit.energy[-1],
                                              "converged_last": fit.converged[-1],
                                              "fit_seconds": round(time.perf_counter() - started, 3)}
    sample = int(head) if head.lstrip("-").isdigit() else head
    z_id, z_ex = model.sample_codes(sample)
    return z_id, z_ex, {"head": head, "kind": "training sample", "sample": model.names[model.sample_index(sample)]}


def transfer_run(run_path: str | os.PathLike, source: str, target: str, out: str | os.PathLike,
                 resolution: int = 256, steps: int = 500, refine_steps: int = 200,
                 device: str = "auto") -> dict[str, Any]:
    """Put the expression of ``source`` on the identity of ``target`` and write into ``out``: ``source.ply``,
    ``target.ply`` (both heads as reconstructed), ``transfer.ply`` (the result), ``target_neutral.ply``,
    ``transfer.png`` (side by side), ``codes.safetensors`` and ``transfer.json``; returns that JSON's content.
    Meshes are in the training data's units."""
    from morphable.implicit.experiment import load
    from morphable.io import atomic_folder, save_weights, write_json, write_ply
    from morphable.runs import Run
    from morphable.viz import mesh_strip

    model = load(Run.open(run_path), device)
    if not hasattr(model, "on_identity"):
        raise input_error(run_path, f"transfer needs an expression run, not a '{model.method}' run")
    a_id, a_ex, a_info = head_codes(model, source, steps, refine_steps)
    b_id, b_ex, b_info = head_codes(model, target, steps, refine_steps)
    meshes = {"source": model.extract((a_id, a_ex), resolution), "target": model.extract((b_id, b_ex), resolution),
              "target_neutral": model.neutral(b_id, resolution, normalised=False),
              "transfer": model.extract((b_id, a_ex), resolution)}
    empty = [name for name, (_, faces) in meshes.items() if len(faces) == 0]
    if empty:
        raise input_error(run_path, f"no surface inside the unit ball for {', '.join(empty)}")
    info = {"run": str(run_path), "source": a_info, "target": b_info, "resolution": resolution, "unit": model.unit,
            "files": {name: f"{name}.ply" for name in meshes}}
    with atomic_folder(out) as folder:
        for name, (vertices, faces) in meshes.items():
            write_ply(folder / f"{name}.ply", vertices, faces)
        mesh_strip(folder / "transfer.png", [meshes[k] for k in ("source", "target_neutral", "target", "transfer")],
                   ["source (expression)", "target neutral", "target", "target with source's expression"], columns=4)
        codes = {"source_identity": a_id, "source_expression": a_ex, "target_identity": b_id, "target_expression": b_ex}
        save_weights(folder / "codes.safetensors", {k: v.detach().cpu().clone() for k, v in codes.items()},
                     {"run": str(run_path)})
        write_json(folder / "transfer.json", info)
    return info
