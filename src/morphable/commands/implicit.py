"""Implicit (SDF) head models: ``morphable extract RUN --code K``, ``morphable fit RUN --points P``,
``morphable sample RUN --n 8``, ``morphable interpolate RUN --a I --b J``, and the ``data sdf`` / ``data depth``
handlers (their parsers live in ``commands/data.py``). ``morphable train npm|triplane`` is the train command."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    extract = subparsers.add_parser("extract", help="extract the mesh of a training code of an implicit run")
    extract.add_argument("run", help="run folder of 'morphable train npm|triplane'")
    extract.add_argument("--code", type=int, default=0, help="index of the training shape's code (default 0)")
    extract.add_argument("--res", type=int, default=256, help="grid resolution per axis (default 256)")
    extract.add_argument("--out", required=True, help="output mesh (.ply or .obj)")
    extract.add_argument("--normalised", action="store_true",
                         help="keep unit-sphere coordinates (default: the training data's units)")
    extract.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    extract.set_defaults(func=run_extract)

    fit = subparsers.add_parser("fit", help="fit an identity code of an implicit run to a depth point cloud")
    fit.add_argument("run", help="run folder of 'morphable train npm|triplane'")
    fit.add_argument("--points", required=True, help="point cloud (.ply/.obj, units of the training data)")
    fit.add_argument("--out", required=True, help="output folder (code.safetensors, fit.ply, metrics.json)")
    _add_ground_truth_arguments(fit)
    fit.add_argument("--steps", type=int, default=1000, help="Adam iterations (default 1000)")
    fit.add_argument("--res", type=int, default=256, help="extraction grid resolution (default 256)")
    fit.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    fit.set_defaults(func=run_fit)

    sample = subparsers.add_parser("sample", help="unconditional samples from a Gaussian fitted to an implicit "
                                                  "run's learned codes")
    sample.add_argument("run", help="run folder of 'morphable train npm|triplane'")
    sample.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    sample.add_argument("--out", required=True, help="output folder (sample_XX.ply, codes.safetensors, "
                                                     "samples.png, samples.json)")
    sample.add_argument("--res", type=int, default=128, help="extraction grid resolution (default 128)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    sample.add_argument("--shrinkage", type=float,
                        help="weight of the isotropic part of the covariance in [0, 1] (default: Ledoit-Wolf)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    sample.set_defaults(func=run_sample)

    interp = subparsers.add_parser("interpolate", help="mesh strip between two training codes of an implicit run")
    interp.add_argument("run", help="run folder of 'morphable train npm|triplane'")
    interp.add_argument("--a", type=int, required=True, help="index of the first training code")
    interp.add_argument("--b", type=int, required=True, help="index of the second training code")
    interp.add_argument("--steps", type=int, default=7, help="meshes along the segment, ends included (default 7)")
    interp.add_argument("--out", required=True, help="output folder (interp_XX.ply, interpolation.png, ...)")
    interp.add_argument("--res", type=int, default=128, help="extraction grid resolution (default 128)")
    interp.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    interp.set_defaults(func=run_interpolate)


def _add_ground_truth_arguments(parser: argparse.ArgumentParser) -> None:
    """``--gt``, ``--region-vertices`` and ``--metric-samples`` of the fitting commands."""
    parser.add_argument("--gt", help="ground-truth mesh: adds face/head Chamfer-L1, normal consistency, F-score@1mm")
    parser.add_argument("--region-vertices", type=int,
                        help="gt vertices 0..N-1 are the face region (ICT-FaceKit: 9409; default: all)")
    parser.add_argument("--metric-samples", type=int, default=1_000_000,
                        help="surface samples per mesh for the metrics (default 1000000; fewer raise their floor)")


def add_data_parsers(sub) -> None:
    """``data sdf`` and ``data depth`` (called from ``commands/data.py``)."""
    sdf = sub.add_parser("sdf", help="pre-compute SDF training samples (surface, near-surface, ball) from meshes")
    sdf.add_argument("meshes", help="folder of .obj/.ply meshes (or one mesh)")
    sdf.add_argument("--out", required=True, help="dataset folder to create")
    sdf.add_argument("--unit", choices=("m", "cm", "mm"), default="m", help="unit of the meshes (default m)")
    sdf.add_argument("--region-vertices", type=int,
                     help="vertices 0..N-1 are the face region (ICT-FaceKit: 9409; 11248 = the whole outer skin); "
                          "default: all vertices")
    sdf.add_argument("--n-surface", type=int, default=250_000, help="surface samples per mesh (default 250000)")
    sdf.add_argument("--n-near", type=int, default=250_000, help="near-surface samples per level (default 250000)")
    sdf.add_argument("--n-ball", type=int, default=100_000, help="unit-ball samples per mesh (default 100000)")
    sdf.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sdf.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    sdf.set_defaults(func=run_data_sdf)

    depth = sub.add_parser("depth", help="single-view depth observation of a mesh as a point cloud (.ply)")
    depth.add_argument("mesh", help="mesh to observe")
    depth.add_argument("--out", required=True, help="output point cloud (.ply)")
    depth.add_argument("--points", type=int, default=2500, help="number of points (default 2500)")
    depth.add_argument("--yaw", type=float, default=0.0, help="camera yaw about the y axis in degrees (default 0)")
    depth.add_argument("--seed", type=int, default=0, help="seed of the pixel draw (default 0)")
    depth.set_defaults(func=run_data_depth)


def run_extract(args: argparse.Namespace) -> int:
    from morphable.errors import MorphableError
    from morphable.implicit.experiment import extract_run_mesh

    if args.res < 8:
        raise MorphableError(f"--res must be at least 8, got {args.res}")
    info = extract_run_mesh(args.run, args.code, args.out, resolution=args.res, normalised=args.normalised,
                            device=args.device)
    print(f"code {args.code} ({info['shape']}): {info['vertices']} vertices, {info['faces']} faces, "
          f"{100 * info['evaluated_fraction']:.1f} % of the grid evaluated  ->  {args.out}")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from morphable.errors import MorphableError
    from morphable.implicit.fit import fit_run

    if args.steps < 1 or args.res < 8:
        raise MorphableError("--steps must be at least 1 and --res at least 8")
    if args.metric_samples < 1000:
        raise MorphableError("--metric-samples must be at least 1000")
    metrics = fit_run(args.run, args.points, args.out, args.gt, args.region_vertices, args.steps, args.res,
                      args.device, args.metric_samples)
    _print_fit(metrics, args.out)
    return 0


def _print_fit(metrics: dict, out: str) -> None:
    """One line: fitting time, energy, and the face/head metrics when a ground truth was given."""
    line = f"fitted in {metrics['fit_seconds']:.1f} s, energy {metrics['energy_first']:.4g} -> {metrics['energy_last']:.4g}"
    if "head" in metrics:
        line += "; " + "; ".join(f"{r}: Chamfer-L1 {metrics[r]['chamfer_l1_mm']:.3f} mm, N.C. "
                                 f"{metrics[r]['normal_consistency']:.3f}, F@1mm {metrics[r]['fscore_1mm']:.3f}"
                                 for r in ("face", "head"))
    print(f"{line}  ->  {out}")


def run_sample(args: argparse.Namespace) -> int:
    from morphable.errors import MorphableError
    from morphable.implicit.latent import sample_run

    if args.shrinkage is not None and not 0.0 <= args.shrinkage <= 1.0:
        raise MorphableError(f"--shrinkage must be in [0, 1], got {args.shrinkage}")
    info = sample_run(args.run, args.out, n=args.n, resolution=args.res, seed=args.seed, device=args.device,
                      shrinkage=args.shrinkage)
    empty = sum(r["faces"] == 0 for r in info["samples"])
    print(f"{info['n']} samples of {info['n_training_codes']} codes (shrinkage {info['shrinkage']:.3f}), "
          f"{info['seconds_per_sample']:.2f} s per mesh at {info['resolution']}^3"
          f"{f', {empty} without a surface' if empty else ''}  ->  {args.out}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    from morphable.implicit.latent import interpolate_run

    info = interpolate_run(args.run, args.a, args.b, args.out, steps=args.steps, resolution=args.res,
                           device=args.device)
    print(f"{info['steps']} meshes from {info['names'][0]} to {info['names'][1]} in "
          f"{info['seconds_extraction']:.1f} s  ->  {args.out}")
    return 0


def run_data_sdf(args: argparse.Namespace) -> int:
    from morphable.data.sdf import SdfDataset
    from morphable.errors import MorphableError
    from morphable.implicit.experiment import make_sdf_dataset

    for name in ("n_surface", "n_near", "n_ball"):
        if getattr(args, name) < 1:
            raise MorphableError(f"--{name.replace('_', '-')} must be at least 1")
    out = make_sdf_dataset(args.meshes, args.out, args.unit, args.region_vertices, args.n_surface, args.n_near,
                           args.n_ball, args.seed, args.overwrite)
    print(f"{SdfDataset(out).describe()}  ->  {out}")
    return 0


def run_data_depth(args: argparse.Namespace) -> int:
    from morphable.errors import MorphableError
    from morphable.implicit.experiment import depth_observation

    if args.points < 1:
        raise MorphableError(f"--points must be at least 1, got {args.points}")
    info = depth_observation(args.mesh, args.out, n_points=args.points, yaw_deg=args.yaw, seed=args.seed)
    print(f"{info['points']} points seen from {', '.join(f'{e:.3g}' for e in info['eye'])}  ->  {args.out}")
    return 0


def run_train_implicit(args: argparse.Namespace, config) -> int:
    """``morphable train npm|triplane`` (called from ``commands/train.py`` for implicit presets)."""
    from morphable.implicit.experiment import train_implicit

    metrics = train_implicit(config, args.out, overwrite=args.overwrite, resume=args.resume,
                             progress=not args.quiet)
    if not metrics:  # a non-zero rank under torchrun
        return 0
    final = ", ".join(f"{k} {v:.4g}" for k, v in metrics["final"].items())
    print(f"{args.preset}: {metrics['n_shapes']} shapes, final {final} (best epoch {metrics['best_epoch']})"
          f"  ->  {args.out}")
    return 0
