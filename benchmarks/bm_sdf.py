"""SDF training data and depth rendering on one ICT-FaceKit identity.

Cases: the full ICT mesh (26,719 vertices, 52,220 triangles incl. eyes, teeth and mouth socket; open
surfaces everywhere) and the outer skin only (11,248 vertices, open at the neck, eyes and mouth).
For each: pre-computation of the SDF samples with the default counts (250k surface points, 250k near
points per sigma level, 100k ball points = 600k exact signed distances), the cost of each signing
method on 100k ball points, the .npz size and load time, one batch of 32 sub-samples, and a 256 x 256
depth/normal render plus a 2,500-point depth observation.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_sdf.py [--ict PATH] [--surface 250000] [--near 250000] [--ball 100000]
Writes benchmarks/results/bm_sdf.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_ICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"


def timed(fn, repeat: int = 1):
    """Best wall time over ``repeat`` runs, the CPU time of that run, and the last result."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ict", type=Path, default=DEFAULT_ICT)
    parser.add_argument("--surface", type=int, default=250_000)
    parser.add_argument("--near", type=int, default=250_000)
    parser.add_argument("--ball", type=int, default=100_000)
    args = parser.parse_args()

    import numpy as np
    import torch

    from morphable.data import sdf
    from morphable.data.linear import ICT_FACE_VERTICES, ICT_SKIN_VERTICES, load_ict
    from morphable.mesh.distance import signed_distance
    from morphable.mesh.topology import edge_report
    from morphable.render import Camera, depth_point_cloud, rasterize

    torch.set_num_threads(1)
    model = load_ict(args.ict)
    identity = np.random.default_rng(0).standard_normal(model.n_shape)
    cases = {"full": model, "skin": model.subset_vertices(ICT_SKIN_VERTICES)}
    results: dict = {"counts": {"surface": args.surface, "near_per_sigma": args.near, "ball": args.ball,
                                "sigmas": list(sdf.SIGMAS)},
                     "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                                 "torch": torch.__version__, "omp_threads": os.environ["OMP_NUM_THREADS"]},
                     "cases": {}}
    for name, m in cases.items():
        vertices = m.vertices(identity)
        mask = np.arange(len(vertices)) < ICT_FACE_VERTICES
        normalised = sdf.Similarity.fit([vertices]).apply(vertices)
        row: dict = {"vertices": len(vertices), "faces": len(m.faces),
                     "open_edges": edge_report(m.faces, len(vertices)).n_open_edges}
        wall, cpu, samples = timed(lambda: sdf.precompute_sdf_samples(
            normalised, m.faces, mask, n_surface=args.surface, n_near=args.near, n_ball=args.ball, seed=0))
        row["precompute_s"], row["precompute_cpu_s"] = wall, cpu
        row["sdf_queries"] = 2 * args.near + args.ball
        ball = samples.ball_points.astype(np.float64)[:100_000]
        for sign in ("auto", "pseudonormal", "winding"):
            w, c, _ = timed(lambda: signed_distance(ball, normalised, m.faces, sign=sign))
            row[f"sdf_100k_{sign}_s"], row[f"sdf_100k_{sign}_cpu_s"] = w, c
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "shape.npz"
            row["save_s"] = timed(lambda: samples.save(path))[0]
            row["npz_mb"] = path.stat().st_size / 1e6
            row["load_s"] = timed(lambda: sdf.SdfSamples.load(path), repeat=3)[0]
        gen = torch.Generator().manual_seed(0)
        row["subsample_batch32_ms"] = 1e3 * timed(lambda: [sdf.subsample(samples, generator=gen) for _ in range(32)],
                                                  repeat=5)[0]
        cam = Camera.look_at((0.2, 0.1, 2.6), fov_deg=25, width=256, height=256)
        for dtype in (torch.float32, torch.float64):
            v = torch.tensor(normalised, dtype=dtype)
            f = torch.tensor(m.faces)
            w, c, render = timed(lambda: rasterize(v, f, cam), repeat=5)
            row[f"render256_{str(dtype)[6:]}_s"], row[f"render256_{str(dtype)[6:]}_cpu_s"] = w, c
        row["render_pixels"] = int(render.mask.sum())
        row["depth_points_2500_s"] = timed(lambda: depth_point_cloud(normalised, m.faces, cam, 2500), repeat=3)[0]
        results["cases"][name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}

    out = Path(__file__).parent / "results" / "bm_sdf.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    keys = [("vertices", "vertices"), ("faces", "faces"), ("open_edges", "open edges"),
            ("precompute_s", "precompute (s)"), ("precompute_cpu_s", "  CPU (s)"), ("sdf_queries", "  SDF queries"),
            ("sdf_100k_auto_s", "100k SDF auto (s)"), ("sdf_100k_pseudonormal_s", "100k SDF pseudonormal (s)"),
            ("sdf_100k_winding_s", "100k SDF winding (s)"), ("npz_mb", "npz size (MB)"), ("save_s", "save (s)"),
            ("load_s", "load (s)"), ("subsample_batch32_ms", "sub-sample 32 shapes (ms)"),
            ("render256_float32_s", "render 256^2 float32 (s)"), ("render256_float64_s", "render 256^2 float64 (s)"),
            ("render_pixels", "  covered pixels"), ("depth_points_2500_s", "2500-point depth cloud (s)")]
    print(f"{'':<28}{'full':>12}{'skin':>12}")
    for key, label in keys:
        print(f"{label:<28}" + "".join(f"{results['cases'][c][key]:>12}" for c in cases))
    print(f"(counts: {args.surface} surface, {args.near} near per sigma, {args.ball} ball; results in {out})")


if __name__ == "__main__":
    main()
