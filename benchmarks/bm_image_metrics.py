"""Speed of the image metrics on realistic sizes, each against a baseline timed in the same round.

* 2D landmark NME (:func:`morphable.metrics.landmark_nme`) of an AFLW2000-3D-sized set (2000 images x 68
  points) against the bare arithmetic ``||p - g||.mean()`` (the cost of the checks and the normaliser).
* 3D NME (:func:`morphable.metrics.nme_3d`) and point-to-plane distance
  (:func:`morphable.metrics.point_to_plane_distance`) of a reconstruction against a ground truth, both
  ICT-FaceKit heads (cm): the GT is the neutral head, 26,719 vertices (a 3DDFA / BFM fit of AFLW2000-3D has
  53k; a cropped MICC scan about 40k points: ``--gt-points`` samples that many on the GT surface for the
  point-to-plane cases), the prediction another identity (``identity_modes`` 0..4 at 0.5), with 0.5 mm
  noise, moved by 10 deg about a tilted axis and 1 cm. The baseline is one k-d tree build and query of the
  GT against the prediction, the floor of any nearest-point metric (one ICP step costs about that much).

Cases are interleaved and repeated (``--repeats``); the table gives the median wall time and the median
ratio to the baseline of the same round (the machine is shared, so ratios are the figure to compare).

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_image_metrics.py [--repeats 3] [--gt-points 40000]
Writes benchmarks/results/bm_image_metrics.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

ICT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"
EYE_CORNERS = np.array([1507, 3721])  # ICT-FaceKit vertices of iBUG 36 and 45


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def heads(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gt (V, 3), pred (V, 3), faces (F, 3))``: the neutral ICT head and a moved, noisy other identity."""
    from scipy.spatial.transform import Rotation

    if not ICT_NPZ.exists():
        raise SystemExit(f"{ICT_NPZ}: ICT-FaceKit data not found")
    with np.load(ICT_NPZ, allow_pickle=False) as data:
        gt = data["neutral"].astype(np.float64)
        pred = gt + 0.5 * data["identity_modes"][:5].sum(axis=0)
        faces = data["triangles"].astype(np.int64)
    rng = np.random.default_rng(seed)
    pred = pred + rng.normal(scale=0.05, size=pred.shape)
    rotation = Rotation.from_rotvec(np.radians(10) * np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2]))
    return gt, rotation.apply(pred - pred.mean(0)) + pred.mean(0) + [1.0, 0.0, 0.0], faces


def cases(gt, pred, faces, gt_scan, landmarks_2d, marks):
    """``{name: (baseline name, callable)}``; ``marks`` are the vertex pairs of the landmark-initialised ICP."""
    from scipy.spatial import cKDTree

    from morphable.metrics import landmark_nme, nme_3d, point_to_plane_distance

    p2, g2 = landmarks_2d
    return {
        "nme2d_bare": (None, lambda: float(np.linalg.norm(p2 - g2, axis=2).mean())),
        "nme2d_inter_ocular": ("nme2d_bare", lambda: landmark_nme(p2, g2).mean),
        "nme2d_bbox": ("nme2d_bare", lambda: landmark_nme(p2, g2, "bbox").mean),
        "kdtree_vertices": (None, lambda: cKDTree(pred).query(gt, workers=-1)[0].mean()),
        "nme3d_rigid": ("kdtree_vertices", lambda: nme_3d(pred, gt, EYE_CORNERS).nme),
        "nme3d_similarity": ("kdtree_vertices", lambda: nme_3d(pred, gt, EYE_CORNERS, alignment="similarity").nme),
        "nme3d_rigid_landmarks": ("kdtree_vertices", lambda: nme_3d(pred, gt, EYE_CORNERS, init="landmarks",
                                                                    pred_landmarks=marks, gt_landmarks=marks).nme),
        "kdtree_scan": (None, lambda: cKDTree(pred).query(gt_scan, workers=-1)[0].mean()),
        "p2plane_vertex_aligned": ("kdtree_scan", lambda: point_to_plane_distance(
            pred, faces, gt_scan, unit="cm", alignment="none").mean_mm),
        "p2plane_triangle_aligned": ("kdtree_scan", lambda: point_to_plane_distance(
            pred, faces, gt_scan, unit="cm", alignment="none", method="triangle").mean_mm),
        "p2plane_vertex_rigid": ("kdtree_scan", lambda: point_to_plane_distance(
            pred, faces, gt_scan, unit="cm").mean_mm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gt-points", type=int, default=40_000)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()

    from morphable.mesh.sampling import sample_surface

    gt, pred, faces = heads(0)
    gt_scan = sample_surface(gt, faces, args.gt_points, 1).points
    rng = np.random.default_rng(2)
    g2 = rng.uniform(20, 200, size=(args.images, 68, 2))
    landmarks_2d = (g2 + rng.normal(scale=2.0, size=g2.shape), g2)
    marks = np.r_[EYE_CORNERS, 0, 5000, 10000]
    table = cases(gt, pred, faces, gt_scan, landmarks_2d, marks)
    times: dict[str, list[float]] = {name: [] for name in table}
    ratios: dict[str, list[float]] = {name: [] for name, (base, _) in table.items() if base}
    values: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (base, fn) in table.items():
            seconds, values[name] = timed(fn)
            times[name].append(seconds)
            if base:
                ratios[name].append(seconds / times[base][-1])
    rows = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "value": float(values[name]),
                   "baseline": table[name][0],
                   "median_ratio": float(np.median(ratios[name])) if name in ratios else None}
            for name, t in times.items()}
    from morphable.mesh.icp import icp

    iterations = {"nme3d_rigid": icp(pred, gt).iterations,
                  "nme3d_similarity": icp(pred, gt, scale=True).iterations,
                  "nme3d_rigid_landmarks": icp(pred, gt, init="landmarks", source_landmarks=pred[marks],
                                               target_landmarks=gt[marks]).iterations,
                  "p2plane_vertex_rigid": icp(pred, gt_scan).iterations}
    for name, steps in iterations.items():
        rows[name]["icp_iterations"] = steps
    result = {"settings": {"repeats": args.repeats, "images": args.images, "gt_vertices": len(gt),
                           "pred_vertices": len(pred), "pred_faces": len(faces), "gt_scan_points": args.gt_points,
                           "omp_threads": os.environ["OMP_NUM_THREADS"], "cpus": os.cpu_count()},
              "cases": rows}
    out = Path(__file__).parent / "results" / "bm_image_metrics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':<26} {'median s':>9} {'x baseline':>11} {'value':>10} {'ICP steps':>10}  baseline")
    for name, row in rows.items():
        ratio = f"{row['median_ratio']:.2f}" if row["median_ratio"] is not None else "-"
        print(f"{name:<26} {row['median_s']:>9.4f} {ratio:>11} {row['value']:>10.4f} "
              f"{row.get('icp_iterations', '-'):>10}  {row['baseline'] or ''}")
    s = result["settings"]
    print(f"({s['images']} x 68 landmarks; GT {s['gt_vertices']} vertices / {s['gt_scan_points']} scan points, "
          f"prediction {s['pred_vertices']} vertices and {s['pred_faces']} faces; {args.repeats} rounds)")


if __name__ == "__main__":
    main()
