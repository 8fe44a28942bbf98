"""``morphable demo``: synthetic faces -> split -> PCA baselines and one mesh autoencoder -> evaluation -> report."""

from __future__ import annotations

import argparse

DEMO_LATENTS = (4, 8, 16, 32)
NETWORK_LATENT = 8
DEMO_NETWORK = "neural3dmm-simple"
DEMO_NETWORK_EPOCHS = 20
# the CoMA paper's latent-8 errors on real COMA scans (interpolation protocol), quoted in the report
PAPER_PCA_MM, PAPER_COMA_MM = 1.639, 0.845


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the main job on the embedded synthetic faces (minutes on a CPU)")
    parser.add_argument("--out", default="morphable-demo", help="output folder (default ./morphable-demo)")
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--expressions", type=int, default=12)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network-epochs", type=int, default=DEMO_NETWORK_EPOCHS,
                        help=f"epochs of the {DEMO_NETWORK} run at latent {NETWORK_LATENT} "
                             f"(default {DEMO_NETWORK_EPOCHS}; 0 = PCA only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import time

    from morphable.data.synthetic import write_synthetic_dataset
    from morphable.io import check_output_folder, write_json

    if args.network_epochs < 0:
        from morphable.errors import MorphableError

        raise MorphableError(f"--network-epochs must be 0 or more, got {args.network_epochs}")
    start = time.perf_counter()
    out = check_output_folder(args.out, args.overwrite)
    steps = 4 if args.network_epochs else 3
    print(f"[1/{steps}] generating {args.subjects} x {args.expressions} x {args.frames} synthetic faces ...", flush=True)
    data = write_synthetic_dataset(str(out / "data"), args.subjects, args.expressions, args.frames, args.seed, overwrite=True)
    print(f"[2/{steps}] fitting PCA baselines (latent {', '.join(map(str, DEMO_LATENTS))}), interpolation split ...",
          flush=True)
    rows = [_train_row(out, data, "pca", f"pca-{latent}", f"PCA (latent {latent})", latent, args.seed)
            for latent in DEMO_LATENTS]
    if args.network_epochs:
        print(f"[3/{steps}] training {DEMO_NETWORK} at latent {NETWORK_LATENT} for {args.network_epochs} epochs ...",
              flush=True)
        rows.append(_train_row(out, data, DEMO_NETWORK, DEMO_NETWORK,
                               f"Neural3DMM (latent {NETWORK_LATENT}, {args.network_epochs} epochs)", NETWORK_LATENT,
                               args.seed, args.network_epochs))
    print(f"[{steps}/{steps}] writing the report ...", flush=True)
    _comparison_plot(out, rows)
    seconds = time.perf_counter() - start
    write_json(out / "report.json", {"data": str(data), "protocol": "interpolation", "results": rows,
                                     "seconds": round(seconds, 1)})
    table = _table(rows)
    (out / "report.md").write_text(f"# morphable demo\n\nData: `{data}` (synthetic faces, seed {args.seed}); "
                                   f"protocol: interpolation.\n\n{table}\n\n{_lesson(rows)}\n\n"
                                   f"Total time: {seconds:.1f} s.\n")
    print(table)
    print(f"\nreport: {out / 'report.md'}   plots: {out / 'runs' / 'pca-8' / 'plots'}   "
          f"data preview: {data / 'preview.png'}   ({seconds:.0f} s)")
    return 0


def _train_row(out, data, preset: str, name: str, method: str, latent: int, seed: int,
               epochs: int | None = None) -> dict:
    """Train ``preset`` at ``latent`` on the interpolation split into ``out/runs/name``; its report row."""
    from morphable.config import PRESETS
    from morphable.experiment import train

    config = PRESETS[preset]()
    config.data.path = str(data)
    config.model.latent = latent
    config.seed = seed
    if epochs is not None:
        config.train.epochs = epochs
    run = out / "runs" / name
    m = train(config, run, overwrite=True)
    return {"method": method, "preset": preset, "latent": latent, "epochs": epochs, "run": str(run),
            "mean_mm": m["mean_mm"], "std_mm": m["std_mm"], "median_mm": m["median_mm"],
            "test_meshes": m["split_sizes"]["test"], "train_seconds": m["fit"]["seconds"]}


def _lesson(rows: list[dict]) -> str:
    """What the table says about linear vs deep models at the same latent size, in numbers."""
    pca8 = next(r for r in rows if r["preset"] == "pca" and r["latent"] == NETWORK_LATENT)
    pointer = (f"On real COMA scans the CoMA paper reports PCA {PAPER_PCA_MM} mm vs CoMA {PAPER_COMA_MM} mm at "
               "latent 8. The 300-epoch comparison of every mesh model on these faces (PCA, CoMA, Neural3DMM, "
               "Deep3DMM, LWAE; two seeds, both CoMA protocols) is `benchmarks/bm_accuracy.py`, with its "
               "table in docs/autoencoders.md.")
    nets = [r for r in rows if r["preset"] != "pca"]
    if not nets:
        return f"Only PCA was fitted (`--network-epochs 0`). {pointer}"
    net = nets[0]
    change = 100 * (net["mean_mm"] / pca8["mean_mm"] - 1)
    measured = (f"At the same latent size ({NETWORK_LATENT}), the mesh autoencoder's mean test error is "
                f"{net['mean_mm']:.3f} mm after {net['epochs']} epochs ({net['train_seconds']:.0f} s), "
                f"{abs(change):.0f} % {'lower' if change < 0 else 'higher'} than PCA's {pca8['mean_mm']:.3f} mm "
                f"(medians {net['median_mm']:.3f} and {pca8['median_mm']:.3f} mm)")
    if change < 0:
        reason = ("the faces' expressions are not linear (a rotating jaw, lids sliding over eyeballs, "
                  "per-person expression styles), and a non-linear decoder captures more of them with 8 numbers")
    else:
        reason = ("this short run has not converged; the networks overtake PCA with longer training "
                  "(see the benchmark named next)")
    return f"{measured}: {reason}. {pointer}"


def _table(rows: list[dict]) -> str:
    lines = ["| method | mean +- std (mm) | median (mm) | test meshes | train s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['mean_mm']:.3f} +- {r['std_mm']:.3f} | {r['median_mm']:.3f} | "
              f"{r['test_meshes']} | {r['train_seconds']:.1f} |" for r in rows]
    return "\n".join(lines)


def _comparison_plot(out, rows: list[dict]) -> None:
    import numpy as np

    from morphable.io import read_json
    from morphable.viz import cumulative_error_plot

    curves = {}
    for r in rows:
        curve = read_json(f"{r['run']}/metrics.json")["splits"]["test"]["curve"]
        curves[r["method"]] = (np.array(curve["thresholds_mm"]), np.array(curve["fraction"]))
    cumulative_error_plot(out / "cumulative_error.png", curves, "PCA baselines and one network, interpolation test set")
