"""``morphable eval RUN``: re-evaluate a run folder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="re-evaluate a run folder (metrics, plots, coloured meshes)")
    parser.add_argument("run", help="run folder written by `morphable train`")
    parser.add_argument("--data", help="evaluate on this dataset instead of the run's (same topology)")
    parser.add_argument("--extrapolation", "--folds", dest="folds", action="store_true",
                        help="RUN is a folder of fold runs (`train --split extrapolation --fold all`): re-evaluate "
                             "each and write the per-fold table (folds.md, folds.json)")
    parser.add_argument("--compare", nargs="+", metavar="RUN",
                        help="more runs: draw all their cumulative error curves into RUN/plots/compare_cumulative_error.png")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from morphable.experiment import compare_runs, evaluate_run, fold_table

    if args.folds:
        table = fold_table(args.run, reevaluate=True)
        print(open(f"{args.run}/folds.md").read().rstrip())
        return 0 if table else 1
    m = evaluate_run(args.run, data=args.data)
    if args.compare:
        print(f"comparison: {compare_runs([args.run, *args.compare], f'{args.run}/plots/compare_cumulative_error.png')}")
    print(f"{args.run}: test mean {m['mean_mm']:.3f} +- {m['std_mm']:.3f} mm, median {m['median_mm']:.3f} mm "
          f"({m['split_sizes']['test']} test meshes); metrics.json and plots/ updated")
    return 0
