"""Mesh hierarchy build time (4 levels: QEM D/U, spirals, Laplacians) and decimation quality.

Templates: a COMA-sized 5,023-vertex face (the ICT-FaceKit skin surface decimated by our QEM; the
preparation is not timed), the 11,248-vertex ICT-FaceKit skin surface itself and, when available,
the package's synthetic head template.
Quality: mean distance of the skin vertices to the 2,812-vertex level for QEM and for a random
collapse order (same legality rules), and the U(DX) reconstruction error of the positions.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_hierarchy.py [--repeats 5]
Writes benchmarks/results/bm_hierarchy.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ICT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"
SKIN = 11248


def _timed(fn, repeats: int):
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return result, min(walls), sorted(walls)[len(walls) // 2], min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from morphable.mesh.hierarchy import MeshHierarchy
    from morphable.mesh.qem import decimate, level_sizes, nearest_on_mesh, up_matrix
    from morphable.mesh.spiral import spiralnet_spirals
    from morphable.mesh.topology import chebyshev_laplacian

    with np.load(ICT_NPZ, allow_pickle=False) as data:
        skin_v = data["neutral"][:SKIN].astype(np.float64)
        tri = data["triangles"].astype(np.int64)
    skin_f = tri[(tri < SKIN).all(axis=1)]
    small = decimate(skin_v, skin_f, 5023)
    templates = {"face-5023": (skin_v[small.kept], small.faces), "ict-skin-11248": (skin_v, skin_f)}
    try:
        from morphable.data.synthetic import template_mesh
    except ImportError:
        pass
    else:
        templates["synthetic-head"] = template_mesh()

    rows = {}
    for name, (v, f) in templates.items():
        h, wall, median, cpu = _timed(lambda: MeshHierarchy.build(v, f), args.repeats)
        parts = {}
        parts["decimate_s"] = _timed(lambda: [decimate(h.vertices[i], h.faces[i], h.sizes[i + 1])
                                               for i in range(h.n_levels - 1)], 1)[1]
        parts["up_s"] = _timed(lambda: [up_matrix(h.vertices[i], h.faces[i], h.kept[i], h.faces[i + 1])
                                         for i in range(h.n_levels - 1)], 1)[1]
        parts["spirals_s"] = _timed(lambda: [spiralnet_spirals(h.faces[i], h.sizes[i], 9, 1, h.vertices[i])
                                              for i in range(h.n_levels)], 1)[1]
        parts["laplacians_s"] = _timed(lambda: [chebyshev_laplacian(h.faces[i], h.sizes[i])
                                                 for i in range(h.n_levels)], 1)[1]
        recon = []
        for i in range(h.n_levels - 1):
            err = np.linalg.norm(h.up[i] @ (h.down[i] @ h.vertices[i]) - h.vertices[i], axis=1)
            to_mm = 1000.0 if name == "synthetic-head" else 10.0  # the synthetic head is in metres, ICT in cm
            recon.append({"mean_mm": round(float(err.mean()) * to_mm, 4), "max_mm": round(float(err.max()) * to_mm, 4)})
        rows[name] = {"sizes": h.sizes, "build_s": round(wall, 3), "build_median_s": round(median, 3),
                      "build_cpu_s": round(cpu, 3), **{k: round(x, 3) for k, x in parts.items()},
                      "udx_error_per_transition": recon}

    target = level_sizes(skin_f, SKIN, (4,))[1]
    quality = {}
    for ordering in ("qem", "random"):
        dec = decimate(skin_v, skin_f, target, ordering=ordering, seed=1)
        distance = nearest_on_mesh(skin_v, skin_v[dec.kept], dec.faces)[2]
        quality[f"{ordering}_mean_distance_cm"] = round(float(distance.mean()), 5)
    quality["level_vertices"] = target
    quality["random_over_qem"] = round(quality["random_mean_distance_cm"] / quality["qem_mean_distance_cm"], 2)

    result = {"repeats": args.repeats, "omp_threads": os.environ["OMP_NUM_THREADS"], "templates": rows,
              "ict_skin_quality": quality}
    out = Path(__file__).parent / "results" / "bm_hierarchy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'template':<16} {'sizes':<30} {'build s':>8} {'median':>8} {'CPU s':>7} {'QEM':>6} {'U':>6} "
          f"{'spiral':>7} {'Lapl':>6}")
    for name, r in rows.items():
        print(f"{name:<16} {'-'.join(map(str, r['sizes'])):<30} {r['build_s']:>8.3f} {r['build_median_s']:>8.3f} "
              f"{r['build_cpu_s']:>7.3f} {r['decimate_s']:>6.3f} {r['up_s']:>6.3f} {r['spirals_s']:>7.3f} "
              f"{r['laplacians_s']:>6.3f}")
    print(f"ICT skin -> {target} vertices, mean distance of the skin vertices to the coarse surface: "
          f"QEM {quality['qem_mean_distance_cm']} cm, random {quality['random_mean_distance_cm']} cm "
          f"({quality['random_over_qem']}x)")
    for name, r in rows.items():
        print(f"{name}: |U D X - X| per transition (mm): " +
              ", ".join(f"mean {e['mean_mm']} max {e['max_mm']}" for e in r["udx_error_per_transition"]))


if __name__ == "__main__":
    main()
