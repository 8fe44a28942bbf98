"""morphable: learn, fit, evaluate and generate 3D face and head models.

The Python API (``docs/api.md``). Importing ``morphable`` is cheap: each name below is imported on first use.

- ``load_run(path, device="auto")``: the trained model of a run folder; mesh models
  (:class:`~morphable.explicit.model.MeshModel`: ``encode`` / ``decode`` / ``reconstruct`` / ``sample`` /
  ``interpolate``) or implicit models (:class:`~morphable.implicit.model.ImplicitModel`: ``sdf`` /
  ``extract`` / ``fit``).
- ``PRESETS`` (config factories) for :func:`morphable.experiment.train`, the run driver.
- ``read_mesh`` / ``write_mesh`` / ``Mesh``: OBJ and PLY files, vertex order kept exactly.
- ``MeshHierarchy``: QEM down/up-sampling matrices, spirals and Laplacians of a template.
- ``LinearFaceModel`` / ``load_linear_model``: linear 3DMMs (ICT-FaceKit, generic npz, BFM h5, PCA exports).
- Layers for your own networks, plain ``nn.Module``s on ``(B, V, C)`` features: ``ChebConv``, ``SpiralConv``,
  ``Pool`` (sparse down/up-sampling) and ``LearnedAggregation`` (Deep3DMM attention pooling), and
  ``MeshAutoencoder``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_run": "morphable.experiment",
    "PRESETS": "morphable.config",
    "ExperimentConfig": "morphable.config",
    "Mesh": "morphable.io",
    "read_mesh": "morphable.io",
    "write_mesh": "morphable.io",
    "MeshHierarchy": "morphable.mesh.hierarchy",
    "LinearFaceModel": "morphable.data.linear",
    "load_linear_model": "morphable.data.linear",
    "ChebConv": "morphable.explicit.layers",
    "SpiralConv": "morphable.explicit.layers",
    "Pool": "morphable.explicit.layers",
    "LearnedAggregation": "morphable.explicit.pooling",
    "MeshAutoencoder": "morphable.explicit.autoencoder",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'morphable' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
