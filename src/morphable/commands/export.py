"""``morphable export RUN --out MODEL.npz``: a linear run (PCA) as a linear face model file.

The file is the generic ``.npz`` of :class:`~morphable.data.linear.LinearFaceModel` (docs/linear-models.md),
which ``morphable data linear`` samples and ``morphable fit-linear`` fits, like any other 3DMM.
"""

from __future__ import annotations

import argparse

from morphable.commands.options import add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a PCA run as a linear face model (.npz) for data linear "
                                                  "and fit-linear")
    add_run(parser, "pca")
    parser.add_argument("--out", required=True, help="output file (.npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from morphable.errors import input_error
    from morphable.experiment import load_run

    out = Path(args.out)
    if out.suffix != ".npz":
        raise input_error(out, "a linear face model is written as .npz; give a file name ending in .npz")
    if out.exists() and not args.overwrite:
        raise input_error(out, "exists (use --overwrite)")
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
