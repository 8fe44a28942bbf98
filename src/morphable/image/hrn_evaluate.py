"""Scoring HRN's levels on a synthetic photo dataset with ground truth (the MICC protocol of the HRN supplement's
Table 1, on held-out identities).

For every photo of a split: the crop made from its ground-truth 2D landmarks, the levels predicted from it,
and per level the point-to-plane distance (mm) from every ground-truth face-region vertex (the tile's fully
faded-in skin; the photo's mesh in the model frame, mid-band detail included) to the aligned predicted mesh
(:func:`morphable.metrics.point_to_plane_distance`: rigid ICP from the identity, since prediction and ground
truth share the model frame, leaving out pairs farther than 1 cm):

* ``coarse``: the 3DMM mesh; ``mid``: coarse + deformation map; ``fine``: the mid mesh subdivided once and
  displaced along its normals by the displacement map (:meth:`HRNModel.fine_mesh`);
* ``mid_subdivided``: the mid mesh subdivided without displacement, the control for ``fine`` (subdivision
  alone changes a vertex-plane distance: the nearest vertex is nearer).

Reference rows, scored the same way: ``mean_face`` (the linear model's mean, all coefficients zero: what a
regressor that learnt nothing of the identity gives), ``gt_coefficients`` (the photo's own identity and
expression coefficients: the best a coarse level can do, the mid band left over) and, on datasets with detail,
``gt_coefficients_mid`` (that mesh plus the identity's ground-truth deformation map,
:mod:`morphable.image.hrn_targets`: the best a map of this resolution can do).

Each photo's mean distance is one sample; the summary gives their mean and standard deviation (the
supplement's mean +- std over scans), and ``hrn.csv`` the per-photo values.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

LEVELS = ("coarse", "mid", "mid_subdivided", "fine")
REFERENCES = ("mean_face", "gt_coefficients", "gt_coefficients_mid")
ICP_REJECT_CM = 1.0


def gt_crop(dataset, i: int, size: int, fill: float) -> np.ndarray:
    """``(3, S, S)`` float32 crop of photo ``i`` from its ground-truth landmarks (the template at ``fill``)."""
    from morphable.data.voxels import crop_image
    from morphable.image.align import similarity_transform, template_landmarks

    A = similarity_transform(dataset.annotations["landmarks_2d"][i], template_landmarks(size, fill))
    return crop_image(dataset.image(i), A, size)


def model_frame_mesh(dataset, i: int) -> np.ndarray:
    """Photo ``i``'s ground-truth mesh in the model frame, ``R^T (X - t)``."""
    pose = dataset.annotations["pose"][i]
    return (dataset.mesh(i).astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]


def level_distances(model, prediction, b: int, gt_points: np.ndarray, unit: str) -> dict[str, float]:
    """Mean point-to-plane distance (mm) of each level of prediction ``b`` (module docstring)."""
    from morphable.mesh.subdivide import subdivide_textured
    from morphable.metrics import point_to_plane_distance

    faces = model.faces
    fine_v, fine_f = model.fine_mesh(prediction.mid[b], prediction.high_map[b])
    sub_v, sub_f, _, _ = subdivide_textured(prediction.mid[b], faces, model.geometry.tile.uvs,
                                            model.face.face_uvs.cpu().numpy())
    meshes = {"coarse": (prediction.coarse[b], faces), "mid": (prediction.mid[b], faces),
              "mid_subdivided": (sub_v, sub_f), "fine": (fine_v, fine_f)}
    reject = ICP_REJECT_CM * model.face.cm
    return {level: point_to_plane_distance(v, f, gt_points, unit=unit, init="identity",
                                           reject_distance=reject).mean_mm for level, (v, f) in meshes.items()}


def reference_meshes(model, dataset, i: int, targets) -> dict[str, np.ndarray]:
    """The module docstring's reference rows for photo ``i`` (model frame); ``targets``: a
    :class:`~morphable.image.hrn_targets.DetailTargets` or None."""
    import torch

    face = model.face
    a = dataset.annotations
    with torch.no_grad():
        shape = face.shape(torch.as_tensor(a["shape"][i])[None].float().to(face.basis.device),
                           torch.as_tensor(a["expression"][i])[None].float().to(face.basis.device))[0]
    gt = shape.double().cpu().numpy()
    out = {"mean_face": face.mean.double().cpu().numpy(), "gt_coefficients": gt}
    if targets is not None:
        tile = model.geometry.tile
        m = torch.as_tensor(targets.mid(int(a["identity"][i])), dtype=torch.float64)[None]
        out["gt_coefficients_mid"] = tile.deform(torch.as_tensor(gt)[None], m)[0].numpy()
    return out


def evaluate_hrn(model, dataset, out: str | Path, *, split: str = "test", limit: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """The module docstring's scores of ``model`` (:class:`~morphable.image.hrn_model.HRNModel`) on ``split``;
    ``hrn.csv`` and ``levels.png`` (photo and the three levels' renders of the first photos) in ``out``."""
    from morphable.errors import MorphableError

    indices = dataset.indices(split)[:limit]
    if not len(indices):
        raise MorphableError(f"{dataset.root}: the {split} split holds no photos")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from morphable.image.hrn_targets import DetailTargets
    from morphable.metrics import point_to_plane_distance

    region = model.geometry.tile.weights >= 1
    unit = dataset.info.get("unit", "cm")
    targets = None
    if "detail" in dataset.info:
        targets = DetailTargets(dataset.root, model.geometry.tile, model.geometry.mid_size, model.geometry.high_size,
                                model.face.cm)
    rows: list[dict[str, Any]] = []
    shown = []
    chunk = model.chunk
    for start in range(0, len(indices), chunk):
        ids = indices[start:start + chunk]
        crops = np.stack([gt_crop(dataset, i, model.size, model.fill) for i in ids])
        prediction = model.predict(crops)
        for b, i in enumerate(ids):
            gt_points = model_frame_mesh(dataset, i)[region]
            references = {name: point_to_plane_distance(v, model.faces, gt_points, unit=unit, init="identity",
                                                        reject_distance=ICP_REJECT_CM * model.face.cm).mean_mm
                          for name, v in reference_meshes(model, dataset, i, targets).items()}
            rows.append({"index": int(i), "identity": int(dataset.annotations["identity"][i]),
                         **level_distances(model, prediction, b, gt_points, unit), **references})
            if len(shown) < 4:
                shown.append((crops[b], {k: v[b] for k, v in prediction.renders.items()}))
        if progress:
            print(f"  scored {min(start + chunk, len(indices))} / {len(indices)} photos", flush=True)
    _write_csv(out / "hrn.csv", rows)
    _plot_levels(out / "levels.png", shown)
    levels = {level: {"mean": float(np.mean([r[level] for r in rows])), "std": float(np.std([r[level] for r in rows])),
                      "count": len(rows)} for level in LEVELS}
    references = {name: {"mean": float(np.mean([r[name] for r in rows])), "std": float(np.std([r[name] for r in rows]))}
                  for name in REFERENCES if name in rows[0]}
    return {"split": split, "photos": len(rows), "unit": "mm", "protocol": "point-to-plane after rigid ICP, GT face "
            "region, GT-landmark crops", "levels": levels, "references": references}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_levels(path: Path, shown: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(shown), 4, figsize=(8, 2 * len(shown)), squeeze=False)
    for row, (crop, renders) in zip(axes, shown):
        images = [crop.transpose(1, 2, 0), renders["coarse"], renders["mid"], renders["fine"]]
        for ax, image, title in zip(row, images, ("photo", "coarse", "coarse + mid", "coarse + mid + high")):
            ax.imshow(np.clip(image, 0, 1))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
