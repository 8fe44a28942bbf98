"""``morphable transfer RUN --source A --target B``: the expression of head A on the identity of head B."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_output_folder, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("transfer", help="put the expression of one head on another head's identity "
                                                     "(expression runs)")
    add_run(parser, "expression")
    parser.add_argument("--source", required=True,
                        help="the head whose expression is taken: a training sample (index or name) or a posed point "
                             "cloud (.ply/.obj, data units; its codes are fitted)")
    parser.add_argument("--target", required=True, help="the head whose identity is kept, like --source")
    parser.add_argument("--steps", type=int, default=500, help="joint fitting iterations of a cloud (default 500)")
    parser.add_argument("--refine-steps", type=int, default=200,
                        help="expression-only iterations of a cloud after the joint ones (default 200)")
    add_output_folder(parser, "source/target/transfer .ply, transfer.png, codes.safetensors, transfer.json")
    add_resolution(parser, 256)
    add_device(parser)
    parser.set_defaults(func=run_transfer)


def run_transfer(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_folder, require_family
    from morphable.implicit.expression_transfer import transfer_run

    require_family(args.run, "implicit", "transfer", "train an expression preset with --identity RUN")
    out = output_folder(args.out, args.overwrite)
    info = transfer_run(args.run, args.source, args.target, out, args.res, args.steps, args.refine_steps,
                        args.device)
    print(f"expression of {info['source']['head']} on the identity of {info['target']['head']}  ->  {out}")
    return 0
