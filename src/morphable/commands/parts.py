"""``morphable parts RUN``: part interpolation and part swaps with a trained locally weighted autoencoder."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_output_folder, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "parts", help="interpolate or swap face parts with a trained LWAE run (`morphable train lwae`)",
        description="Faces are mesh files (.ply/.obj with the run's topology) or integers: indices into the "
                    "run's test split (its dataset must still be at the path in config.json).")
    add_run(parser, "lwae")
    parser.add_argument("--source", help="source face (mesh file or test-set index)")
    parser.add_argument("--target", help="target face (mesh file or test-set index)")
    parser.add_argument("--part", default="all", help="part to interpolate: 0..K-1 or 'all' (default: all)")
    parser.add_argument("--n", type=int, default=9, help="meshes per part, both ends included (default 9)")
    parser.add_argument("--swap", nargs="+", metavar="FACE",
                        help="K faces: the new face takes part k from the k-th face (instead of --source/--target)")
    add_output_folder(parser, "PLY meshes and the figure")
    add_device(parser)
    parser.set_defaults(func=run_parts)


def run_parts(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from morphable.commands.options import output_folder
    from morphable.errors import MorphableError, input_error
    from morphable.experiment import load_run
    from morphable.explicit.parts import interpolate_part, part_interpolation_figure, swap_figure, swap_parts
    from morphable.io import UNIT_TO_MM, atomic_folder, write_ply

    out = output_folder(args.out, args.overwrite)
    model = load_run(args.run, args.device)
    codec = getattr(model, "codec", None)
    if not hasattr(codec, "encode_parts"):
        raise input_error(args.run, f"is a '{model.method}' run; part manipulation needs a model with part codes "
                                    "('morphable train lwae')")
    weights, faces = codec.local_weights, model.faces
    k = weights.shape[1]
    unit = model.config.data.unit or _metrics_unit(model.run)
    to_mm, unit_label = (UNIT_TO_MM[unit], "mm") if unit in UNIT_TO_MM else (1.0, "model units")
    if args.swap:
        if len(args.swap) != k:
            raise MorphableError(f"--swap needs one face per part ({k} faces), got {len(args.swap)}")
        inputs = np.stack([model.mesh(s) for s in args.swap])
        result = swap_parts(codec, inputs, list(range(k)))
        with atomic_folder(out) as folder:
            write_ply(folder / "swap.ply", result, faces)
            swap_figure(folder / "swap.png", inputs, result, faces, weights)
        print(f"wrote {out / 'swap.ply'} and {out / 'swap.png'}")
        return 0
    if args.source is None or args.target is None:
        raise MorphableError("give --source and --target (or --swap FACE ...)")
    if args.n < 2:
        raise MorphableError(f"--n must be at least 2, got {args.n}")
    if args.part == "all":
        parts = list(range(k))
    elif args.part.isdigit() and int(args.part) < k:
        parts = [int(args.part)]
    else:
        raise MorphableError(f"--part must be 0..{k - 1} or 'all', got '{args.part}'")
    source, target = model.mesh(args.source), model.mesh(args.target)
    if np.array_equal(source, target):
        print(f"note: --source {args.source} and --target {args.target} are the same mesh, so no part changes; "
              "pick two different faces", file=sys.stderr)
    rows = [interpolate_part(codec, source, target, p, args.n) for p in parts]
    with atomic_folder(out) as folder:
        for p, row in zip(parts, rows):
            for i, mesh in enumerate(row):
                write_ply(folder / f"part{p}_step{i:02d}.ply", mesh, faces)
        part_interpolation_figure(folder / "part_interpolation.png", rows, parts, faces, weights, model.template,
                                  to_mm, unit_label)
    print(f"wrote {len(parts) * args.n} meshes and {out / 'part_interpolation.png'}")
    return 0


def _metrics_unit(run) -> str | None:
    from morphable.errors import MorphableError

    try:
        return run.read_metrics().get("unit")
    except MorphableError:
        return None
