"""``morphable eval RUN``: re-evaluate a run folder of any family.

Mesh models score the run's own test split (or ``--data``, another dataset of the same topology) with
per-vertex errors in mm; implicit models report their losses and, with ``--gt MESH ...``, surface metrics of
the training codes named like the ground-truth meshes.
"""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_ground_truth, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="re-evaluate a run folder (metrics, plots, meshes, report)")
    add_run(parser, "any family")
    parser.add_argument("--data", help="evaluate on this dataset instead of the run's (same format and topology)")
    add_ground_truth(parser, many=True)
    add_resolution(parser, None)
    add_device(parser)
    parser.add_argument("--folds", action="store_true",
                        help="RUN is a folder of fold runs (`train --split extrapolation|identity --fold all`): "
                             "re-evaluate each and write the per-fold table (folds.md, folds.json)")
    parser.add_argument("--compare", nargs="+", metavar="RUN",
                        help="more mesh-model runs: draw all their cumulative error curves into "
                             "RUN/plots/compare_cumulative_error.png")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from morphable.commands.options import metric_samples, refuse_implicit_options
    from morphable.errors import MorphableError
    from morphable.experiment import evaluate, family_hooks, open_run

    if args.folds:
        from morphable.explicit.experiment import fold_table

        if args.data or args.gt or args.compare:
            raise MorphableError("--folds re-evaluates each fold run on its own data; it takes no --data, --gt "
                                 "or --compare")
        fold_table(args.run, reevaluate=True)
        print((Path(args.run) / "folds.md").read_text().rstrip())
        return 0
    _, config = open_run(args.run)
    options = {"device": args.device}
    if config.family == "implicit":
        if args.data is not None:
            raise MorphableError("--data applies to mesh-model runs; score an implicit run with --gt MESH ...")
        options.update(gt=args.gt, region_vertices=args.region_vertices, resolution=args.res or 256,
                       metric_samples=metric_samples(args.metric_samples))
    refuse_implicit_options(args, config, ("gt", "region_vertices", "res", "metric_samples"))
    if args.compare and config.family != "explicit":
        raise MorphableError("--compare draws per-vertex error curves of mesh-model runs")
    metrics = evaluate(args.run, data=args.data, **options)
    if args.compare:
        from morphable.explicit.experiment import compare_runs

        print(f"comparison: {compare_runs([args.run, *args.compare], Path(args.run) / 'plots' / 'compare_cumulative_error.png')}")
    print(f"{args.run}: {family_hooks(config).summary(metrics)}; metrics.json, report.md and plots/ updated")
    return 0
