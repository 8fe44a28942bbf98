"""Scoring single-image reconstructions on a synthetic photo dataset with ground truth (VRN's protocol).

For every photo of a split (held out by identity), in two settings: the crop made from the ground-truth 2D
landmarks (``gt``) and the crop made from landmarks detected on the photo (``detected``; a photo where the
detector finds no face is a failure, counted, not scored). The prediction's mesh (marching cubes, largest
component; :func:`~morphable.image.volume_mesh.volume_to_mesh`) and the ground-truth face region are put in the
same crop frame (:mod:`morphable.data.voxels`), and

    NME = (1/M) sum_{q in GT face region} min_p ||T(p) - q|| / ||e_36 - e_45||

with ``T`` rigid ICP from the identity (both already share the frame; pairs farther than 20 % of the
inter-ocular distance are left out of the ICP steps, so the back of the head does not pull; when fewer than
three pairs are that close, all pairs are used),
:func:`morphable.metrics.nme_3d`. Per |yaw| bin (0-30, 30-60, 60-90 degrees, as AFLW2000-3D) and as cumulative
curves. The baselines (:mod:`morphable.image.baselines`: the mean face, and the linear 3DMM landmark fit when
the linear model is given) are scored in the same crops with the same code; guided / multitask landmark outputs get the 2D landmark NME (inter-ocular) in photo pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from morphable.data.voxels import gt_face_points
from morphable.errors import MorphableError

YAW_BINS = ((0, 30), (30, 60), (60, 90))
ICP_REJECT = 0.2  # of the inter-ocular distance


def nme_in_crop(pred_vertices: np.ndarray, gt_points: np.ndarray, gt_eye_corners: np.ndarray) -> float:
    """NME of a prediction and the ground truth given in the same crop frame (module docstring)."""
    from morphable.metrics import nme_3d

    inter_ocular = float(np.linalg.norm(gt_eye_corners[0] - gt_eye_corners[1]))
    try:
        return nme_3d(pred_vertices, gt_points, gt_eye_corners, init="identity",
                      reject_distance=ICP_REJECT * inter_ocular).nme
    except MorphableError:  # fewer than 3 pairs that close: a prediction far off; align with every pair
        return nme_3d(pred_vertices, gt_points, gt_eye_corners, init="identity").nme


def _summary(values: list[float]) -> dict[str, float | int | None]:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if not len(v):
        return {"mean": None, "median": None, "count": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "count": int(len(v))}


def _crops(dataset, indices, spec, kind: str, detector: str):
    """Per photo: the 68 landmarks the crop is made from (photo pixels; None: no face detected), its crop
    matrix (or None), and the crop images ``(3, S, S)`` of the photos that have one."""
    from morphable.data.voxels import crop_image

    landmarks, matrices, images = [], [], []
    for i in indices:
        photo = dataset.image(i)
        if kind == "gt":
            points = dataset.annotations["landmarks_2d"][i]
        else:
            from morphable.image.landmarks import detect_landmarks

            faces = detect_landmarks(photo, detector)
            points = max(faces, key=lambda f: f.area).landmarks if faces else None
        A = None if points is None else spec.crop_matrix(points)
        landmarks.append(points)
        matrices.append(A)
        if A is not None:
            images.append(crop_image(photo, A, spec.size))
    return landmarks, matrices, images


def evaluate_vrn(model, dataset, out: str | Path, *, split: str = "test", crops: tuple[str, ...] = ("gt", "detected"),
                 detector: str = "auto", limit: int | None = None, linear_model=None,
                 progress: bool = True) -> dict[str, Any]:
    """Score ``model`` (``spec``, ``variant``, ``predict``; :class:`~morphable.image.model.VRNModel`) on the
    ``split`` of a :class:`~morphable.data.photos.PhotoDataset` (module docstring) beside the mean face and,
    given the :class:`~morphable.data.linear.LinearFaceModel` the photos were made with (or another of their
    topology), the linear landmark fit; plots and ``nme.csv`` go to ``out``. Returns the metrics (JSON-able)."""
    from morphable.image.align import apply_transform
    from morphable.image.baselines import fit_linear_to_landmarks, linear_basis, mean_face, place_by_landmarks
    from morphable.image.volume_mesh import volume_to_mesh
    from morphable.metrics import landmark_nme

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = model.spec
    indices = dataset.indices(split)[:limit]
    if not len(indices):
        raise MorphableError(f"{dataset.root}: the {split} split holds no photos")
    train = dataset.indices("train")
    mean = mean_face(dataset, train[np.linspace(0, len(train) - 1, min(len(train), 200)).astype(int)])
    landmark_vertices, face = dataset.topology["landmarks"], _face(dataset)
    baselines = {"mean_face": lambda marks: place_by_landmarks(mean, landmark_vertices, marks)}
    if linear_model is not None:
        basis_mean, basis = linear_basis(linear_model, dataset.topology)
        baselines["linear_fit"] = lambda marks: fit_linear_to_landmarks(basis_mean, basis, landmark_vertices, marks)
    yaw = np.abs(dataset.annotations["yaw_pitch_roll"][indices, 0])
    rows: list[dict[str, Any]] = [{"index": int(i), "id": dataset.ids[i], "yaw": float(y)} for i, y in zip(indices, yaw)]
    metrics: dict[str, Any] = {"split": split, "photos": int(len(indices)), "variant": model.variant,
                               "methods": ["vrn", *baselines]}
    for kind in crops:
        used, matrices, images = _crops(dataset, indices, spec, kind, detector)
        scored = [k for k, A in enumerate(matrices) if A is not None]
        prediction = model.predict(np.stack(images)) if images else None
        nme = {name: [np.nan] * len(indices) for name in metrics["methods"]}
        predicted_2d = {}
        iterator = enumerate(scored)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(list(iterator), desc=f"scoring {kind} crops", unit="photo", leave=False)
        for j, k in iterator:
            i, A = int(indices[k]), matrices[k]
            gt, eyes = gt_face_points(dataset, i, spec, A)
            try:
                vertices, _ = volume_to_mesh(prediction.volume[j], spec)
                nme["vrn"][k] = nme_in_crop(vertices, gt, eyes)
            except MorphableError:
                nme["vrn"][k] = np.inf  # an empty or full volume: no surface to score
            crop_landmarks = apply_transform(A, used[k])  # the baselines are placed by the crop's own landmarks
            for name, place in baselines.items():
                nme[name][k] = nme_in_crop(place(crop_landmarks)[face], gt, eyes)
            if prediction.landmarks is not None:
                predicted_2d[k] = apply_transform(np.linalg.inv(A), prediction.landmarks[j])
        for k in range(len(indices)):
            rows[k].update({f"{name}_{kind}": values[k] for name, values in nme.items()})
        in_bin = {f"{lo}-{hi}": [k for k in range(len(indices)) if lo <= yaw[k] < hi or (hi == 90 and yaw[k] == 90)]
                  for lo, hi in YAW_BINS}
        entry = {**{name: _summary(values) for name, values in nme.items()},
                 "unscorable_volumes": int(np.isinf(nme["vrn"]).sum()),
                 "failures": int(len(indices) - len(scored)), "failure_rate": float(1 - len(scored) / len(indices)),
                 "per_yaw": {b: {name: _summary([values[k] for k in ks]) for name, values in nme.items()}
                             for b, ks in in_bin.items()}}
        if predicted_2d:
            ks = sorted(predicted_2d)
            gt2d = dataset.annotations["landmarks_2d"][indices[ks]]
            entry["landmark_nme_2d"] = landmark_nme(np.stack([predicted_2d[k] for k in ks]), gt2d).mean
        metrics[kind] = entry
    _write_csv(out / "nme.csv", rows)
    _plot_cumulative(out / "cumulative_nme.png", rows, crops, metrics["methods"])
    return metrics


def _face(dataset) -> np.ndarray:
    from morphable.data.voxels import face_region

    return face_region(dataset.topology)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from morphable.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_cumulative(path: Path, rows: list[dict[str, Any]], crops: tuple[str, ...], methods: list[str]) -> None:
    """The fraction of photos with NME <= x (the paper's figures), VRN and the baselines, per crop kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from morphable.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = np.linspace(0, 0.12, 121)
    for kind in crops:
        for name, style in zip(methods, ("-", "--", ":")):
            values = np.array([r[f"{name}_{kind}"] for r in rows], dtype=np.float64)
            values = np.where(np.isnan(values), np.inf, values)  # failures count as never reaching x
            ax.plot(x, [(values <= t).mean() for t in x], style, label=f"{name.replace('_', ' ')} ({kind} crops)")
    ax.set_xlabel("NME (outer inter-ocular)")
    ax.set_ylabel("fraction of photos")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
