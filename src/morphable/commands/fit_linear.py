"""``morphable fit-linear MODEL --points P --out DIR``: fit a linear face model (ICT-FaceKit, generic .npz,
Basel Face Model .h5; :mod:`morphable.data.linear`) to a depth point cloud, the linear baseline of
``morphable fit``."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_ground_truth


def register(subparsers) -> None:
    linear = subparsers.add_parser("fit-linear", help="fit a linear face model (ICT-FaceKit, generic .npz, BFM .h5) "
                                                      "to a depth point cloud: the linear baseline of 'morphable fit'")
    linear.add_argument("model", help="ICT-FaceKit .npz or FaceXModel folder, generic .npz (docs/linear-models.md) "
                                      "or BFM .h5")
    linear.add_argument("--points", required=True, help="point cloud (.ply/.obj, units of the model)")
    linear.add_argument("--out", required=True, help="output folder (coefficients.safetensors, fit.ply, metrics.json)")
    add_ground_truth(linear)
    linear.add_argument("--vertices", type=int, help="use the model's first N vertices (ICT outer skin: 11248)")
    linear.add_argument("--shape-modes", type=int, help="shape (identity) modes to fit (default: all)")
    linear.add_argument("--expression-modes", type=int, default=0,
                        help="expression modes to fit (default 0: a neutral expression)")
    linear.add_argument("--pose", choices=("none", "rigid", "similarity"), default="none",
                        help="also refine a rigid or similarity pose (default none: the cloud is in the model frame)")
    linear.add_argument("--prior-weight", type=float, default=1.0,
                        help="weight of the N(0, I) coefficient prior (default 1: the model's own; 0: none)")
    linear.add_argument("--unit", choices=("m", "cm", "mm"), help="override the model's unit (BFM .h5: mm)")
    linear.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    add_device(linear)
    linear.set_defaults(func=run_fit_linear)


def run_fit_linear(args: argparse.Namespace) -> int:
    from morphable.commands.fit import print_fit
    from morphable.commands.options import metric_samples
    from morphable.errors import MorphableError
    from morphable.explicit.linear_fit import fit_linear_run

    if args.prior_weight < 0:
        raise MorphableError(f"--prior-weight must be non-negative, got {args.prior_weight}")
    metrics = fit_linear_run(args.model, args.points, args.out, args.gt, args.region_vertices, args.vertices,
                             args.shape_modes, args.expression_modes, args.pose, prior_weight=args.prior_weight,
                             metric_samples=metric_samples(args.metric_samples), unit=args.unit, overwrite=args.overwrite,
                             device=args.device)
    print_fit(metrics, args.out)
    return 0
