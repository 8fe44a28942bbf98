"""Area-weighted vertex normals: the one implementation, for numpy arrays and torch tensors.

torch is imported when the function runs, so importing this module (and ``mesh.qem``) stays torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def vertex_normals(vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Unit area-weighted vertex normals.

    ``n_v = normalise(sum_{f ni v} (x_1 - x_0) x (x_2 - x_0))`` over the faces ``f = (x_0, x_1, x_2)`` that
    contain ``v``: the cross product has length twice the face area, so larger faces weigh more. A vertex
    in no face (or whose sum vanishes) gets a zero normal. Differentiable for torch input.

    Args:
        vertices: ``(V, 3)`` float, numpy or torch (torch also ``(..., V, 3)``: a batch sharing ``faces``).
        faces: ``(F, 3)`` integer, counter-clockwise seen from outside.

    Returns:
        ``(V, 3)`` (``(..., V, 3)``) unit normals: a float64 numpy array for numpy ``vertices``, else a tensor with the
        dtype and device of ``vertices``.
    """
    import torch

    as_numpy = not isinstance(vertices, torch.Tensor)
    v = torch.from_numpy(np.asarray(vertices, dtype=np.float64)) if as_numpy else vertices
    f = torch.as_tensor(faces, dtype=torch.long, device=v.device)
    flat = v.reshape(-1, v.shape[-2], 3)  # a batch sharing the faces: (B, V, 3) indexed as (B V, 3)
    index = f + (torch.arange(flat.shape[0], device=v.device) * v.shape[-2])[:, None, None]  # (B, F, 3)
    tri = flat.reshape(-1, 3)[index]
    cross = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    acc = torch.zeros_like(flat).reshape(-1, 3)
    for k in range(3):
        acc = acc.index_add(0, index[..., k].reshape(-1), cross.reshape(-1, 3))
    acc = acc.view(v.shape)
    norm = torch.linalg.vector_norm(acc, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    out = acc / norm
    return out.numpy() if as_numpy else out
