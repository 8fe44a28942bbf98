"""``morphable extract RUN --code K``: the mesh of one training code of an implicit run."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_output_file, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("extract", help="extract the mesh of a training code of an implicit run")
    add_run(parser, "npm, triplane")
    parser.add_argument("--code", type=int, default=0, help="index of the training shape's code (default 0)")
    add_resolution(parser, 256)
    add_output_file(parser, "mesh, .ply or .obj")
    parser.add_argument("--normalised", action="store_true",
                        help="keep unit-sphere coordinates (default: the training data's units)")
    add_device(parser)
    parser.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:

    from morphable.commands.options import output_file, require_family
    from morphable.implicit.experiment import extract_run_mesh

    require_family(args.run, "implicit", "extract", "mesh models write meshes with 'sample' and 'interpolate'")
    output_file(args.out, args.overwrite)
    info = extract_run_mesh(args.run, args.code, args.out, resolution=args.res, normalised=args.normalised,
                            device=args.device)
    print(f"code {args.code} ({info['shape']}): {info['vertices']} vertices, {info['faces']} faces, "
          f"{100 * info['evaluated_fraction']:.1f} % of the grid evaluated  ->  {args.out}")
    return 0
