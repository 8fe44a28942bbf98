"""``morphable export RUN --out MODEL.npz``: a linear run (PCA) as a linear face model file.

The file is the generic ``.npz`` of :class:`~morphable.data.linear.LinearFaceModel` (docs/linear-models.md),
which ``morphable data linear`` samples and ``morphable fit-linear`` fits, like any other 3DMM.
"""

from __future__ import annotations

import argparse

from morphable.commands.options import add_output_file, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a PCA run as a linear face model (.npz) for data linear "
                                                  "and fit-linear")
    add_run(parser, "pca")
    add_output_file(parser, ".npz")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_file
    from morphable.errors import input_error
    from morphable.experiment import load_run

    out = output_file(args.out, args.overwrite, ".npz")
    model = load_run(args.run, "cpu")
    to_linear = getattr(getattr(model, "codec", None), "to_linear_model", None)
    if to_linear is None:
        raise input_error(args.run, f"is a '{model.method}' run, which is not a linear model; export writes "
                                    "linear models (PCA runs)")
    linear = to_linear(model.faces, model.config.data.unit or model.run.read_metrics()["unit"],
                       name=f"{model.method} {model.run.path.name}")
    linear.save_npz(out)
    print(f"{linear.n_shape} shape modes on {linear.n_vertices} vertices ({linear.unit})  ->  {out}")
    return 0
