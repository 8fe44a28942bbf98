"""Mesh extraction at 256^3 for NPM and the tri-plane model: ours against today's extractor, and against dense.

* Tri-plane (default size: 512-d code, 3 x 32 x 256^2 planes, 5 x 256 decoder): its planes and decoder are
  first fitted for ``--fit-steps`` steps to the ICT-FaceKit neutral head (outer skin, normalised into the
  unit sphere) with the thesis' 3D losses, so that the level set is a realistic head. (The planes are
  optimised directly, not through the generator: the extraction sees the same ``TriplaneField`` either way.)
* NPM (8 x 1024, latent 512): geometric initialisation to a sphere whose area equals the fitted head's
  area, so the narrow band has a realistic size (fitting the 8 x 1024 network on a CPU takes too long).

Baseline: today's extractor (commit 261d3ab), kept here as its settings: the same exact narrow band with
``chunk=16384`` and ``margin=1`` (its refinement threshold), and for NPM the plain forward pass
``net(code, points)`` as its field (before ``DeepSDF.folded``); the tri-plane grid path is unchanged.
Baseline and ours run at 256^3 alternately, ``--repeats`` times (medians), and their meshes are compared.

Floor: marching cubes needs the exact value at every corner of every cell the surface crosses ("needed"
points, counted on our grid). The floor is that count times our measured seconds per evaluated point, plus
our marching cubes and set-up time: no exact extractor that evaluates the same network in float32 at the
same rate can be faster, so ``baseline / floor`` is the largest speed-up left. The evaluation rate is set
against the machine's matmul rate at the decoder's shapes.

Dense evaluation of all 256^3 points takes minutes (tri-plane) to hours (NPM) on a CPU, so dense is
measured at ``--dense-res`` (tri-plane) and ``--dense-res-npm`` and extrapolated to 256^3 by the point
count; at those resolutions dense and ours run and their meshes are compared face by face. Times are
wall-clock and process CPU seconds with ``torch.set_num_threads(--threads)`` (2 by default).

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_extract.py [--device cpu|cuda] [--fit-steps 150] [--repeats 2]
Writes benchmarks/results/bm_extract.json and prints a table beside the thesis numbers (Table 6.2,
RTX 3090: NPM 18.3 s, NPHM 33.1 s, tri-plane 3.7 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"
THESIS_SECONDS = {"NPM": 18.319, "NPHM": 33.119, "tri-plane": 3.717}
#: Today's extractor (commit 261d3ab) as settings of ours (its field for NPM: see ``npm_baseline_field``).
BASELINE = {"chunk": 16384, "margin": 1.0}
TARGET_SPEEDUP = {"NPM": 2.3, "tri-plane": 2.1}



def load_head(path: Path):
    """ICT-FaceKit neutral outer skin, centred and scaled so that its farthest vertex is at radius 0.9."""
    import numpy as np

    data = np.load(path, allow_pickle=False)
    vertices = data["neutral"][:11248].astype(np.float64)
    faces = data["triangles"][(data["triangles"] < 11248).all(axis=1)].astype(np.int64)
    vertices -= 0.5 * (vertices.min(0) + vertices.max(0))
    vertices *= 0.9 / np.linalg.norm(vertices, axis=1).max()
    return vertices, faces


def fit_triplane(model, vertices, faces, steps: int, device):
    """Fit planes (directly) and decoder to one head with the Table 4.1 3D losses; returns the field."""
    import numpy as np
    import torch

    from morphable.implicit import losses
    from morphable.implicit.triplane import TriplaneField
    from morphable.mesh.sampling import sample_surface

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        planes = model.generate_planes(torch.randn(1, model.latent_dim, device=device) * 0.01)
    planes = torch.nn.Parameter(planes.clone())
    opt = torch.optim.Adam([{"params": [planes], "lr": 1e-2},
                            {"params": model.decoder.parameters(), "lr": 5e-4}])
    w = losses.LossWeights()
    for _ in range(steps):
        samples = sample_surface(vertices, faces, 4000, rng)
        pts, nrm = samples.points, samples.face_normals
        surface = torch.as_tensor(pts, dtype=torch.float32, device=device)[None]
        normals = torch.as_tensor(nrm, dtype=torch.float32, device=device)[None]
        space = torch.randn(1, 1000, 3, device=device)
        space = space / space.norm(dim=-1, keepdim=True) * torch.rand(1, 1000, 1, device=device) ** (1 / 3)
        fn = lambda p: model.decode(planes, p)  # noqa: E731
        s_surf, g_surf = losses.sdf_and_gradient(fn, surface)
        s_space, g_space = losses.sdf_and_gradient(fn, space)
        total = w.total({
            "surface": losses.surface_sdf_loss(s_surf),
            "normal": losses.surface_normal_loss(g_surf, normals),
            "eikonal": losses.eikonal_loss(torch.cat([g_surf, g_space], dim=1)),
            "non_surface": losses.non_surface_loss(s_space),
            "total_variation": losses.total_variation_loss(planes),
            "triplane": losses.triplane_penalty(planes),
        })
        opt.zero_grad()
        total.backward()
        opt.step()
    return TriplaneField(model.decoder, planes.detach()[0]), float(total.detach())


def timed_extract(sdf, resolution: int, method: str, device, **settings):
    """One extraction (``evaluate_grid`` + ``marching_cubes``, the work of ``extract_mesh``).

    Returns (vertices, faces, stats, wall seconds, cpu seconds, volume, exact).
    """
    import torch

    from morphable.mesh.extract import evaluate_grid, marching_cubes

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    volume, exact, stats = evaluate_grid(sdf, resolution, method=method, device=device, **settings)
    t1 = time.perf_counter()
    v, f = marching_cubes(volume, level=0.0, mask=exact if method == "band" else None)
    stats.seconds_marching_cubes = time.perf_counter() - t1
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return v, f, stats, time.perf_counter() - wall, time.process_time() - cpu, volume, exact


def same_mesh(a, b) -> bool:
    import numpy as np

    return a[1].shape == b[1].shape and bool((a[1] == b[1]).all()) and float(np.abs(a[0] - b[0]).max()) < 1e-5


def mesh_area(v, f) -> float:
    import numpy as np

    return float(0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum())


def mesh_difference(a, b) -> dict:
    """Face counts and the symmetric Hausdorff distance between the vertex sets of two meshes."""
    from scipy.spatial import cKDTree

    if len(a[0]) == 0 or len(b[0]) == 0:
        return {"faces": [len(a[1]), len(b[1])], "hausdorff": None}
    return {"faces": [len(a[1]), len(b[1])],
            "hausdorff": float(max(cKDTree(b[0]).query(a[0])[0].max(), cKDTree(a[0]).query(b[0])[0].max()))}


def needed_points(volume) -> int:
    """Corners of the cells whose corners are not all on one side of the level (0)."""
    import torch

    from morphable.mesh.extract import _cells_to_points, _mixed_cells

    return int(_cells_to_points(_mixed_cells(torch.from_numpy(volume), 0.0)).sum())


def matmul_rate(rows: int, width: int, device) -> float:
    """GFLOP/s of ``(rows, width) x (width, width)`` float32 GEMMs, the decoder's hidden layers."""
    import torch

    a, w = torch.randn(rows, width, device=device), torch.randn(width, width, device=device)
    a @ w
    t0 = time.perf_counter()
    for _ in range(5):
        a @ w
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * rows * width * width * 5 / (time.perf_counter() - t0) / 1e9


def npm_baseline_field(npm, code):
    """Today's NPM field: the network's forward pass with the code bound (what ``sdf_function`` was)."""
    return lambda points: npm(code[None], points[None])[0]


def measure(name: str, sdf, baseline_sdf, setup_seconds: float, dense_res: int, res: int, repeats: int,
            flop_per_point: float, width: int, device) -> tuple[dict, object]:
    import numpy as np

    dense = timed_extract(sdf, dense_res, "dense", device)
    band_small = timed_extract(sdf, dense_res, "band", device)
    runs = {"baseline": [], "ours": []}
    for _ in range(repeats):
        runs["baseline"].append(timed_extract(baseline_sdf, res, "band", device, **BASELINE))
        runs["ours"].append(timed_extract(sdf, res, "band", device))
    med = {k: {"wall_s": float(np.median([r[3] for r in v])), "cpu_s": float(np.median([r[4] for r in v]))}
           for k, v in runs.items()}
    ours, base = runs["ours"][-1], runs["baseline"][-1]
    needed = needed_points(ours[5])
    per_point_wall = float(np.median([r[2].seconds_eval / r[2].evaluated for r in runs["ours"]]))
    rest = float(np.median([r[3] - r[2].seconds_eval for r in runs["ours"]]))  # set-up, bookkeeping, marching cubes
    floor = needed * per_point_wall + rest
    scale = (res / dense_res) ** 3
    row = {
        "model": name,
        "resolution": res,
        "setup_seconds": setup_seconds,
        "baseline": {**med["baseline"], "settings": BASELINE, "evaluated": base[2].evaluated,
                     "wall_s_rounds": [r[3] for r in runs["baseline"]]},
        "ours": {**med["ours"], "evaluated": ours[2].evaluated, "fraction": ours[2].fraction,
                 "repaired": ours[2].repaired, "eval_s": ours[2].seconds_eval,
                 "marching_cubes_s": ours[2].seconds_marching_cubes, "faces": int(len(ours[1])),
                 "area": mesh_area(ours[0], ours[1]), "wall_s_rounds": [r[3] for r in runs["ours"]]},
        "speedup_vs_baseline_wall": med["baseline"]["wall_s"] / med["ours"]["wall_s"],
        "speedup_vs_baseline_cpu": med["baseline"]["cpu_s"] / med["ours"]["cpu_s"],
        "target_speedup": TARGET_SPEEDUP[name],
        "same_mesh_as_baseline": same_mesh(ours, base),
        "difference_to_baseline": mesh_difference(ours, base),
        "floor": {"needed_points": needed, "seconds_per_point": per_point_wall, "other_seconds": rest,
                  "wall_s": floor, "largest_speedup_vs_baseline": med["baseline"]["wall_s"] / floor,
                  "flop_per_point": flop_per_point,
                  "eval_gflop_per_s": flop_per_point / per_point_wall / 1e9,
                  "matmul_gflop_per_s": matmul_rate(4096, width, device)},
        "dense": {"measured_resolution": dense_res, "wall_s": dense[3], "cpu_s": dense[4],
                  "points": dense[2].evaluated,
                  "extrapolated_wall_s_at_res": dense[3] * scale if dense_res != res else dense[3],
                  "extrapolated": dense_res != res,
                  "points_per_wall_s": dense[2].evaluated / dense[2].seconds_eval},
        "identical_to_dense_at_measured_resolution": same_mesh(dense, band_small),
        "ours_at_measured_resolution": {"wall_s": band_small[3], "evaluated": band_small[2].evaluated},
    }
    row["met"] = row["speedup_vs_baseline_wall"] >= row["target_speedup"]
    row["speedup_vs_dense"] = row["dense"]["extrapolated_wall_s_at_res"] / row["ours"]["wall_s"]
    return row, ours[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--dense-res", type=int, default=128, help="dense resolution for the tri-plane")
    parser.add_argument("--dense-res-npm", type=int, default=64, help="dense resolution for NPM")
    parser.add_argument("--fit-steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2, help="alternating baseline / ours runs at --res")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bm_extract.json"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.spatial import cKDTree

    from morphable.implicit.deepsdf import DeepSDF
    from morphable.implicit.triplane import TriplaneSDF
    from morphable.mesh.sampling import sample_surface

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vertices, faces = load_head(ICT)
    head_area = mesh_area(vertices, faces)

    torch.manual_seed(0)
    triplane = TriplaneSDF().to(device).eval()
    t0 = time.perf_counter()
    field, fit_loss = fit_triplane(triplane, vertices, faces, args.fit_steps, device)
    fit_seconds = time.perf_counter() - t0
    with torch.no_grad():  # planes from a code once per identity: the cost extraction pays before evaluating
        t0 = time.perf_counter()
        triplane.generate_planes(torch.zeros(1, 512, device=device))
        plane_seconds = time.perf_counter() - t0
    tri_flops = float(sum(2 * layer.in_features * layer.out_features for layer in triplane.decoder.layers))
    row, mesh_vertices = measure("tri-plane", field, field, plane_seconds, args.dense_res, args.res, args.repeats,
                                 tri_flops, triplane.decoder.layers[1].in_features, device)
    rows = [row]
    reference = sample_surface(vertices, faces, 200000, np.random.default_rng(1)).points
    row["fit_quality_unit_sphere"] = {
        "accuracy": float(cKDTree(reference).query(mesh_vertices)[0].mean()),
        "completeness": float(cKDTree(mesh_vertices).query(reference)[0].mean()),
        "head_diameter": 1.8}

    radius = float(np.sqrt(head_area / (4 * np.pi)))
    npm = DeepSDF(radius=radius).to(device).eval()
    code = torch.zeros(512, device=device)
    npm_flops = float(sum(2 * layer.out_features * (layer.in_features - (npm.latent_dim if i in (0, npm.skip_layer)
                                                                          else 0))
                          for i, layer in enumerate(npm.layers)))
    with torch.inference_mode():
        rows.append(measure("NPM", npm.sdf_function(code), npm_baseline_field(npm, code), 0.0, args.dense_res_npm,
                            args.res, args.repeats, npm_flops, npm.layers[1].in_features, device)[0])

    result = {
        "benchmark": "bm_extract",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "triplane_fit": {"steps": args.fit_steps, "seconds": fit_seconds, "final_loss": fit_loss,
                         "head_area_unit_sphere": head_area},
        "npm_sphere_radius": radius,
        "note": "baseline = today's extractor (commit 261d3ab) as settings, medians of alternating runs; dense at "
                "256^3 is extrapolated from the measured dense resolution by the point count; tri-plane times "
                "include neither plane generation (setup_seconds) nor fitting",
        "thesis_table_6_2_rtx3090_s": THESIS_SECONDS,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"mesh extraction at {args.res}^3 on {result['device']} ({args.threads} threads), medians of "
          f"{args.repeats} alternating runs")
    print(f"{'model':<10} {'dense s':>9} {'baseline s':>10} {'ours s':>7} {'cpu s':>6} {'ratio':>6} {'target':>6} "
          f"{'floor s':>7} {'max ratio':>9} {'evaluated':>9} {'needed':>8} {'same':>5} {'thesis s':>8}")
    for row in rows:
        floor = row["floor"]
        same = row["same_mesh_as_baseline"] and row["identical_to_dense_at_measured_resolution"]
        print(f"{row['model']:<10} {row['dense']['extrapolated_wall_s_at_res']:>8.0f}* "
              f"{row['baseline']['wall_s']:>10.2f} {row['ours']['wall_s']:>7.2f} {row['ours']['cpu_s']:>6.2f} "
              f"{row['speedup_vs_baseline_wall']:>5.2f}x {row['target_speedup']:>5.1f}x {floor['wall_s']:>7.2f} "
              f"{floor['largest_speedup_vs_baseline']:>8.2f}x {row['ours']['evaluated']:>9} {floor['needed_points']:>8} "
              f"{str(same):>5} {THESIS_SECONDS[row['model']]:>8.1f}")
    for row in rows:
        floor = row["floor"]
        print(f"{row['model']}: evaluation at {floor['eval_gflop_per_s']:.0f} GFLOP/s, matmul at the decoder's "
              f"shape {floor['matmul_gflop_per_s']:.0f} GFLOP/s; {floor['seconds_per_point'] * 1e6:.1f} us per point")
    print("* dense extrapolated from the measured resolution by the point count; thesis: RTX 3090; same: "
          "ours = baseline mesh and = dense mesh at the dense resolution")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
