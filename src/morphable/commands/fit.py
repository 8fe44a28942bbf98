"""``morphable fit RUN --points P``: fit a code of an implicit run to a depth point cloud."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_ground_truth, add_output_folder, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="fit the codes of an implicit run to a depth point cloud (an "
                                                "expression run: identity and expression, by root finding)")
    add_run(parser, "npm, triplane or expression")
    parser.add_argument("--points", required=True, help="point cloud (.ply/.obj, units of the training data)")
    add_output_folder(parser, "code.safetensors, fit.ply, metrics.json")
    add_ground_truth(parser)
    parser.add_argument("--steps", type=int, help="Adam iterations (default 1000; expression runs: 500 joint)")
    parser.add_argument("--refine-steps", type=int, default=200,
                        help="expression runs: expression-only iterations after the joint ones (default 200)")
    add_resolution(parser, 256)
    add_device(parser)
    parser.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from morphable.commands.options import metric_samples, output_folder, require_family
    from morphable.implicit.fit import fit_run

    require_family(args.run, "implicit", "fit", "fit a linear model, e.g. an exported PCA run, with "
                                                "'morphable fit-linear'")
    samples = metric_samples(args.metric_samples)
    out = output_folder(args.out, args.overwrite)
    if is_expression_run(args.run):
        from morphable.implicit.expression_fit import fit_expression_run

        metrics = fit_expression_run(args.run, args.points, out, args.gt, args.region_vertices,
                                     500 if args.steps is None else args.steps, args.refine_steps, args.res,
                                     args.device, samples)
    else:
        metrics = fit_run(args.run, args.points, out, args.gt, args.region_vertices,
                          1000 if args.steps is None else args.steps, args.res, args.device, samples)
    print_fit(metrics, out)
    return 0


def is_expression_run(run: str) -> bool:
    """Whether a run folder holds an expression model (``config.json`` method ``expression``)."""
    from morphable.runs import Run

    return Run.open(run).config.get("method") == "expression"


def print_fit(metrics: dict, out) -> None:
    """One line: fitting time, energy, and the face/head metrics when a ground truth was given."""
    line = f"fitted in {metrics['fit_seconds']:.1f} s, energy {metrics['energy_first']:.4g} -> {metrics['energy_last']:.4g}"
    if "head" in metrics:
        line += "; " + "; ".join(f"{r}: Chamfer-L1 {metrics[r]['chamfer_l1_mm']:.3f} mm, N.C. "
                                 f"{metrics[r]['normal_consistency']:.3f}, F@1mm {metrics[r]['fscore_1mm']:.3f}"
                                 for r in ("face", "head"))
    print(f"{line}  ->  {out}")
