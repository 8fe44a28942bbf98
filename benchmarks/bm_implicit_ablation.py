"""The thesis' ablation (sec. 6.3.1, Table 6.4, Fig. 6.6) on ICT-FaceKit heads: which objectives make the full model.

Protocol (the data and fitting of ``bm_implicit_eval.py``, whose helpers this imports):

* Scans: ICT-FaceKit Light identities ``w ~ N(0, I)`` (100 modes), neutral expression, outer skin only (open
  at the neck, eyes and mouth); face = vertices 0..9408. ``--train-identities`` from seed ``--seed``,
  ``--test-identities`` held out from seed ``--seed + 1000``.
* Training data: :func:`morphable.data.sdf.write_sdf_dataset` with ground-truth normal maps
  (``--views`` Fibonacci cameras, ``--map-resolution``^2, the thesis' radius), as ``morphable data sdf``.
* Models: the presets ``ablation-npm``, ``ablation-tp3d``, ``ablation-tp3d-reg``, ``ablation-tp2d-reg`` and
  ``ablation-full`` (CPU size, 300 epochs each; ``--epochs`` rescales all, the full model's stage
  boundaries at the same fractions), trained one after another on the same data, one thread.
* Observation and fit: ``morphable data depth`` (2,500 back-projected pixels of a frontal depth map) of each
  held-out head, then :func:`morphable.implicit.fit.fit_run` (``--fit-steps``, extraction at ``--res``^3).
* Metrics: :func:`morphable.metrics.region_metrics`, NPHM's convention: Euclidean nearest neighbours, Chamfer =
  mean of accuracy and completeness, normal consistency with |cos|, F-score at 1 mm. The thesis' Table 6.4
  prints L1 norms of the nearest-neighbour vectors and the sum of both directions, so its numbers are not
  on our scale (a sum is 2x a mean for equal halves); the ratios between models compare.

Usage: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_implicit_ablation.py [--epochs N]
Writes benchmarks/results/bm_implicit_ablation.json after every model (an interrupted run keeps the finished
models), prints a markdown table beside the thesis' and the issue's target ratios, and draws
benchmarks/results/bm_implicit_ablation.png (rows: held-out heads; columns: GT and each model, like Fig. 6.6).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bm_implicit_eval import ICT, KEYS, mean_metrics  # noqa: E402  (the environment above comes first)

MODELS = {"NPM": "ablation-npm", "TP_3D": "ablation-tp3d", "TP_3D_reg": "ablation-tp3d-reg",
          "TP_2D_reg": "ablation-tp2d-reg", "full": "ablation-full"}
THESIS_TABLE_6_4_HEAD_CD = {"NPM": 1.361, "TP_3D": 17.226, "TP_3D_reg": 3.150, "TP_2D_reg": 3.785, "full": 0.819}
"""Head Chamfer-L1 (mm) of the thesis' Table 6.4 (L1 norms, sum of both directions)."""
RESULTS = Path(__file__).resolve().parent / "results"


def ablation_config(preset: str, data: Path, epochs: int | None):
    """The preset on ``data``, CPU; with ``epochs`` all runs shortened alike (stages at the preset's fractions)."""
    from morphable.config import ABLATION_EPOCHS, PRESETS
    from morphable.implicit.stages import thesis_schedule

    config = PRESETS[preset]()
    config.data.path = str(data)
    config.train.device = "cpu"
    if epochs is not None:
        config.train.epochs = epochs
        if config.model.stages:
            two_d, regularisers = (stage["start"] * epochs // ABLATION_EPOCHS for stage in config.model.stages[1:])
            config.model.stages = thesis_schedule(max(1, two_d), max(2, regularisers, two_d + 1))
    return config


def target_checks(summary: dict) -> list[tuple[str, float, float, bool]]:
    """The issue's targets as ``(statement, full value, bound, met)`` for the models present."""
    def cd(name: str, region: str) -> float:
        return summary[name][region]["chamfer_l1_mm"]

    checks = []
    if "full" not in summary:
        return checks
    full_head = cd("full", "head")
    regs = [name for name in ("TP_3D_reg", "TP_2D_reg") if name in summary]
    if regs:
        bound = 0.8 * min(cd(name, "head") for name in regs)
        checks.append((f"full head CD <= 0.8 x min({', '.join(regs)}) head CD", full_head, bound, full_head <= bound))
    if "TP_3D" in summary:
        bound = cd("TP_3D", "head") / 3
        checks.append(("full head CD <= TP_3D head CD / 3", full_head, bound, full_head <= bound))
        bound = 1.1 * cd("TP_3D", "face")
        checks.append(("full face CD <= 1.1 x TP_3D face CD", cd("full", "face"), bound, cd("full", "face") <= bound))
    return checks


def print_table(summary: dict, args: argparse.Namespace) -> None:
    print(f"\nablation on ICT-FaceKit: {args.test_identities} held-out heads (trained on {args.train_identities}), "
          f"means; ours: NPHM's metrics (Euclidean NN, mean of accuracy and completeness, |cos| N.C.); "
          f"thesis Table 6.4: L1 norms, sum of both directions")
    print("| model | Chamfer-L1 face (mm) | head | N.C. face | head | F@1mm face | head | thesis head CD | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        cells = [f"{s[r][k]:.3f}" for k in KEYS for r in ("face", "head")]
        print(f"| {name} | {' | '.join(cells)} | {THESIS_TABLE_6_4_HEAD_CD[name]:.3f} | {s['train_seconds']:.0f} |")
    for statement, value, bound, met in target_checks(summary):
        print(f"target {statement}: {value:.3f} vs {bound:.3f} -> {'met' if met else 'NOT met'}")


def draw(path: Path, heads: list[tuple], fits: dict[str, list[tuple]], summary_rows: dict[str, list[dict]]) -> None:
    """Fitted heads side by side: one row per held-out head, columns GT and each model (Fig. 6.6)."""
    from morphable.viz import mesh_strip

    names = list(fits)
    meshes, titles = [], []
    for j, gt in enumerate(heads):
        meshes.append(gt)
        titles.append(f"GT {j}")
        for name in names:
            meshes.append(fits[name][j])
            head_cd = summary_rows[name][j]["head"]["chamfer_l1_mm"]
            titles.append(f"{name}: {head_cd:.2f} mm")
    mesh_strip(path, meshes, titles, columns=1 + len(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ict", type=Path, default=ICT)
    parser.add_argument("--train-identities", type=int, default=8)
    parser.add_argument("--test-identities", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="epochs of every model (default: the presets' 300)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-surface", type=int, default=50_000, help="SDF surface samples per scan")
    parser.add_argument("--n-near", type=int, default=50_000, help="SDF near samples per scan and level")
    parser.add_argument("--n-ball", type=int, default=20_000, help="SDF ball samples per scan")
    parser.add_argument("--views", type=int, default=128, help="ground-truth normal maps per scan")
    parser.add_argument("--map-resolution", type=int, default=64)
    parser.add_argument("--fit-steps", type=int, default=1000)
    parser.add_argument("--res", type=int, default=256, help="extraction resolution")
    parser.add_argument("--metric-samples", type=int, default=500_000)
    parser.add_argument("--work", type=Path, help="keep data, runs and fits here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bm_implicit_ablation.json")
    parser.add_argument("--figure", type=Path, default=RESULTS / "bm_implicit_ablation.png")
    args = parser.parse_args()

    import numpy as np
    import torch

    from morphable.data.linear import ICT_FACE_VERTICES, ICT_SKIN_VERTICES, load_ict
    from morphable.data.normal_maps import NormalMapSettings
    from morphable.data.scans import depth_observation
    from morphable.data.sdf import write_sdf_dataset
    from morphable.experiment import train
    from morphable.implicit.fit import fit_run
    from morphable.io import UNIT_TO_MM, read_mesh, write_json, write_ply
    from morphable.metrics import region_metrics

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = load_ict(args.ict).subset_vertices(ICT_SKIN_VERTICES)
    to_mm = UNIT_TO_MM[model.unit]
    train_w = np.random.default_rng(args.seed).standard_normal((args.train_identities, model.n_shape))
    test_w = np.random.default_rng(args.seed + 1000).standard_normal((args.test_identities, model.n_shape))
    mask = np.arange(model.n_vertices) < ICT_FACE_VERTICES
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="bm_implicit_ablation.")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "bm_implicit_ablation",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "protocol": "ICT-FaceKit skin identities w ~ N(0, I), neutral; 2,500-point frontal depth observation; "
                    "face = vertices 0..9408, head = whole skin; NPHM's metrics (Euclidean NN, mean of accuracy "
                    "and completeness) with metric_samples points; thesis Table 6.4: L1 norms and a sum",
        "thesis_table_6_4_head_chamfer_mm": THESIS_TABLE_6_4_HEAD_CD,
        "timings": {}, "training": {}, "summary": {}, "per_identity": {}, "targets": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data = write_sdf_dataset([(f"train_{i:02d}", model.vertices(w), model.faces, mask) for i, w in enumerate(train_w)],
                                 work / "sdf", model.unit, n_surface=args.n_surface, n_near=args.n_near,
                                 n_ball=args.n_ball, seed=args.seed,
                                 normal_maps=NormalMapSettings(args.views, args.map_resolution),
                                 overwrite=True, progress=False)
        result["timings"]["sdf_data_s"] = time.perf_counter() - t0
        heads = []
        for j, w in enumerate(test_w):
            case = work / f"test_{j:02d}"
            case.mkdir(exist_ok=True)
            heads.append((model.vertices(w), model.faces))
            write_ply(case / "gt.ply", *heads[-1])
            depth_observation(case / "gt.ply", case / "cloud.ply", n_points=2500, seed=j)
        fits: dict[str, list[tuple]] = {}
        for name in args.models:
            config = ablation_config(MODELS[name], data, args.epochs)
            print(f"training {name} = {MODELS[name]} ({config.train.epochs} epochs)", flush=True)
            metrics = train(config, work / name, overwrite=True, progress=False)
            fit = metrics["fit"]
            result["training"][name] = {"preset": MODELS[name], "config": config.to_dict(), "seconds": fit["seconds"],
                                        "parameters": fit["parameters"], "final": metrics["final"]}
            print(f"  {fit['seconds']:.0f} s, final {metrics['final']}", flush=True)
            rows, fits[name] = [], []
            for j, (vertices, faces) in enumerate(heads):
                case = work / f"test_{j:02d}"
                info = fit_run(work / name, case / "cloud.ply", case / name, steps=args.fit_steps, resolution=args.res)
                mesh = read_mesh(case / name / "fit.ply")
                fits[name].append((mesh.vertices, mesh.faces))
                row = region_metrics((mesh.vertices, mesh.faces), (vertices, faces), mask, to_mm,
                                     n_samples=args.metric_samples, seed=j)
                rows.append({**row, "fit_seconds": info["fit_seconds"]})
                print(f"  held-out {j}: face {row['face']['chamfer_l1_mm']:.3f} mm, head "
                      f"{row['head']['chamfer_l1_mm']:.3f} mm, fit {info['fit_seconds']:.1f} s", flush=True)
            result["per_identity"][name] = rows
            result["summary"][name] = {**mean_metrics(rows), "train_seconds": fit["seconds"],
                                       "fit_seconds": float(np.mean([r["fit_seconds"] for r in rows]))}
            result["targets"] = [{"target": s, "full": v, "bound": b, "met": bool(m)}
                                 for s, v, b, m in target_checks(result["summary"])]
            result["timings"]["total_s"] = time.perf_counter() - started
            write_json(args.out, result)
        draw(args.figure, heads, fits, result["per_identity"])
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    print_table(result["summary"], args)
    print(f"total {result['timings']['total_s']:.0f} s; wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
