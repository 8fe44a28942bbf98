"""``morphable report RUN``: (re)write the run's self-contained ``report.html`` (metrics, plots, 3D meshes)."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write a run's interactive report.html (metrics, plots, 3D meshes)")
    add_run(parser, "any family")
    parser.add_argument("--out", help="output file (default RUN/report.html, which is regenerated)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--fit", nargs="+", default=[], metavar="FOLDER",
                        help="folders of 'morphable fit' on this implicit run: show the fitted heads too")
    add_device(parser)
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_file
    from morphable.report import write_report

    out = None if args.out is None else output_file(args.out, args.overwrite, ".html")
    print(f"report  ->  {write_report(args.run, out, fits=args.fit, device=args.device)}")
    return 0
