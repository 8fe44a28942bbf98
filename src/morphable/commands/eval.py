"""``morphable eval RUN``: re-evaluate a run folder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="re-evaluate a run folder (metrics, plots, coloured meshes)")
    parser.add_argument("run", help="run folder written by `morphable train`")
    parser.add_argument("--data", help="evaluate on this dataset instead of the run's (same topology)")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from morphable.experiment import evaluate_run

    m = evaluate_run(args.run, data=args.data)
    print(f"{args.run}: test mean {m['mean_mm']:.3f} +- {m['std_mm']:.3f} mm, median {m['median_mm']:.3f} mm "
          f"({m['split_sizes']['test']} test meshes); metrics.json and plots/ updated")
    return 0
