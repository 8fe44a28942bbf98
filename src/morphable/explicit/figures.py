"""Pictures of trained mesh models: latent interpolation strips and pooling (mapping) matrices.

* Interpolation: ``z(t) = (1 - t) E(a) + t E(b)`` for ``t`` in ``[0, 1]``, decoded to meshes, drawn
  as one strip and written as PLY files.
* Mapping matrices (Deep3DMM supplement Figs. 3-4): for every learned aggregation module, the QEM
  matrix next to the learned (fused) matrix, as images of the absolute values.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from torch import nn

from morphable.io import write_ply
from morphable.runs import Run
from morphable.viz import mesh_grid, pyplot, save_figure


class Codec(Protocol):
    def encode(self, vertices: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray: ...


def interpolation_strip(run: Run, codec: Codec, a: np.ndarray, b: np.ndarray, faces: np.ndarray,
                        labels: tuple[str, str], steps: int = 8) -> np.ndarray:
    """Decode ``steps`` codes between the codes of meshes ``a`` and ``b`` ``(V, 3)``; returns ``(steps, V, 3)``."""
    codes = codec.encode(np.stack([a, b]))
    t = np.linspace(0.0, 1.0, steps)[:, None]
    meshes = codec.decode((1 - t) * codes[0] + t * codes[1])
    titles = [f"t = {x:.2f}" for x in t[:, 0]]
    titles[0], titles[-1] = f"{labels[0]}\n(t = 0)", f"{labels[1]}\n(t = 1)"
    mesh_grid(run.file("plots", "latent_interpolation.png"), list(meshes), faces, titles=titles, columns=steps,
              suptitle="latent interpolation between two test meshes")
    for i, mesh in enumerate(meshes):
        write_ply(run.file("meshes", f"interpolation_{i:02d}.ply"), mesh, faces)
    return meshes


def learned_aggregations(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Deep3DMM aggregation with learned keys and queries."""
    from morphable.explicit.pooling import LearnedAggregation

    return [(name, m) for name, m in network.named_modules()
            if isinstance(m, LearnedAggregation) and m.mode != "qem"]


def mapping_matrices_figure(run: Run, network: nn.Module, max_size: int = 1300) -> bool:
    """Draw QEM vs learned mapping matrices of the transitions up to ``max_size`` columns; False if none."""
    plt = pyplot()

    modules = [(n, m) for n, m in learned_aggregations(network) if max(m.n_queries, m.n_keys) <= max_size]
    if not modules:
        return False
    fig, axes = plt.subplots(2, len(modules), figsize=(3.2 * len(modules), 6.4), squeeze=False)
    for col, (name, module) in enumerate(modules):
        learned = np.abs(module.frozen_matrix().toarray())
        qem = np.abs(module.qem.to_scipy().toarray()) if hasattr(module, "qem") else np.zeros_like(learned)
        for row, (matrix, title) in enumerate(((qem, "QEM"), (learned, "learned (fused)"))):
            ax = axes[row, col]
            ax.imshow(matrix, aspect="auto", cmap="magma", interpolation="nearest",
                      vmax=max(float(np.percentile(matrix[matrix > 0], 99)) if (matrix > 0).any() else 1.0, 1e-6))
            ax.set_title(f"{name}\n{title} {matrix.shape[0]}x{matrix.shape[1]}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("mapping matrices: rows = output vertices, columns = input vertices")
    fig.tight_layout()
    save_figure(fig, run.file("plots", "mapping_matrices.png"))
    return True
